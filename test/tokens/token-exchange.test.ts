import { cpSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeJwt, generateKeyPair, SignJWT, type JWTPayload } from 'jose';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { readDecisions } from '../../src/audit/decision-reads.ts';
import { replay } from '../../src/audit/replay.ts';
import { PostgresSource } from '../../src/audit/source.ts';
import { verifyAudit } from '../../src/audit/verify.ts';
import { delegateDecision } from '../../src/authz/delegation.ts';
import { compilePolicySet } from '../../src/authz/policy-set.ts';
import { readPolicyFiles } from '../../src/authz/policy-files.ts';
import { CEDAR_DIR, PEP_TOKEN, agentBody, agentPrivateKey, decideOverHttp, seedPrincipals, startTestNode, type TestNode } from '../support/node.ts';

// Token exchange for sub-agents (RFC 8693) on the embedded default (PGlite in memory), with plain
// fetch and form bodies: a parent agent hands part of its Leash token to a sub-agent that
// signs the actor token; every refusal with its OAuth error; the exchange in the decision log;
// the sub-agent's token at the decision API; and a property test of "within the parent's token".

const ISSUER = 'http://127.0.0.1:8080';
const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN = 'urn:ietf:params:oauth:token-type:access_token';
const JWT = 'urn:ietf:params:oauth:token-type:jwt';
const folder = (id: string) => ({ type: 'Folder', id });
type Target = { type: string; id: string };
type Entry = { type: string; actions: string[]; resource?: Target; resourceIn?: Target };
const entry = (actions: string[], target: Target, within = true): Entry => ({ type: 'leash:cedar', actions, ...(within ? { resourceIn: target } : { resource: target }) });
const readInvoices = [entry(['read'], folder('invoices'))];
const readWriteInvoices = [entry(['read', 'write'], folder('invoices'))];
const nowSeconds = () => Math.floor(Date.now() / 1000);

// The deployment's delegate policies (the example set's, plus these), and a ceiling that lets
// the property test's agents ask for anything.
const DELEGATION_POLICIES = `
@id("parent-delegates-to-child") permit (principal == Agent::"parent", action == Action::"delegate", resource == Agent::"child");
@id("parent-delegates-to-suspended") permit (principal == Agent::"parent", action == Action::"delegate", resource == Agent::"child-suspended");
@id("child-delegates-to-grandchild") permit (principal == Agent::"child", action == Action::"delegate", resource == Agent::"grandchild");
@id("p2-delegates-to-c2") permit (principal == Agent::"p2", action == Action::"delegate", resource == Agent::"c2");
@id("c2-delegates-to-grandchild") permit (principal == Agent::"c2", action == Action::"delegate", resource == Agent::"grandchild");
@id("reports-parent-delegates-to-child") permit (principal == Agent::"reports-parent", action == Action::"delegate", resource == Agent::"child");
@id("parent-delegates-to-bobs-child") permit (principal == Agent::"parent", action == Action::"delegate", resource == Agent::"bobs-child");
@id("doomed-delegates-to-child") permit (principal == Agent::"doomed", action == Action::"delegate", resource == Agent::"child");
@id("prop-parent-delegates") permit (principal == Agent::"prop-parent", action == Action::"delegate", resource == Agent::"prop-child");
@id("wide-ceiling") @layer("ceiling") permit (principal in Group::"wide", action, resource);
`;

let node: TestNode;
let url: string;

async function assertion(agent: string, claims: JWTPayload = {}): Promise<string> {
  const now = nowSeconds();
  return new SignJWT({ iss: agent, sub: agent, aud: ISSUER, iat: now, exp: now + 60, jti: crypto.randomUUID(), ...claims }).setProtectedHeader({ alg: 'ES256', kid: 'k1' }).sign(agentPrivateKey);
}

/** The token endpoint given `body` as it is (a form by default). */
async function postRaw(body: string, contentType = 'application/x-www-form-urlencoded') {
  const res = await fetch(`${url}/oauth/token`, { method: 'POST', headers: { 'content-type': contentType }, body });
  return { status: res.status, body: (await res.json()) as Record<string, any> };
}

const post = async (form: Record<string, string>) => postRaw(new URLSearchParams(form).toString());

/** client_credentials for `agent`: its access token. */
async function tokenOf(agent: string, details: unknown = readWriteInvoices): Promise<string> {
  const res = await post({ grant_type: 'client_credentials', client_assertion_type: ASSERTION_TYPE, client_assertion: await assertion(agent), authorization_details: JSON.stringify(details) });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.access_token as string;
}

