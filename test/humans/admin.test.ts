import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readDecisions } from '../../src/audit/decision-reads.ts';
import { replay } from '../../src/audit/replay.ts';
import { PostgresSource } from '../../src/audit/source.ts';
import { humanTokenVerifier, readJwksFile } from '../../src/humans/human-tokens.ts';
import type { RegistryState } from '../../src/registry/registry-view.ts';
import { VerifiedTokenCache } from '../../src/tokens/token-cache.ts';
import { PEOPLE_AUDIENCE, PEOPLE_ISSUER, peopleJwksFile, peoplePins, personToken } from '../support/people.ts';
import { ADMIN_TOKEN, PEP_TOKEN, agentBody, agentPrivateKey, seedPrincipals, startTestNode, type TestNode } from '../support/node.ts';

// People at the admin API: tokens from the organisation's identity provider (here a local key
// pair, as the embedded demo uses), each call decided by the example admin policies in cedar/
// and recorded; the operator token still works, as break-glass.

const ISSUER = PEOPLE_ISSUER;
const AUDIENCE = PEOPLE_AUDIENCE;
const humanToken = personToken;
const peopleJwks = peopleJwksFile;

let node: TestNode;
let otherKey: CryptoKey;

/** An admin call with a person's token. */
const as = async (human: string, method: string, url: string, body?: unknown) => node.api(method, url, body, {}, await humanToken(human));

const adminRecords = async () => (await readDecisions(node.connection.db, 0, 100_000)).filter((d) => d.layer === 'admin');
const lastEvent = async () => (await node.store.readAll(0, 1_000_000)).at(-1)!;

beforeAll(async () => {
  otherKey = (await generateKeyPair('ES256')).privateKey;
  node = await startTestNode({ kind: 'pglite', dataDir: null }, { humanPins: peoplePins });
  await seedPrincipals(node);
  for (const [url, body] of [
    ['/v1/groups', { id: 'security', parents: [] }],
    ['/v1/humans', { id: 'sam', email: 'sam@example.com', groups: ['security'] }],
    ['/v1/humans', { id: 'eve', email: 'eve@example.com', groups: [] }],
  ] as const) expect((await node.api('POST', url, body)).status).toBe(201);
  for (const id of ['alices-bot', 'alices-other-bot']) {
    expect((await node.api('POST', '/v1/agents', agentBody({ id }))).status).toBe(201);
    expect((await node.api('POST', `/v1/agents/${id}/authorize`, { grants: [] })).status).toBe(200);
  }
});
afterAll(async () => node?.close());

describe('a person\'s token at the admin API', () => {
  it('is refused with the reason and its code for every way it can be wrong; the call does not happen', async () => {
    const now = Math.floor(Date.now() / 1000);
    const cases: [string, string][] = [
      [await humanToken('alice', {}, { key: otherKey }), 'TOKEN_BAD_SIGNATURE'],
      [await humanToken('alice', {}, { kid: 'someone-else' }), 'TOKEN_UNKNOWN_KEY'],
      [await humanToken('alice', { exp: now - 120, iat: now - 400 }), 'TOKEN_EXPIRED'],
      [await humanToken('alice', { iss: 'https://elsewhere.example' }), 'TOKEN_WRONG_ISSUER'],
      [await humanToken('alice', { aud: 'leash' }), 'TOKEN_WRONG_AUDIENCE'],
      [await humanToken('alice', { iat: now + 600, exp: now + 900 }), 'TOKEN_NOT_YET_VALID'],
      [await humanToken('alice', { iat: now, exp: now + 2 * 86_400 }), 'TOKEN_LIFETIME_TOO_LONG'],
      [await humanToken('alice', { iat: undefined }), 'TOKEN_MISSING_IAT'],
      [await humanToken('alice', { exp: undefined }), 'TOKEN_MISSING_EXP'],
      [await humanToken('nobody'), 'TOKEN_UNKNOWN_HUMAN'],
      [await humanToken('alice', { act: { sub: 'sam' } }), 'TOKEN_MALFORMED'],
      [await humanToken('alice', {}, { alg: 'ES384', key: (await generateKeyPair('ES384')).privateKey }), 'TOKEN_ALG_NOT_ALLOWED'],
    ];
    const before = await node.eventCount();
    for (const [token, code] of cases) {
      const res = await node.api('POST', '/v1/agents/alices-bot/suspend', { reason: 'x' }, {}, token);
      expect(res.status, code).toBe(401);
      expect(res.body).toMatchObject({ code: 'UNAUTHENTICATED', tokenCode: code });
      expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
    }
    expect(await node.eventCount()).toBe(before);
    // Not a person's token at all, or one of them too long to read: plainly not accepted.
    for (const token of ['not-a-jwt', 'a.b', `${'a'.repeat(5_000)}.b.c`]) expect((await node.api('GET', '/v1/agents', undefined, {}, token)).status).toBe(401);
    // A person's token is for admin calls, not for the decision API.
    const evaluation = await node.api('POST', '/access/v1/evaluation', { subject: { type: 'human', id: 'alice' }, action: { name: 'read' }, resource: { type: 'Document', id: 'd' } }, {}, await humanToken('alice'));
    expect(evaluation.status).toBe(401);
  });
});

