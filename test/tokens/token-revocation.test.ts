import { Writable } from 'node:stream';
import { sql } from 'kysely';
import { decodeJwt, SignJWT, type JWTPayload } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, PEP_TOKEN, agentBody, agentPrivateKey, credentials, seedPrincipals, startTestNode, type TestNode } from '../support/node.ts';

// Revoking one Leash token by its jti (RFC 7009) and introspecting tokens (RFC 7662), on the
// embedded default (PGlite in memory), with plain fetch and form bodies as an OAuth client would.

const ISSUER = 'http://127.0.0.1:8080';
const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const folder = (id: string) => ({ type: 'Folder', id });
const readInvoices = [{ type: 'leash:cedar', actions: ['read'], resourceIn: folder('invoices') }];
const nowSeconds = () => Math.floor(Date.now() / 1000);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

let node: TestNode;
let url: string;
const logs: string[] = [];

async function assertion(agent: string, claims: JWTPayload = {}): Promise<string> {
  const now = nowSeconds();
  return new SignJWT({ iss: agent, sub: agent, aud: ISSUER, iat: now, exp: now + 60, jti: crypto.randomUUID(), ...claims })
    .setProtectedHeader({ alg: 'ES256', kid: 'k1' }).sign(agentPrivateKey);
}

async function post(path: string, form: Record<string, string> | [string, string][], init: { contentType?: string; body?: string; bearer?: string } = {}) {
  const res = await fetch(`${url}${path}`, {
    method: 'POST',
    headers: { 'content-type': init.contentType ?? 'application/x-www-form-urlencoded', ...(init.bearer ? { authorization: `Bearer ${init.bearer}` } : {}) },
    body: init.body ?? new URLSearchParams(form).toString(),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: (text ? JSON.parse(text) : null) as Record<string, any> };
}

async function issue(agent: string): Promise<string> {
  const res = await post('/oauth/token', {
    grant_type: 'client_credentials', client_assertion_type: ASSERTION_TYPE, client_assertion: await assertion(agent), authorization_details: JSON.stringify(readInvoices),
  });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.access_token as string;
}

const revokeAsAgent = async (agent: string, token: string, extra: Record<string, string> = {}) =>
  post('/oauth/revoke', { token, client_assertion_type: ASSERTION_TYPE, client_assertion: await assertion(agent), ...extra });
const revokeAsOperator = (token: string) => post('/oauth/revoke', { token }, { bearer: ADMIN_TOKEN });
const introspect = (token: string, bearer = PEP_TOKEN) => post('/oauth/introspect', { token }, { bearer });

async function decide(agent: string, token: string) {
  const res = await fetch(`${url}/access/v1/evaluation`, {
    method: 'POST',
    headers: { authorization: `Bearer ${PEP_TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      subject: { type: 'agent', id: agent, properties: { token } }, action: { name: 'read' }, resource: { type: 'Document', id: 'd1' },
      context: { entities: [{ uid: folder('invoices'), attrs: {}, parents: [] }, { uid: { type: 'Document', id: 'd1' }, attrs: {}, parents: [folder('invoices')] }] },
    }),
  });
  expect(res.status).toBe(200);
  return (await res.json()) as { decision: boolean; context: { id: string; layer: string; code?: string } };
}

/** What the decision log holds for a decision. */
async function recorded(id: string) {
  const { rows } = await sql<{ decision: boolean; layer: string; code: string | null }>`select decision, layer, code from decisions where id = ${id}`.execute(node.connection.db);
  return rows[0];
}

const revocationEvents = async () => (await node.store.readAll(0, 1_000_000)).filter((e) => e.type === 'TokenRevoked');

/** A Leash token signed by this node's key with the given claims (what token exchange will issue, or an expired one). */
async function leashToken(claims: JWTPayload): Promise<string> {
  const iat = nowSeconds();
  const token = await node.signer.sign({ iss: ISSUER, aud: 'leash', iat, exp: iat + 120, jti: crypto.randomUUID(), authorization_details: readInvoices, ...claims });
  return token!;
}

const ceiling = { template: 'ceiling-folder', values: { '?resource': folder('invoices') } };
async function register(id: string) {
  expect((await node.api('POST', '/v1/agents', agentBody({ id, groups: ['finance'], ceiling }))).status).toBe(201);
  expect((await node.api('POST', `/v1/agents/${id}/authorize`, { grants: [] })).status).toBe(200);
}

beforeAll(async () => {
  const logStream = new Writable({ write: (chunk, _enc, done) => void (logs.push(String(chunk)), done()) });
  node = await startTestNode({ kind: 'pglite', dataDir: null }, { logger: { level: 'info', stream: logStream } });
  await seedPrincipals(node);
  for (const id of ['rv-bot', 'rv-other', 'rv-suspend', 'rv-revoke', 'rv-retire', 'rv-quarantine', 'rv-rotate', 'rv-parent', 'rv-child']) await register(id);
  await node.app.listen({ port: 0, host: '127.0.0.1' });
  url = `http://127.0.0.1:${(node.app.server.address() as { port: number }).port}`;
  // Tokens of an agent are refused within the second of its authorize: start a second later.
  await sleep(1100);
});
afterAll(async () => node?.close());

const issuedTokens: string[] = [];
const remember = (t: string) => (issuedTokens.push(t), t);

describe('POST /oauth/revoke', () => {
  it('the agent revokes one of its tokens: the next decision with it is a recorded deny TOKEN_REVOKED although it was cached; its other tokens keep working', async () => {
    const t1 = remember(await issue('rv-bot'));
    const t2 = remember(await issue('rv-bot'));
    expect(await decide('rv-bot', t1)).toMatchObject({ decision: true });
    expect(await decide('rv-bot', t1)).toMatchObject({ decision: true }); // from the verified-token cache
    expect(await decide('rv-bot', t2)).toMatchObject({ decision: true });

    const res = await revokeAsAgent('rv-bot', t1);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.headers.get('cache-control')).toBe('no-store');
    expect(res.body).toMatchObject({ position: expect.any(Number), nodesConfirmed: 1, nodesExpected: 1, nodesMissing: [] });

    const denied = await decide('rv-bot', t1);
    expect(denied).toMatchObject({ decision: false, context: { layer: 'token', code: 'TOKEN_REVOKED' } });
    expect(await recorded(denied.context.id)).toEqual({ decision: false, layer: 'token', code: 'TOKEN_REVOKED' });
    expect(await decide('rv-bot', t2)).toMatchObject({ decision: true });

    const events = await revocationEvents();
    const jti = decodeJwt(t1).jti;
    expect(events.filter((e) => e.data.jti === jti)).toEqual([
      expect.objectContaining({ streamId: `token/${jti}`, data: { jti, exp: decodeJwt(t1).exp, revokedBy: 'agent:rv-bot' } }),
    ]);
  });

  it('the operator revokes any Leash token with its bearer token', async () => {
    const t = remember(await issue('rv-other'));
    expect(await decide('rv-other', t)).toMatchObject({ decision: true });
    const res = await revokeAsOperator(t);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(await decide('rv-other', t)).toMatchObject({ decision: false, context: { code: 'TOKEN_REVOKED' } });
    const jti = decodeJwt(t).jti;
    expect((await revocationEvents()).find((e) => e.data.jti === jti)).toMatchObject({ data: { revokedBy: 'operator' } });
  });

  it('answers 200 for an already revoked, an expired, an unknown or a badly signed token, appending nothing', async () => {
    const t = remember(await issue('rv-bot'));
    expect((await revokeAsOperator(t)).status).toBe(200);
    const before = await node.eventCount();
    const again = await revokeAsAgent('rv-bot', t);
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({ position: expect.any(Number) }); // fenced at the first revocation's position
    expect((await revokeAsOperator(t)).status).toBe(200);
    const expired = await leashToken({ sub: 'rv-bot', client_id: 'rv-bot', iat: nowSeconds() - 400, exp: nowSeconds() - 100 });
    expect((await revokeAsOperator(expired)).body).toEqual({});
    expect((await revokeAsOperator('not-a-token')).body).toEqual({});
    const [h, p] = (await issue('rv-bot')).split('.');
    const forged = `${h}.${p}.${Buffer.from('x'.repeat(64)).toString('base64url')}`;
    expect(await revokeAsOperator(forged)).toMatchObject({ status: 200, body: {} });
    expect(await node.eventCount()).toBe(before); // (issuing a token appends nothing either)
  });

  it('bad client authentication is 401 invalid_client, and revokes nothing', async () => {
    const t = remember(await issue('rv-bot'));
    const replayed = await assertion('rv-bot');
    expect((await post('/oauth/revoke', { token: t, client_assertion_type: ASSERTION_TYPE, client_assertion: replayed })).status).toBe(200); // first use
    const t2 = remember(await issue('rv-bot'));
    const cases: [string, Record<string, string>, string?][] = [
      ['no authentication', { token: t2 }],
      ['another assertion type', { token: t2, client_assertion_type: 'urn:x', client_assertion: await assertion('rv-bot') }],
      ['a replayed assertion', { token: t2, client_assertion_type: ASSERTION_TYPE, client_assertion: replayed }],
      ['an assertion for another audience', { token: t2, client_assertion_type: ASSERTION_TYPE, client_assertion: await assertion('rv-bot', { aud: 'https://elsewhere' }) }],
      ['an unknown agent', { token: t2, client_assertion_type: ASSERTION_TYPE, client_assertion: await assertion('nobody') }],
      ['a wrong bearer token', { token: t2 }, 'not-the-operator-token'],
      ['the PEP token', { token: t2 }, PEP_TOKEN],
    ];
    for (const [what, form, bearer] of cases) {
      const res = await post('/oauth/revoke', form, bearer ? { bearer } : {});
      expect(res.status, what).toBe(401);
      expect(res.body, what).toEqual({ error: 'invalid_client', error_description: expect.any(String) });
      expect(res.headers.get('cache-control'), what).toBe('no-store');
    }
    expect(await decide('rv-bot', t2)).toMatchObject({ decision: true });
  });

  it('another agent\'s assertion cannot revoke the token: 400 unauthorized_client, and the token keeps working', async () => {
    const t = remember(await issue('rv-bot'));
    const before = await node.eventCount();
    const res = await revokeAsAgent('rv-other', t);
    expect(res.status).toBe(400);
    expect(res.body).toEqual({ error: 'unauthorized_client', error_description: expect.any(String) });
    expect(await decide('rv-bot', t)).toMatchObject({ decision: true });
    expect(await node.eventCount()).toBe(before);
  });

  it('a token Leash did not issue (the agent\'s own) is 400 unsupported_token_type, not a 200 that would look like a revocation', async () => {
    const now = nowSeconds();
    const own = await new SignJWT({ iss: 'https://idp.example', sub: 'rv-bot', aud: 'leash', iat: now, exp: now + 60, jti: 'own-1', authorization_details: readInvoices })
      .setProtectedHeader({ alg: 'ES256', kid: 'k1', typ: 'at+jwt' }).sign(agentPrivateKey);
    const res = await revokeAsOperator(own);
    expect(res).toMatchObject({ status: 400, body: { error: 'unsupported_token_type' } });
  });

  it('hostile inputs get their OAuth error', async () => {
    const t = remember(await issue('rv-bot'));
    const as = async () => ({ client_assertion_type: ASSERTION_TYPE, client_assertion: await assertion('rv-bot') });
    const cases: [string, Parameters<typeof post>, number, string][] = [
      ['missing token', ['/oauth/revoke', await as()], 400, 'invalid_request'],
      ['empty token', ['/oauth/revoke', { token: '', ...(await as()) }], 400, 'invalid_request'],
      ['a NUL in the token', ['/oauth/revoke', { token: `${t}\u0000`, ...(await as()) }], 400, 'invalid_request'],
      ['a repeated token', ['/oauth/revoke', [['token', t], ['token', t], ...Object.entries(await as())]], 400, 'invalid_request'],
      ['a body over 24 KiB', ['/oauth/revoke', { token: 'x'.repeat(30_000), ...(await as()) }], 400, 'invalid_request'],
      ['a JSON body', ['/oauth/revoke', {}, { contentType: 'application/json', body: JSON.stringify({ token: t }) }], 400, 'invalid_request'],
      ['text/plain', ['/oauth/revoke', {}, { contentType: 'text/plain', body: `token=${t}` }], 400, 'invalid_request'],
      ['both the operator token and an assertion', ['/oauth/revoke', { token: t, ...(await as()) }, { bearer: ADMIN_TOKEN }], 400, 'invalid_request'],
    ];
    const before = await node.eventCount();
    for (const [what, args, status, error] of cases) {
      const res = await post(...args);
      expect(res.status, what).toBe(status);
      expect(res.body?.error, what).toBe(error);
    }
    // A huge token within the form limit is no Leash token: nothing to revoke.
    expect((await revokeAsOperator('x'.repeat(20_000))).status).toBe(200);
    expect(await node.eventCount()).toBe(before);
    expect(await decide('rv-bot', t)).toMatchObject({ decision: true });
  });
});

describe('POST /oauth/introspect', () => {
  it('an active token shows its claims', async () => {
    const t = remember(await issue('rv-bot'));
    const res = await introspect(t);
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toBe('no-store');
    const c = decodeJwt(t);
    expect(res.body).toEqual({
      active: true, iss: ISSUER, sub: 'rv-bot', aud: 'leash', client_id: 'rv-bot', iat: c.iat, exp: c.exp, jti: c.jti, authorization_details: readInvoices, token_type: 'Bearer',
    });
    expect((await introspect(t, ADMIN_TOKEN)).body).toMatchObject({ active: true });
  });

  it('a delegated token shows its act chain, and is inactive once an agent above the acting one is suspended', async () => {
    const t = remember(await leashToken({ sub: 'alice', client_id: 'rv-parent', act: { sub: 'rv-child', act: { sub: 'rv-parent' } } }));
    expect((await introspect(t)).body).toMatchObject({ active: true, sub: 'alice', act: { sub: 'rv-child', act: { sub: 'rv-parent' } } });
    expect(await decide('rv-child', t)).toMatchObject({ decision: true });
    expect((await node.api('POST', '/v1/agents/rv-parent/suspend', { reason: 'test' })).status).toBe(200);
    expect((await introspect(t)).body).toEqual({ active: false });
    expect(await decide('rv-child', t)).toMatchObject({ decision: false, context: { code: 'DELEGATION_CHAIN_BROKEN' } });
  });

  it('is inactive for whatever a decision would refuse at layer token', async () => {
    const tokens = {
      suspended: await issue('rv-suspend'), revoked: await issue('rv-revoke'), retired: await issue('rv-retire'), quarantined: await issue('rv-quarantine'),
      rotated: await issue('rv-rotate'), revokedJti: await issue('rv-bot'),
    };
    for (const t of Object.values(tokens)) expect((await introspect(remember(t))).body).toMatchObject({ active: true });
    expect((await node.api('POST', '/v1/agents/rv-suspend/suspend', { reason: 'x' })).status).toBe(200);
    expect((await node.api('POST', '/v1/agents/rv-revoke/revoke', { mode: 'immediate', reason: 'x' })).status).toBe(200);
    expect((await node.api('POST', '/v1/agents/rv-retire/retire', { reason: 'x' })).status).toBe(200);
    expect((await node.api('POST', '/v1/agents/rv-quarantine/revoke', { mode: 'quarantine', reason: 'x' })).status).toBe(200);
    expect((await node.api('POST', '/v1/agents/rv-rotate/rotate', { credentials: credentials() })).status).toBe(200);
    expect((await revokeAsOperator(tokens.revokedJti)).status).toBe(200);
    for (const [what, t] of Object.entries(tokens)) expect((await introspect(t)).body, what).toEqual({ active: false });

    const [h, p] = (await issue('rv-bot')).split('.');
    const inactive = {
      garbage: 'not-a-token',
      badSignature: `${h}.${p}.${Buffer.from('x'.repeat(64)).toString('base64url')}`,
      expired: await leashToken({ sub: 'rv-bot', client_id: 'rv-bot', iat: nowSeconds() - 400, exp: nowSeconds() - 100 }),
      notLeash: await new SignJWT({ iss: 'https://idp.example', sub: 'rv-bot', aud: 'leash', iat: nowSeconds(), exp: nowSeconds() + 60 }).setProtectedHeader({ alg: 'ES256', kid: 'k1' }).sign(agentPrivateKey),
      unknownAgent: await leashToken({ sub: 'nobody', client_id: 'nobody' }),
      huge: 'x'.repeat(20_000),
    };
    for (const [what, t] of Object.entries(inactive)) expect((await introspect(t)).body, what).toEqual({ active: false });
  });

  it('hostile inputs and callers', async () => {
    const t = remember(await issue('rv-bot'));
    expect(await post('/oauth/introspect', { token: t })).toMatchObject({ status: 401, body: { error: 'invalid_client' } });
    expect(await post('/oauth/introspect', { token: t }, { bearer: 'wrong-token' })).toMatchObject({ status: 401, body: { error: 'invalid_client' } });
    expect(await post('/oauth/introspect', {}, { bearer: PEP_TOKEN })).toMatchObject({ status: 400, body: { error: 'invalid_request' } });
    expect(await post('/oauth/introspect', [['token', t], ['token', t]], { bearer: PEP_TOKEN })).toMatchObject({ status: 400, body: { error: 'invalid_request' } });
    expect(await post('/oauth/introspect', { token: `${t}\u0000` }, { bearer: PEP_TOKEN })).toMatchObject({ status: 400, body: { error: 'invalid_request' } });
    expect(await post('/oauth/introspect', {}, { bearer: PEP_TOKEN, contentType: 'application/json', body: JSON.stringify({ token: t }) })).toMatchObject({ status: 400, body: { error: 'invalid_request' } });
    expect(await post('/oauth/introspect', {}, { bearer: PEP_TOKEN, contentType: 'text/plain', body: `token=${t}` })).toMatchObject({ status: 400, body: { error: 'invalid_request' } });
  });
});

describe('secrets', () => {
  it('no raw token or assertion is in an event or a log line', async () => {
    expect(issuedTokens.length).toBeGreaterThan(10);
    const events = JSON.stringify(await node.store.readAll(0, 1_000_000));
    const text = logs.join('');
    for (const t of issuedTokens) {
      const signature = t.split('.')[2]!;
      expect(events.includes(signature)).toBe(false);
      expect(text.includes(signature)).toBe(false);
    }
  });
});