/** The exchange's form: `parent` hands `subjectToken` on to `child`, asking for `details`. */
async function exchangeForm(parent: string, subjectToken: string, child: string, details: unknown = readInvoices, extra: Record<string, string> = {}) {
  return {
    grant_type: EXCHANGE, client_assertion_type: ASSERTION_TYPE, client_assertion: await assertion(parent),
    subject_token: subjectToken, subject_token_type: ACCESS_TOKEN, actor_token: await assertion(child), actor_token_type: JWT,
    authorization_details: JSON.stringify(details), ...extra,
  };
}

const refused = async (form: Record<string, string>, error: string, status = 400) => refusedRaw(new URLSearchParams(form).toString(), error, status);

async function refusedRaw(body: string, error: string, status = 400, contentType?: string) {
  const res = await postRaw(body, contentType);
  expect(res.body.error, JSON.stringify(res.body)).toBe(error);
  expect(res.status).toBe(status);
  expect(Object.keys(res.body).sort()).toEqual(['error', 'error_description']);
  return res;
}

const decide = (agent: string, accessToken: string, action: string, doc: string) => decideOverHttp(url, agent, accessToken, action, doc);

/** Refused with `error`, and recorded in the decision log with Leash's `code` (the client sees only `error`). */
async function refusedAs(form: Record<string, string>, error: string, code: string) {
  const before = (await delegations()).length;
  await refused(form, error);
  const records = await delegations();
  expect(records.length).toBe(before + 1);
  expect(records.at(-1)).toMatchObject({ decision: false, layer: 'delegation', code });
}

const delegations = async () => (await readDecisions(node.connection.db, 0, 100_000)).filter((d) => d.layer === 'delegation');

beforeAll(async () => {
  const cedarDir = mkdtempSync(join(tmpdir(), 'leash-exchange-'));
  cpSync(CEDAR_DIR, cedarDir, { recursive: true });
  writeFileSync(join(cedarDir, 'policies', 'delegation.cedar'), DELEGATION_POLICIES);
  // Three agents at most in a chain: parent → child is allowed, parent → child → grandchild is not.
  node = await startTestNode({ kind: 'pglite', dataDir: null }, { cedarDir, maxDelegationDepth: 2 });
  await seedPrincipals(node);
  expect((await node.api('POST', '/v1/groups', { id: 'wide', parents: [] })).status).toBe(201);
  expect((await node.api('POST', '/v1/humans', { id: 'bob', email: 'bob@example.com', groups: ['finance'] })).status).toBe(201);
  const register = async (id: string, o: { ceiling?: string; groups?: string[]; owner?: string } = {}) => {
    const ceiling = { template: 'ceiling-folder', values: { '?resource': folder(o.ceiling ?? 'invoices') } };
    const res = await node.api('POST', '/v1/agents', agentBody({ id, groups: o.groups ?? ['finance'], ceiling, owner: o.owner ?? 'alice' }));
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    expect((await node.api('POST', `/v1/agents/${id}/authorize`, { grants: [] })).status).toBe(200);
  };
  for (const id of ['parent', 'child', 'grandchild', 'child-suspended', 'other-child', 'lonely', 'p2', 'c2', 'doomed']) await register(id);
  await register('reports-parent', { ceiling: 'reports' });
  await register('bobs-child', { owner: 'bob' });
  await register('prop-parent', { groups: ['wide'] });
  await register('prop-child', { groups: ['wide'] });
  expect((await node.api('POST', '/v1/agents/child-suspended/suspend', { reason: 'anomaly' })).status).toBe(200);
  await node.app.listen({ port: 0, host: '127.0.0.1' });
  url = `http://127.0.0.1:${(node.app.server.address() as { port: number }).port}`;
});
afterAll(async () => node?.close());