describe('admin calls decided by the admin policies', () => {
  it('the security team revokes; the event names the human, the decision log holds the call and the policy that allowed it', async () => {
    const before = (await adminRecords()).length;
    const res = await as('sam', 'POST', '/v1/agents/alices-other-bot/revoke', { mode: 'immediate', reason: 'leaked key' });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect((await lastEvent()).metadata).toEqual({ actor: 'human:sam' });
    expect((await node.api('GET', '/v1/agents/alices-other-bot/events')).body.events.at(-1)).toMatchObject({ type: 'AgentRevoked', actor: 'human:sam' });
    const records = await adminRecords();
    expect(records.length).toBe(before + 1);
    expect(records.at(-1)).toMatchObject({
      decision: true, layer: 'admin', code: null, reasons: ['security-team-contains-and-audits'],
      request: { kind: 'admin', subject: { type: 'Human', id: 'sam' }, action: { name: 'admin:revoke' }, resource: { type: 'Agent', id: 'alices-other-bot' } },
    });
  });

  it('an owner may suspend their own agent, but not revoke it; a stranger may do neither: 403 FORBIDDEN naming the layer', async () => {
    const revoke = await as('alice', 'POST', '/v1/agents/alices-bot/revoke', { mode: 'immediate', reason: 'mine' });
    expect(revoke.status).toBe(403);
    expect(revoke.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(revoke.body).toMatchObject({ code: 'FORBIDDEN', layer: 'admin', reasons: [], decisionCode: 'ADMIN_DENIED' });
    expect((await adminRecords()).at(-1)).toMatchObject({ decision: false, code: 'ADMIN_DENIED', request: { subject: { id: 'alice' }, action: { name: 'admin:revoke' } } });

    const before = await node.eventCount();
    expect((await as('eve', 'POST', '/v1/agents/alices-bot/suspend', { reason: 'not mine' })).status).toBe(403);
    expect(await node.eventCount()).toBe(before);

    const suspend = await as('alice', 'POST', '/v1/agents/alices-bot/suspend', { reason: 'odd traffic' });
    expect(suspend.status, JSON.stringify(suspend.body)).toBe(200);
    expect(suspend.body).toMatchObject({ status: 'suspended', nodesConfirmed: 1 });
    expect((await lastEvent()).metadata).toEqual({ actor: 'human:alice' });
    expect((await adminRecords()).at(-1)).toMatchObject({ decision: true, reasons: ['owners-suspend-their-own-agents'] });
  });

  it('nobody but the security team publishes policies: the forbid is named', async () => {
    const current = (await node.api('GET', '/v1/policy-set')).body;
    const source = { schema: current.schema, policies: current.policies };
    const refused = await as('alice', 'PUT', '/v1/policy-set', source);
    expect(refused.status).toBe(403);
    expect(refused.body).toMatchObject({ code: 'FORBIDDEN', layer: 'admin', reasons: ['only-the-security-team-publishes-policies'] });
    const published = await as('sam', 'PUT', '/v1/policy-set', source);
    expect(published.status, JSON.stringify(published.body)).toBe(200);
    expect((await lastEvent()).metadata).toEqual({ actor: 'human:sam' });
  });

  it('a person sees what is their own without any policy, and nothing else', async () => {
    expect((await as('alice', 'GET', '/v1/agents/alices-bot')).status).toBe(200);
    expect((await as('alice', 'GET', '/v1/humans/alice')).status).toBe(200);
    expect((await adminRecords()).at(-1)).toMatchObject({ decision: true, reasons: ['own:self'] });
    expect((await as('eve', 'GET', '/v1/agents/alices-bot')).status).toBe(403);
    expect((await as('eve', 'GET', '/v1/humans/alice')).status).toBe(403);
    expect((await as('alice', 'GET', '/v1/agents')).status).toBe(403);
    expect((await as('sam', 'GET', '/v1/agents')).status).toBe(200);
    // Registering is not in the example policies: nobody may, with a person's token.
    expect((await as('sam', 'POST', '/v1/agents', agentBody({ id: 'sams-bot', owner: 'sam' }))).status).toBe(403);
  });

  it('the operator token still works for everything, and its events say it was the break-glass way in', async () => {
    const before = (await adminRecords()).length;
    const res = await node.api('POST', '/v1/agents/alices-bot/retire', { reason: 'done' });
    expect(res.status).toBe(200);
    expect((await lastEvent()).metadata).toEqual({ actor: 'operator', breakGlass: true });
    expect((await node.api('GET', '/v1/agents/alices-bot/events')).body.events.at(-1)).toMatchObject({ type: 'AgentRetired', actor: 'operator', breakGlass: true });
    expect((await adminRecords()).length).toBe(before);
  });

  it('replay leaves the admin records out and finds every decision the same', async () => {
    await node.api('POST', '/access/v1/evaluation', { subject: { type: 'agent', id: 'alices-bot', properties: { token: 'x' } }, action: { name: 'read' }, resource: { type: 'Document', id: 'd' } }, {}, PEP_TOKEN);
    const report = await replay(new PostgresSource(node.connection.db), {});
    expect(report.differing).toBe(0);
    const all = await readDecisions(node.connection.db, 0, 100_000);
    expect(all.some((d) => d.layer === 'admin')).toBe(true);
    expect(report.decisions).toBe(all.filter((d) => d.layer !== 'admin').length);
  });
});

it('the operator token is the only one for a node without human sign-in', async () => {
  const plain = await startTestNode({ kind: 'pglite', dataDir: null });
  try {
    expect((await plain.api('GET', '/v1/agents', undefined, {}, await humanToken('alice'))).status).toBe(401);
    expect((await plain.api('GET', '/v1/agents', undefined, {}, ADMIN_TOKEN)).status).toBe(200);
  } finally {
    await plain.close();
  }
});

describe('LEASH_HUMAN_JWKS_FILE', () => {
  it('holds a JWKS or one public JWK; a private key, an empty set or no JSON stops the node at start', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'leash-jwks-'));
    const pair = await generateKeyPair('ES256', { extractable: true });
    const privateJwk = JSON.stringify(await exportJWK(pair.privateKey));
    const file = (name: string, body: string) => {
      writeFileSync(join(dir, name), body);
      return join(dir, name);
    };
    const pub = await exportJWK(pair.publicKey);
    expect(readJwksFile(file('one.json', JSON.stringify(pub))).keys).toHaveLength(1);
    expect(readJwksFile(file('set.json', JSON.stringify({ keys: [pub, pub] }))).keys).toHaveLength(2);
    expect(() => readJwksFile(file('private.json', privateJwk))).toThrow(/not a set of public JWKs/);
    expect(() => readJwksFile(file('empty.json', '{"keys":[]}'))).toThrow(/not a set of public JWKs/);
    expect(() => readJwksFile(file('text.json', 'hello'))).toThrow(/not JSON/);
    expect(() => readJwksFile(join(dir, 'missing.json'))).toThrow(/no such file/);
    const pins = { issuer: ISSUER, audience: AUDIENCE, algorithms: ['ES256'], jwks: { file: join(dir, 'private.json') } };
    await expect(startTestNode({ kind: 'pglite', dataDir: null }, { humanPins: pins })).rejects.toThrow(/not a set of public JWKs/);
  });
});

