import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWTPayload } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readDecisions } from '../../src/audit/decision-log.ts';
import { replay } from '../../src/audit/replay.ts';
import { PostgresSource } from '../../src/audit/source.ts';
import { readJwksFile } from '../../src/humans/human-tokens.ts';
import { ADMIN_TOKEN, PEP_TOKEN, agentBody, seedPrincipals, startTestNode, type TestNode } from '../support/node.ts';

// People at the admin API: tokens from the organisation's identity provider (here a local key
// pair, as the embedded demo uses), each call decided by the example admin policies in cedar/
// and recorded; the operator token still works, as break-glass.

const ISSUER = 'https://idp.example/people';
const AUDIENCE = 'leash-admin';

let node: TestNode;
let idpKey: CryptoKey;
let otherKey: CryptoKey;

async function humanToken(sub: string, claims: JWTPayload = {}, o: { key?: CryptoKey; alg?: string; kid?: string } = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ iss: ISSUER, aud: AUDIENCE, sub, iat: now, exp: now + 300, ...claims })
    .setProtectedHeader({ alg: o.alg ?? 'ES256', kid: o.kid ?? 'people-1' })
    .sign(o.key ?? idpKey);
}

/** An admin call with a person's token. */
const as = async (human: string, method: string, url: string, body?: unknown) => node.api(method, url, body, {}, await humanToken(human));

const adminRecords = async () => (await readDecisions(node.connection.db, 0, 100_000)).filter((d) => d.layer === 'admin');
const lastEvent = async () => (await node.store.readAll(0, 1_000_000)).at(-1)!;

beforeAll(async () => {
  const dir = mkdtempSync(join(tmpdir(), 'leash-humans-'));
  const pair = await generateKeyPair('ES256', { extractable: true });
  idpKey = pair.privateKey;
  otherKey = (await generateKeyPair('ES256')).privateKey;
  const jwksFile = join(dir, 'people.jwks.json');
  writeFileSync(jwksFile, JSON.stringify({ keys: [{ ...(await exportJWK(pair.publicKey)), alg: 'ES256', kid: 'people-1' }] }));
  node = await startTestNode({ kind: 'pglite', dataDir: null }, { humanPins: { issuer: ISSUER, audience: AUDIENCE, algorithms: ['ES256'], jwks: { file: jwksFile } } });
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