describe('a parent agent exchanges its token for one its sub-agent uses', () => {
  it('issues a delegated at+jwt: the human as sub, the sub-agent acting, the parent above it, exactly the details asked for', async () => {
    const parentToken = await tokenOf('parent');
    const parentClaims = decodeJwt(parentToken);
    const res = await post(await exchangeForm('parent', parentToken, 'child'));
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body).toEqual({ access_token: expect.any(String), token_type: 'Bearer', expires_in: expect.any(Number), authorization_details: readInvoices, issued_token_type: ACCESS_TOKEN });
    const claims = decodeJwt(res.body.access_token);
    expect(claims).toEqual({
      iss: ISSUER, sub: 'alice', aud: 'leash', client_id: 'parent', iat: expect.any(Number), exp: expect.any(Number), jti: expect.any(String),
      act: { sub: 'child', act: { sub: 'parent' } }, authorization_details: readInvoices,
    });
    expect(claims.exp).toBeLessThanOrEqual(parentClaims.exp!);

    // The decision API decides it with the chain: the child acting, the parent above, alice as the human.
    expect(await decide('child', res.body.access_token, 'read', 'd1')).toMatchObject({ decision: true, context: { layer: 'all' } });
    // The parent's token covers writing; the child did not ask for it, so its token does not.
    expect(await decide('parent', parentToken, 'write', 'd2')).toMatchObject({ decision: false, context: { layer: 'agent' } });
    expect(await decide('child', res.body.access_token, 'write', 'd2')).toMatchObject({ decision: false, context: { layer: 'details', code: 'DETAILS_NOT_COVERING' } });
    // It is the child's token, not the parent's.
    expect(await decide('parent', res.body.access_token, 'read', 'd1')).toMatchObject({ decision: false, context: { layer: 'token', code: 'TOKEN_SUBJECT_MISMATCH' } });
  });

  it('the exchanged token never outlives the parent\'s', async () => {
    const now = nowSeconds();
    const short = await node.signer.sign({ iss: ISSUER, sub: 'parent', aud: 'leash', client_id: 'parent', iat: now, exp: now + 20, jti: crypto.randomUUID(), authorization_details: readInvoices });
    const res = await post(await exchangeForm('parent', short!, 'child'));
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(decodeJwt(res.body.access_token).exp).toBe(now + 20);
    expect(res.body.expires_in).toBeLessThanOrEqual(20);
  });

  it('a sub-agent\'s token stops working when the parent above it is suspended (DELEGATION_CHAIN_BROKEN at the decision)', async () => {
    const res = await post(await exchangeForm('p2', await tokenOf('p2'), 'c2'));
    expect(res.status).toBe(200);
    expect(await decide('c2', res.body.access_token, 'read', 'd1')).toMatchObject({ decision: true });
    expect((await node.api('POST', '/v1/agents/p2/suspend', { reason: 'x' })).status).toBe(200);
    expect(await decide('c2', res.body.access_token, 'read', 'd1')).toMatchObject({ decision: false, context: { layer: 'token', code: 'DELEGATION_CHAIN_BROKEN' } });
    // And c2 can no longer hand it on either.
    await refusedAs(await exchangeForm('c2', res.body.access_token, 'grandchild'), 'invalid_grant', 'DELEGATION_CHAIN_BROKEN');
  });
});