// An attacker's view of the same node: each case fails if the hole it names is there.
describe('attacks on people at the admin API', () => {
  const folder = (id: string) => ({ type: 'Folder', id });
  const current = async () => {
    const { schema, policies } = (await node.api('GET', '/v1/policy-set')).body;
    return { schema: schema as string, policies: policies as string };
  };
  /** Publishes the policies in force plus `extra` (as the operator), runs `body`, then puts the old ones back. */
  async function withPolicies(extra: string, body: () => Promise<void>): Promise<void> {
    const before = await current();
    const published = await node.api('PUT', '/v1/policy-set', { schema: before.schema, policies: `${before.policies}\n${extra}` });
    expect(published.status, JSON.stringify(published.body)).toBe(200);
    try {
      await body();
    } finally {
      expect((await node.api('PUT', '/v1/policy-set', before)).status).toBe(200);
    }
  }
  /** An allowed agent decision: an active agent of alice's in finance, reading an invoice. */
  async function agentDecision(agent: string) {
    const iat = Math.floor(Date.now() / 1000) + 2; // after the authorization's second
    const token = await new SignJWT({ iss: 'https://idp.example', aud: 'leash', sub: agent, iat, exp: iat + 120, jti: crypto.randomUUID(), authorization_details: [{ type: 'leash:cedar', actions: ['read'], resourceIn: folder('invoices') }] })
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' }).sign(agentPrivateKey);
    const res = await node.api('POST', '/access/v1/evaluation', {
      subject: { type: 'agent', id: agent, properties: { token } }, action: { name: 'read' }, resource: { type: 'Document', id: 'd1' },
      context: { entities: [{ uid: folder('invoices'), attrs: {}, parents: [] }, { uid: { type: 'Document', id: 'd1' }, attrs: {}, parents: [folder('invoices')] }] },
    }, {}, PEP_TOKEN);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    return res.body as { decision: boolean; context: { reasons: string[] } };
  }

  it('a forbid in the admin layer beats the own-rule: a locked-out person cannot read even their own agents', async () => {
    await withPolicies('@id("lock-out-alice")\n@layer("admin")\nforbid (principal == Human::"alice", action, resource);', async () => {
      for (const url of ['/v1/agents/alices-bot', '/v1/agents/alices-bot/events', '/v1/humans/alice']) {
        const res = await as('alice', 'GET', url);
        expect(res.status, url).toBe(403);
        expect(res.body).toMatchObject({ code: 'FORBIDDEN', layer: 'admin', reasons: ['lock-out-alice'], decisionCode: 'ADMIN_DENIED' });
        expect((await adminRecords()).at(-1)).toMatchObject({ decision: false, reasons: ['lock-out-alice'], request: { action: { name: 'admin:read' } } });
      }
    });
    // Without the forbid, her own is hers again.
    expect((await as('alice', 'GET', '/v1/humans/alice')).status).toBe(200);
    expect((await adminRecords()).at(-1)).toMatchObject({ decision: true, reasons: ['own:self'] });
  });

  it('the admin layer and the decision layers do not reach each other; an admin template is refused', async () => {
    expect((await node.api('POST', '/v1/agents', agentBody({ id: 'iso-bot', groups: ['finance'], ceiling: { template: 'ceiling-folder', values: { '?resource': folder('invoices') } } }))).status).toBe(201);
    expect((await node.api('POST', '/v1/agents/iso-bot/authorize', { grants: [] })).status).toBe(200);
    const plain = await agentDecision('iso-bot');
    expect(plain.decision, JSON.stringify(plain)).toBe(true);
    // An admin forbid with no scope at all changes no agent decision, and reads as the admin refusal it is.
    await withPolicies('@id("admin-forbids-everything")\n@layer("admin")\nforbid (principal, action, resource);', async () => {
      const decided = await agentDecision('iso-bot');
      expect(decided.decision).toBe(true);
      expect(JSON.stringify(decided)).not.toContain('admin-forbids-everything');
      expect((await as('sam', 'GET', '/v1/agents')).body).toMatchObject({ code: 'FORBIDDEN', reasons: ['admin-forbids-everything'] });
    });
    // An ordinary permit of everything lets nobody make an admin call they could not make before.
    await withPolicies('@id("ordinary-permits-everything")\npermit (principal, action, resource);', async () => {
      for (const [method, url] of [['GET', '/v1/agents'], ['GET', '/v1/humans/sam'], ['POST', '/v1/agents/iso-bot/revoke'], ['PUT', '/v1/policy-set']] as const) {
        const body = method === 'GET' ? undefined : url.endsWith('revoke') ? { mode: 'immediate', reason: 'x' } : await current();
        const res = await as('eve', method, url, body);
        expect(res.status, url).toBe(403);
        expect(JSON.stringify(res.body)).not.toContain('ordinary-permits-everything');
      }
    });
    const { schema, policies } = await current();
    const template = await node.api('PUT', '/v1/policy-set', { schema, policies: `${policies}\n@id("admin-template")\n@layer("admin")\npermit (principal == ?principal, action, resource);` });
    expect(template.status).toBe(422);
    expect(template.body).toMatchObject({ code: 'POLICY_INVALID' });
  });

  it('register: the owner (the resource) is read from the validated body; a bad one is a 400 before any decision; self-service stays self', async () => {
    const before = (await adminRecords()).length;
    const { owner: _owner, ...noOwner } = agentBody({ id: 'a-bot' });
    for (const body of [noOwner, agentBody({ id: 'a-bot', owner: 7 }), agentBody({ id: 'a-bot', owner: ['alice'] }), agentBody({ id: 'a-bot', owner: 'alice', extra: 1 })]) {
      expect((await as('alice', 'POST', '/v1/agents', body)).status).toBe(400);
    }
    expect((await adminRecords()).length).toBe(before);
    // Without a policy nobody registers, not even for themselves (register is not a read).
    expect((await as('alice', 'POST', '/v1/agents', agentBody({ id: 'a-bot', owner: 'alice', groups: ['finance'] }))).body).toMatchObject({ code: 'FORBIDDEN', decisionCode: 'ADMIN_DENIED' });
    await withPolicies('@id("register-for-yourself")\n@layer("admin")\npermit (principal, action == Action::"admin:register", resource) when { resource == principal };', async () => {
      const forEve = await as('alice', 'POST', '/v1/agents', agentBody({ id: 'a-bot', owner: 'eve', groups: ['finance'] }));
      expect(forEve.status).toBe(403);
      expect((await adminRecords()).at(-1)).toMatchObject({ decision: false, request: { resource: { type: 'Human', id: 'eve' } } });
      const forHerself = await as('alice', 'POST', '/v1/agents', agentBody({ id: 'a-bot', owner: 'alice', groups: ['finance'] }));
      expect(forHerself.status, JSON.stringify(forHerself.body)).toBe(201);
      expect((await lastEvent()).metadata).toMatchObject({ actor: 'human:alice' });
    });
  });

  it('the route Cedar is asked about is the route that runs: escapes, case, slashes, HEAD, OPTIONS, unknown paths', async () => {
    // A percent-escape names the same agent to the decision and to the call.
    const escaped = await as('eve', 'POST', '/v1/agents/alices%2Dbot/suspend', { reason: 'x' });
    expect(escaped.status).toBe(403);
    expect((await adminRecords()).at(-1)).toMatchObject({ request: { resource: { type: 'Agent', id: 'alices-bot' }, context: { route: '/v1/agents/:id/suspend' } } });
    expect((await as('alice', 'GET', '/v1/agents/alices%2dbot')).body).toMatchObject({ id: 'alices-bot' });
    expect((await as('eve', 'GET', '/v1/agents/alices%2Dbot')).status).toBe(403);
    // Ids that are no ids are refused before any decision.
    const before = (await adminRecords()).length;
    for (const url of ['/v1/agents/..%2Fhumans%2Feve', '/v1/humans/alice%00', '/v1/humans/alice%2F..%2Feve']) expect((await as('alice', 'GET', url)).status, url).toBe(400);
    expect((await adminRecords()).length).toBe(before);
    // What the router does not match takes the operator token: a person learns nothing there.
    for (const [method, url] of [['GET', '/v1/agents/alices-bot/'], ['GET', '/V1/agents/alices-bot'], ['GET', '//v1/agents/alices-bot'], ['GET', '/v1/nothing-here'], ['OPTIONS', '/v1/agents'], ['DELETE', '/v1/agents/alices-bot'], ['GET', '/v1/agents/%2e%2e/alices-bot']] as const) {
      const res = await as('sam', method, url);
      expect(res.status, `${method} ${url}`).toBe(401);
      expect(JSON.stringify(res.body)).not.toMatch(/alices-bot|agent/i);
    }
    expect((await adminRecords()).length).toBe(before);
    // HEAD is the GET it stands for, decided the same.
    expect((await as('eve', 'HEAD', '/v1/agents/alices-bot')).status).toBe(403);
    expect((await adminRecords()).at(-1)).toMatchObject({ decision: false, request: { action: { name: 'admin:read' }, context: { method: 'HEAD' } } });
    expect((await as('alice', 'HEAD', '/v1/agents/alices-bot')).status).toBe(200);
    expect((await as('alice', 'HEAD', '/v1/agents')).status).toBe(403);
    // Lists and the kill switch are on Leash's collections whatever the query or scope names.
    expect((await as('alice', 'GET', '/v1/agents?owner=alice')).status).toBe(403);
    expect((await as('alice', 'POST', '/v1/kill-switch', { scope: { owner: 'alice' }, mode: 'immediate', reason: 'x' })).body).toMatchObject({ code: 'FORBIDDEN' });
    expect((await adminRecords()).at(-1)).toMatchObject({ request: { action: { name: 'admin:kill-switch' }, resource: { type: 'Leash', id: 'agents' } } });
  });

  it('a token is a person\'s only if the IdP signed it for a registered human; other tokens and other places refuse it', async () => {
    const signedBy = (key: CryptoKey | Parameters<SignJWT['sign']>[0], kid: string, sub = 'sam') => humanToken(sub, {}, { key: key as CryptoKey, kid });
    const now = Math.floor(Date.now() / 1000);
    const unsigned = `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url')}.${Buffer.from(JSON.stringify({ iss: ISSUER, aud: AUDIENCE, sub: 'sam', iat: now, exp: now + 60 })).toString('base64url')}.`;
    const leashSigned = await node.signer.sign({ iss: ISSUER, aud: AUDIENCE, sub: 'sam', iat: now, exp: now + 60, jti: crypto.randomUUID() });
    const cases: [string, string, string][] = [
      ['sub an agent id', await humanToken('alices-bot'), 'TOKEN_UNKNOWN_HUMAN'],
      ['sub a group id', await humanToken('security'), 'TOKEN_UNKNOWN_HUMAN'],
      ['sub empty', await humanToken(''), 'TOKEN_UNKNOWN_HUMAN'],
      ['sub with NUL', await humanToken('sam\u0000'), 'TOKEN_UNKNOWN_HUMAN'],
      ['alg none', unsigned, ''],
      ['signed by an agent\'s key', await signedBy(agentPrivateKey, 'k1'), ''],
      ['signed by an agent\'s key, the IdP\'s kid', await signedBy(agentPrivateKey, 'people-1'), 'TOKEN_BAD_SIGNATURE'],
      ['signed by a Leash node key', leashSigned!, ''],
    ];
    for (const sub of [7, null, { id: 'sam' }, ['sam']]) cases.push([`sub ${JSON.stringify(sub)}`, await humanToken('x', { sub: sub as unknown as string }), '']);
    for (const [name, token, code] of cases) {
      const res = await node.api('GET', '/v1/agents', undefined, {}, token);
      expect(res.status, name).toBe(401);
      if (code) expect(res.body.tokenCode, name).toBe(code);
    }
    const sam = await humanToken('sam');
    const raw = (authorization: string, url = '/v1/agents') => node.app.inject({ method: 'GET', url, headers: { authorization } });
    // The scheme is case-insensitive (RFC 7235); the token is not, and nothing else is a bearer token.
    expect((await raw(`bEaReR  ${ADMIN_TOKEN} `)).statusCode).toBe(200);
    expect((await raw(`bearer ${sam}`)).statusCode).toBe(200);
    for (const header of [`Bearer ${ADMIN_TOKEN.toUpperCase()}`, `Bearer ${PEP_TOKEN}`, `Bearer\t${ADMIN_TOKEN}`, `Basic ${ADMIN_TOKEN}`, `Bearer ${ADMIN_TOKEN}x`, `Bearer ${ADMIN_TOKEN} ${ADMIN_TOKEN}`, `Bearer ${'a'.repeat(40_000)}.b.c`, `Bearer ${sam}${' '.repeat(20_000)}x`]) {
      expect((await raw(header)).statusCode, header.slice(0, 40)).toBe(401);
    }
    // A person's token is not a decider's: not at the decision API, not at introspection.
    const introspect = await node.app.inject({ method: 'POST', url: '/oauth/introspect', headers: { authorization: `Bearer ${sam}`, 'content-type': 'application/x-www-form-urlencoded' }, payload: `token=${sam}` });
    expect(introspect.statusCode).toBe(401);
    expect((await node.api('POST', '/access/v1/evaluations', { evaluations: [] }, {}, sam)).status).toBe(401);
    // The record of a person's call never holds their token.
    expect((await node.api('GET', '/v1/humans/sam', undefined, {}, sam)).status).toBe(200);
    const records = JSON.stringify(await adminRecords());
    expect(records).not.toContain(sam.split('.')[2]);
    expect(records).not.toContain(sam.split('.')[1]);
  });

  it('a remembered token is still refused once it expires, and the cache of verified tokens is bounded', async () => {
    const verify = humanTokenVerifier({ issuer: ISSUER, audience: AUDIENCE, algorithms: ['ES256'], jwks: { file: peopleJwks } });
    const registry = { humans: new Map([['alice', {}]]) } as unknown as RegistryState;
    const now = Math.floor(Date.now() / 1000);
    const token = await humanToken('alice', { iat: now, exp: now + 60 });
    expect(await verify(token, registry, new Date(now * 1000))).toMatchObject({ ok: true, human: 'alice' });
    expect(await verify(token, registry, new Date((now + 60 + 29) * 1000))).toMatchObject({ ok: true }); // within the leeway
    expect(await verify(token, registry, new Date((now + 60 + 31) * 1000))).toMatchObject({ ok: false, code: 'TOKEN_EXPIRED' });
    // Cached, and still the registry decides who it is: a sub no longer registered is refused.
    expect(await verify(token, { humans: new Map() } as unknown as RegistryState, new Date(now * 1000))).toMatchObject({ ok: false, code: 'TOKEN_UNKNOWN_HUMAN' });
    const cache = new VerifiedTokenCache(3);
    for (let i = 0; i < 10; i++) cache.set(VerifiedTokenCache.key(`t${i}`, 'human', 0), { sub: 'alice' }, Date.now() + 60_000, 100);
    expect(cache.size).toBe(3);
  });

  it('every write made with the operator token is marked break-glass', async () => {
    const marked = { actor: 'operator', breakGlass: true };
    expect((await node.api('POST', '/v1/groups', { id: 'bg-group', parents: [] })).status).toBe(201);
    expect((await lastEvent()).metadata).toMatchObject(marked);
    expect((await node.api('POST', '/v1/humans', { id: 'bg-human', email: 'bg@example.com', groups: ['bg-group'] })).status).toBe(201);
    expect((await lastEvent()).metadata).toMatchObject(marked);
    expect((await node.api('PUT', '/v1/policy-set', await current())).status).toBe(200);
    expect((await lastEvent()).metadata).toMatchObject(marked);
    expect((await node.api('POST', '/v1/agents/discover', { id: 'bg-found', source: 's', fingerprint: 'f' })).status).toBe(201);
    expect((await lastEvent()).metadata).toMatchObject(marked);
    expect((await node.api('POST', '/v1/agents', agentBody({ id: 'bg-bot', owner: 'bg-human', groups: [] }))).status).toBe(201);
    expect((await lastEvent()).metadata).toMatchObject(marked);
    const kill = await node.api('POST', '/v1/kill-switch', { scope: { owner: 'bg-human' }, mode: 'immediate', reason: 'drill' });
    expect(kill.body.revoked).toEqual(['bg-bot']);
    expect((await lastEvent()).metadata).toMatchObject({ actor: 'operator:kill-switch', breakGlass: true });
    // Revoking one Leash token with the operator token (RFC 7009) is a write the operator token made too.
    const { issuer } = (await node.api('GET', '/.well-known/oauth-authorization-server', undefined, {}, null)).body;
    const iat = Math.floor(Date.now() / 1000);
    const leashToken = await node.signer.sign({ iss: issuer, aud: 'leash', sub: 'iso-bot', client_id: 'iso-bot', iat, exp: iat + 120, jti: crypto.randomUUID() });
    const revoked = await node.api('POST', '/oauth/revoke', `token=${leashToken}`, { 'content-type': 'application/x-www-form-urlencoded' });
    expect(revoked.status, JSON.stringify(revoked.body)).toBe(200);
    const last = await lastEvent();
    expect(last.type).toBe('TokenRevoked');
    expect(last.metadata).toMatchObject(marked);
  });
});