describe('refusals, each with its OAuth error', () => {
  it('invalid_grant: no delegate policy for the parent, or one for another sub-agent only', async () => {
    await refusedAs(await exchangeForm('lonely', await tokenOf('lonely'), 'child'), 'invalid_grant', 'DELEGATION_DENIED');
    await refusedAs(await exchangeForm('parent', await tokenOf('parent'), 'other-child'), 'invalid_grant', 'DELEGATION_DENIED');
  });

  it('invalid_grant: the sub-agent is not active', async () => {
    await refusedAs(await exchangeForm('parent', await tokenOf('parent'), 'child-suspended'), 'invalid_grant', 'AGENT_NOT_ACTIVE');
  });

  it('invalid_grant: the subject token is expired, signed by another key, not Leash\'s, or another agent\'s', async () => {
    const now = nowSeconds();
    const expired = await node.signer.sign({ iss: ISSUER, sub: 'parent', aud: 'leash', client_id: 'parent', iat: now - 400, exp: now - 100, jti: crypto.randomUUID(), authorization_details: readInvoices });
    await refusedAs(await exchangeForm('parent', expired!, 'child'), 'invalid_grant', 'TOKEN_EXPIRED');
    const other = await generateKeyPair('ES256');
    const forged = await new SignJWT({ client_id: 'parent', jti: crypto.randomUUID(), authorization_details: readInvoices })
      .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: node.signer.kid! }).setIssuer(ISSUER).setAudience('leash').setSubject('parent').setIssuedAt(now).setExpirationTime(now + 60).sign(other.privateKey);
    await refusedAs(await exchangeForm('parent', forged, 'child'), 'invalid_grant', 'TOKEN_BAD_SIGNATURE');
    // The parent's own key, its own issuer: a token the decision API would take, but not Leash's.
    const own = await new SignJWT({ jti: crypto.randomUUID(), authorization_details: readInvoices })
      .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: 'k1' }).setIssuer('https://idp.example').setAudience('leash').setSubject('parent').setIssuedAt(now).setExpirationTime(now + 60).sign(agentPrivateKey);
    expect(await decide('parent', own, 'read', 'd1')).toMatchObject({ decision: true });
    await refusedAs(await exchangeForm('parent', own, 'child'), 'invalid_grant', 'TOKEN_WRONG_ISSUER');
    // Another agent's Leash token, handed on by the parent.
    await refusedAs(await exchangeForm('parent', await tokenOf('lonely'), 'child'), 'invalid_grant', 'TOKEN_SUBJECT_MISMATCH');
  });

  it('invalid_grant: the subject token was revoked (TOKEN_REVOKED), though it would still verify', async () => {
    const parentToken = await tokenOf('parent');
    const revoke = await fetch(`${url}/oauth/revoke`, {
      method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: parentToken, client_assertion_type: ASSERTION_TYPE, client_assertion: await assertion('parent') }).toString(),
    });
    expect(revoke.status).toBe(200);
    await refusedAs(await exchangeForm('parent', parentToken, 'child'), 'invalid_grant', 'TOKEN_REVOKED');
  });

  it('invalid_grant: the chain would be deeper than LEASH_MAX_DELEGATION_DEPTH (3 agents, at most 2)', async () => {
    const childToken = (await post(await exchangeForm('parent', await tokenOf('parent'), 'child'))).body.access_token as string;
    expect(decodeJwt(childToken).act).toEqual({ sub: 'child', act: { sub: 'parent' } });
    await refusedAs(await exchangeForm('child', childToken, 'grandchild'), 'invalid_grant', 'DELEGATION_TOO_DEEP');
  });

  it('invalid_grant ACTOR_TOKEN_INVALID: a bad, misaddressed or replayed actor token (its jti is used once, as a client assertion\'s)', async () => {
    const parentToken = await tokenOf('parent');
    const form = await exchangeForm('parent', parentToken, 'child');
    expect((await post(form)).status).toBe(200);
    // The client's own assertion, used again: the client did not authenticate.
    await refused(form, 'invalid_client', 401);
    // The client authenticated; the sub-agent did not (its assertion used again, then others).
    await refusedAs({ ...form, client_assertion: await assertion('parent') }, 'invalid_grant', 'ACTOR_TOKEN_INVALID');
    await refusedAs({ ...form, client_assertion: await assertion('parent'), actor_token: 'not-a-jwt' }, 'invalid_grant', 'ACTOR_TOKEN_INVALID');
    await refusedAs({ ...form, client_assertion: await assertion('parent'), actor_token: await assertion('child', { aud: 'https://elsewhere.example' }) }, 'invalid_grant', 'ACTOR_TOKEN_INVALID');
    const wrongKey = await new SignJWT({ jti: crypto.randomUUID() }).setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setIssuer('child').setSubject('child').setAudience(ISSUER)
      .setIssuedAt().setExpirationTime('60s').sign((await generateKeyPair('ES256')).privateKey);
    await refusedAs({ ...form, client_assertion: await assertion('parent'), actor_token: wrongKey }, 'invalid_grant', 'ACTOR_TOKEN_INVALID');
  });

  it('invalid_grant DELEGATION_NOT_GRANTED: a sub-agent of another owner (its token would act for a human it does not serve), though a delegate policy allows it', async () => {
    await refusedAs(await exchangeForm('parent', await tokenOf('parent'), 'bobs-child'), 'invalid_grant', 'DELEGATION_NOT_GRANTED');
  });

  it('invalid_authorization_details: beyond the parent\'s token, beyond the sub-agent\'s ceiling, or malformed (refused whole, never narrowed)', async () => {
    const readOnly = await tokenOf('parent', readInvoices);
    await refusedAs(await exchangeForm('parent', readOnly, 'child', readWriteInvoices), 'invalid_authorization_details', 'DETAILS_BEYOND_SUBJECT_TOKEN');
    // The folder itself does not cover everything under it.
    await refusedAs(await exchangeForm('parent', await tokenOf('parent', [entry(['read'], folder('invoices'), false)]), 'child', readInvoices), 'invalid_authorization_details', 'DETAILS_BEYOND_SUBJECT_TOKEN');
    const reports = [entry(['read'], folder('reports'))];
    await refusedAs(await exchangeForm('reports-parent', await tokenOf('reports-parent', reports), 'child', reports), 'invalid_authorization_details', 'DETAILS_BEYOND_CEILING');
    await refusedAs({ ...(await exchangeForm('parent', readOnly, 'child')), authorization_details: '[{"type":"leash:cedar"}]' }, 'invalid_authorization_details', 'DETAILS_MALFORMED');
  });

  it('invalid_request: a missing or wrong token type, a missing subject or actor token', async () => {
    const parentToken = await tokenOf('parent');
    const form = async () => exchangeForm('parent', parentToken, 'child');
    const without = async (k: string) => Object.fromEntries(Object.entries(await form()).filter(([name]) => name !== k));
    await refused({ ...(await form()), subject_token_type: JWT }, 'invalid_request');
    await refused({ ...(await form()), actor_token_type: ACCESS_TOKEN }, 'invalid_request');
    for (const k of ['subject_token_type', 'actor_token_type', 'subject_token', 'actor_token']) await refused(await without(k), 'invalid_request');
  });

  it('a schema that does not declare delegate allows no delegation', async () => {
    const source = readPolicyFiles(CEDAR_DIR);
    const schema = source.schema.replace(/action delegate appliesTo \{[^}]*\};/, '');
    expect(schema).not.toContain('delegate');
    const policies = source.policies.replace(/@id\("finance-agents-delegate-within-the-group"\)[^;]*;/, '');
    const set = compilePolicySet({ ...source, schema, policies }, 1);
    expect(delegateDecision(set, node.view, 'parent', 'child')).toMatchObject({ declared: false, result: { allow: false } });
    // And the example set, which declares it, allows finance-agents to delegate within the group only.
    const examples = compilePolicySet(source, 2);
    expect(delegateDecision(examples, node.view, 'parent', 'child').result.allow).toBe(false);
  });
});

/** A JWT with this header and these claims, and `signature` (base64url) as its signature. */
const unsignedJwt = (header: object, claims: object, signature = '') =>
  [header, claims].map((part) => Buffer.from(JSON.stringify(part)).toString('base64url')).join('.') + `.${signature}`;

describe('hostile exchange parameters: each a clear RFC 6749 error, never a 500, and the endpoint keeps answering', () => {
  afterEach(async () => {
    expect((await post(await exchangeForm('parent', await tokenOf('parent'), 'child'))).status).toBe(200);
  });

  /** Refused with `error` before the client is authenticated: no decision is recorded. */
  async function refusedUnrecorded(body: string, error: string, contentType?: string) {
    const before = (await delegations()).length;
    await refusedRaw(body, error, 400, contentType);
    expect((await delegations()).length).toBe(before);
  }
  const formBody = async (extra: Record<string, string> = {}) => new URLSearchParams(await exchangeForm('parent', await tokenOf('parent'), 'child', readInvoices, extra)).toString();

  it('a subject_token longer than any token Leash reads (20,000 characters, within the form\'s 24 KiB): invalid_grant TOKEN_MALFORMED', async () => {
    const long = `${await tokenOf('parent')}.${'A'.repeat(20_000)}`.slice(0, 20_000);
    await refusedAs(await exchangeForm('parent', long, 'child'), 'invalid_grant', 'TOKEN_MALFORMED');
  });

  it('a form beyond 24 KiB (an actor_token of 2 MB, a subject_token of 30,000 characters): invalid_request, nothing recorded', async () => {
    await refusedUnrecorded(await formBody({ actor_token: 'A'.repeat(2 * 1024 * 1024) }), 'invalid_request');
    await refusedUnrecorded(await formBody({ subject_token: 'A'.repeat(30_000) }), 'invalid_request');
  });

  it('a NUL in subject_token, actor_token or authorization_details: invalid_request (the form), nothing recorded', async () => {
    const parentToken = await tokenOf('parent');
    await refusedUnrecorded(await formBody({ subject_token: `${parentToken}\u0000` }), 'invalid_request');
    await refusedUnrecorded(await formBody({ actor_token: `${await assertion('child')}\u0000` }), 'invalid_request');
    await refusedUnrecorded(await formBody({ authorization_details: JSON.stringify(readInvoices).replace('read', 're\u0000ad') }), 'invalid_request');
  });

  it('an empty subject_token or actor_token: invalid_request, nothing recorded', async () => {
    await refusedUnrecorded(await formBody({ subject_token: '' }), 'invalid_request');
    await refusedUnrecorded(await formBody({ actor_token: '' }), 'invalid_request');
  });

  it('subject_token, actor_token or authorization_details given twice (even with the same value): invalid_request, nothing recorded', async () => {
    const parentToken = await tokenOf('parent');
    await refusedUnrecorded(`${await formBody()}&subject_token=${parentToken}`, 'invalid_request');
    await refusedUnrecorded(`subject_token=a&${await formBody()}`, 'invalid_request');
    await refusedUnrecorded(`${await formBody()}&actor_token=${await assertion('child')}`, 'invalid_request');
    await refusedUnrecorded(`${await formBody()}&authorization_details=${encodeURIComponent(JSON.stringify(readInvoices))}`, 'invalid_request');
  });

  it('a JSON body (with strings, or with other types), or another content type: invalid_request, nothing recorded', async () => {
    const form = await exchangeForm('parent', await tokenOf('parent'), 'child');
    await refusedUnrecorded(JSON.stringify(form), 'invalid_request', 'application/json');
    await refusedUnrecorded(JSON.stringify({ ...form, subject_token: 42, actor_token: { a: 1 }, authorization_details: readInvoices }), 'invalid_request', 'application/json');
    await refusedUnrecorded(new URLSearchParams(form).toString(), 'invalid_request', 'text/plain');
  });

  it('a subject token with alg none, or HS256, under Leash\'s issuer and a kid of Leash\'s JWKS: invalid_grant, recorded', async () => {
    const now = nowSeconds();
    const claims = { iss: ISSUER, sub: 'parent', aud: 'leash', client_id: 'parent', iat: now, exp: now + 60, jti: crypto.randomUUID(), authorization_details: readInvoices };
    const kid = node.signer.kid!;
    await refusedAs(await exchangeForm('parent', unsignedJwt({ alg: 'none', typ: 'at+jwt', kid }, claims), 'child'), 'invalid_grant', 'TOKEN_ALG_NOT_ALLOWED');
    const hs256 = await new SignJWT(claims).setProtectedHeader({ alg: 'HS256', typ: 'at+jwt', kid }).sign(new TextEncoder().encode('a shared secret of at least 32 bytes'));
    await refusedAs(await exchangeForm('parent', hs256, 'child'), 'invalid_grant', 'TOKEN_ALG_NOT_ALLOWED');
    // A real token of Leash's with its signature taken off.
    const [header, payload] = (await tokenOf('parent')).split('.');
    await refusedAs(await exchangeForm('parent', `${header}.${payload}.`, 'child'), 'invalid_grant', 'TOKEN_BAD_SIGNATURE');
  });

  it('the parent\'s token after the parent was revoked: unauthorized_client, recorded AGENT_NOT_ACTIVE (the parent did authenticate); its sub-agent\'s token is refused at decisions', async () => {
    const doomedToken = await tokenOf('doomed');
    const childToken = await post(await exchangeForm('doomed', doomedToken, 'child'));
    expect(childToken.status, JSON.stringify(childToken.body)).toBe(200);
    expect((await node.api('POST', '/v1/agents/doomed/revoke', { mode: 'immediate', reason: 'compromised' })).status).toBe(200);
    // A compromised parent trying to hand its token on is a decision the log keeps.
    await refusedAs(await exchangeForm('doomed', doomedToken, 'child'), 'unauthorized_client', 'AGENT_NOT_ACTIVE');
    expect(await decide('child', childToken.body.access_token, 'read', 'd1')).toMatchObject({ decision: false, context: { layer: 'token', code: 'DELEGATION_CHAIN_BROKEN' } });
    // Handed on by the sub-agent it was delegated to: not the sub-agent's own token.
    await refusedAs(await exchangeForm('child', doomedToken, 'grandchild'), 'invalid_grant', 'TOKEN_SUBJECT_MISMATCH');
  });

  it('a subject token that is not a JWT, or whose header or claims have the wrong shapes (a kid that is an object, crit, a null payload, 3,000 arrays deep, no signature): invalid_grant, recorded with a token code', async () => {
    const now = nowSeconds();
    const kid = node.signer.kid!;
    const claims = { iss: ISSUER, sub: 'parent', aud: 'leash', client_id: 'parent', iat: now, exp: now + 60, jti: crypto.randomUUID(), authorization_details: readInvoices };
    const part = (x: unknown) => Buffer.from(typeof x === 'string' ? x : JSON.stringify(x)).toString('base64url');
    const header = { alg: 'ES256', typ: 'at+jwt', kid };
    for (const t of [
      'x', '..', 'a.b.c', 'a.b.c.d.e', `${part(header)}.${part(claims)}`,
      `${part({ ...header, kid: { x: 1 } })}.${part(claims)}.AAAA`, `${part({ ...header, kid: [kid] })}.${part(claims)}.AAAA`, `${part({ ...header, crit: ['b64'], b64: false })}.${part(claims)}.AAAA`,
      `${part(['x'])}.${part(claims)}.AAAA`, `${part(header)}.${part('null')}.AAAA`, `${part(header)}.${part('[]')}.AAAA`, `${part(header)}.${part({ ...claims, iss: { a: 1 } })}.AAAA`,
      `${part(header)}.${part(`{"iss":${'['.repeat(3_000)}${']'.repeat(3_000)}}`)}.AAAA`, `${part(header)}.${part(claims)}.${'A'.repeat(86)}`,
    ]) {
      const before = (await delegations()).length;
      await refused(await exchangeForm('parent', t, 'child'), 'invalid_grant');
      const records = await delegations();
      expect(records.length).toBe(before + 1);
      expect(records.at(-1)!.code, t.slice(0, 60)).toMatch(/^TOKEN_/);
    }
    // What is not a JWT at all is malformed, not from another issuer.
    for (const t of ['x', '..', 'a.b.c']) await refusedAs(await exchangeForm('parent', t, 'child'), 'invalid_grant', 'TOKEN_MALFORMED');
  });

  it('an actor token of the parent itself, or of an agent above it in the chain: invalid_grant DELEGATION_CYCLE', async () => {
    const parentToken = await tokenOf('parent');
    await refusedAs(await exchangeForm('parent', parentToken, 'parent'), 'invalid_grant', 'DELEGATION_CYCLE');
    const childToken = (await post(await exchangeForm('parent', parentToken, 'child'))).body.access_token as string;
    await refusedAs(await exchangeForm('child', childToken, 'parent'), 'invalid_grant', 'DELEGATION_CYCLE');
  });

  it('authorization_details 1,000 arrays deep, longer than 8,192 characters, not an array, or with a NUL escaped in its JSON: invalid_authorization_details DETAILS_MALFORMED', async () => {
    const parentToken = await tokenOf('parent');
    const withDetails = async (raw: string) => ({ ...(await exchangeForm('parent', parentToken, 'child')), authorization_details: raw });
    for (const raw of [
      `${'['.repeat(1_000)}${']'.repeat(1_000)}`,
      `[${'['.repeat(999)}${JSON.stringify(readInvoices[0])}${']'.repeat(999)}]`,
      JSON.stringify(Array.from({ length: 100 }, () => readInvoices[0])), // 8,500 characters
      JSON.stringify([{ ...readInvoices[0], note: 'x'.repeat(9_000) }]),
      JSON.stringify(readInvoices[0]), '"leash:cedar"', '42', 'null', '{}', '', '[', 'true',
      JSON.stringify(readInvoices).replace('read', 're\\u0000ad'),
      JSON.stringify([{ ...readInvoices[0], note: 'a\u0000b' }]).replace('\u0000', '\\u0000'),
    ]) await refusedAs(await withDetails(raw), 'invalid_authorization_details', 'DETAILS_MALFORMED');
  });
});

describe('the decision log', () => {
  it('records every exchange after client authentication: layer delegation, the delegate policies as reasons, a code for refusals; replay leaves them out, verify holds', async () => {
    const before = (await delegations()).length;
    const parentToken = await tokenOf('parent');
    expect((await post(await exchangeForm('parent', parentToken, 'child'))).status).toBe(200);
    await refused(await exchangeForm('parent', parentToken, 'other-child'), 'invalid_grant');
    await refused(await exchangeForm('parent', parentToken, 'child', readWriteInvoices.concat([entry(['read'], folder('reports'))])), 'invalid_authorization_details');
    // Before client authentication: not a decision about anyone.
    await refused({ ...(await exchangeForm('parent', parentToken, 'child')), client_assertion: 'x' }, 'invalid_client', 401);
    const records = (await delegations()).slice(before);
    expect(records.map((r) => [r.decision, r.code, r.reasons])).toEqual([
      [true, null, ['parent-delegates-to-child']],
      [false, 'DELEGATION_DENIED', []],
      [false, 'DETAILS_BEYOND_SUBJECT_TOKEN', ['parent-delegates-to-child']],
    ]);
    expect(records[0]!.request).toMatchObject({
      kind: 'token-exchange', subject: { type: 'Agent', id: 'parent' }, action: { name: 'delegate' }, resource: { type: 'Agent', id: 'child' },
      context: { requested: JSON.stringify(readInvoices), subjectToken: { sub: 'parent', jti: decodeJwt(parentToken).jti } },
    });
    expect(JSON.stringify(records)).not.toContain(parentToken);
    const report = await replay(new PostgresSource(node.connection.db));
    expect(report.differing, JSON.stringify(report.records.slice(0, 3))).toBe(0);
    expect((await verifyAudit(node.connection.db)).ok).toBe(true);
  });
});

/** mulberry32: a seeded PRNG, so a failing case can be run again. */
function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('property: an exchange is accepted only if the parent\'s token covers every requested (target, action)', () => {
  it('agrees with plain set logic on a few hundred seeded cases', async () => {
    const random = prng(20261201);
    const pick = <T>(xs: readonly T[]) => xs[Math.floor(random() * xs.length)]!;
    const targets = [folder('f1'), folder('f2'), { type: 'Document', id: 'd1' }, { type: 'Document', id: 'd2' }] as const;
    const actions = ['read', 'write'] as const;
    const entries = () => Array.from({ length: 1 + Math.floor(random() * 3) }, () => {
      const chosen = actions.filter(() => random() < 0.6);
      return entry(chosen.length ? chosen : [pick(actions)], pick(targets), random() < 0.5);
    });
    // The oracle: none of these targets has a known parent, so "X lies within Y" is X = Y. A
    // requested (resource X, a) needs a parent entry (X, a) of either kind; a requested
    // (resourceIn X, a) needs a parent (resourceIn X, a).
    const key = (kind: string, t: { type: string; id: string }, a: string) => `${kind}|${t.type}|${t.id}|${a}`;
    const oracle = (parent: ReturnType<typeof entries>, requested: ReturnType<typeof entries>) => {
      const held = new Set(parent.flatMap((p) => p.actions.map((a) => key('resourceIn' in p ? 'in' : 'exact', (p.resourceIn ?? p.resource)!, a))));
      return requested.every((r) => r.actions.every((a) => {
        const t = (r.resourceIn ?? r.resource)!;
        return held.has(key('in', t, a)) || (!('resourceIn' in r) && held.has(key('exact', t, a)));
      }));
    };
    // Half the requests are drawn from the parent's own entries (then sometimes changed), so
    // that both outcomes are common.
    const derived = (parent: ReturnType<typeof entries>) => Array.from({ length: 1 + Math.floor(random() * 2) }, () => {
      const p = pick(parent);
      const kept = p.actions.filter(() => random() < 0.7);
      const narrower = 'resourceIn' in p && random() < 0.5 ? false : 'resourceIn' in p;
      const e = entry(kept.length ? kept : [pick(p.actions)], random() < 0.2 ? pick(targets) : (p.resourceIn ?? p.resource)!, random() < 0.15 ? true : narrower);
      if (random() < 0.15) e.actions = [pick(actions)];
      return e;
    });
    let accepted = 0;
    let cases = 0;
    const PARENTS = 70;
    for (let i = 0; i < PARENTS; i++) {
      const parent = entries();
      const parentToken = await tokenOf('prop-parent', parent);
      for (let j = 0; j < 3; j++, cases++) {
        const requested = random() < 0.5 ? derived(parent) : entries();
        const expected = oracle(parent, requested);
        const res = await post(await exchangeForm('prop-parent', parentToken, 'prop-child', requested));
        expect({ cases, parent, requested, status: res.status, error: res.body.error }).toEqual({ cases, parent, requested, status: expected ? 200 : 400, error: expected ? undefined : 'invalid_authorization_details' });
        if (expected) {
          accepted++;
          expect(decodeJwt(res.body.access_token).authorization_details).toEqual(requested);
        }
      }
    }
    const CASES = cases;
    // Both outcomes are exercised.
    expect(accepted).toBeGreaterThan(CASES / 10);
    expect(accepted).toBeLessThan(CASES * 0.9);
  }, 60_000);
});
