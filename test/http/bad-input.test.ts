import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freshPostgres } from '../support/backends.ts';
import { ADMIN_TOKEN, agentBody, credentials, publicJwk, seedPrincipals, startTestNode, type TestNode } from '../support/node.ts';

// Every refusal is problem+json with a stable code, and nothing reaches the log.

let node: TestNode;

beforeAll(async () => {
  node = await startTestNode(await freshPostgres());
  await seedPrincipals(node);
  expect((await node.api('POST', '/v1/agents', agentBody({ id: 'existing-bot' }))).status).toBe(201);
});
afterAll(async () => node?.close());

async function expectRefused(res: Promise<{ status: number; headers: Record<string, unknown>; body: any }>, status: number, code: string) {
  const before = await node.eventCount();
  const r = await res;
  expect(r.status, JSON.stringify(r.body)).toBe(status);
  expect(r.headers['content-type']).toMatch(/^application\/problem\+json/);
  expect(r.body).toMatchObject({ status, code, type: expect.any(String), title: expect.any(String) });
  expect(await node.eventCount()).toBe(before);
  return r.body;
}

describe('operator authentication', () => {
  it.each([
    ['no Authorization header', null, undefined],
    ['a wrong token', 'not-the-operator-token-at-all', undefined],
    ['a token one character short', ADMIN_TOKEN.slice(0, -1), undefined],
    ['Basic instead of Bearer', null, { authorization: `Basic ${ADMIN_TOKEN}` }],
    ['an empty bearer', null, { authorization: 'Bearer ' }],
  ])('%s is 401 UNAUTHENTICATED on reads and writes', async (_name, token, headers) => {
    const get = await node.api('GET', '/v1/agents', undefined, headers ?? {}, token);
    expect(get.status).toBe(401);
    expect(get.headers['www-authenticate']).toMatch(/^Bearer/);
    expect(get.body.code).toBe('UNAUTHENTICATED');
    await expectRefused(node.api('POST', '/v1/humans', { id: 'mallory', email: 'm@example.com' }, headers ?? {}, token), 401, 'UNAUTHENTICATED');
  });

  it('health, readiness and the OpenAPI document are public', async () => {
    expect((await node.api('GET', '/healthz', undefined, {}, null)).status).toBe(200);
    expect((await node.api('GET', '/readyz', undefined, {}, null)).body).toMatchObject({ ready: true, checks: { log: { ok: true }, policies: { ok: true } } });
    const doc = await node.api('GET', '/openapi.json', undefined, {}, null);
    expect(doc.body.openapi).toBe('3.1.0');
    expect(Object.keys(doc.body.paths)).toEqual(expect.arrayContaining(['/v1/agents', '/v1/agents/{id}/revoke', '/v1/humans', '/v1/groups']));
  });
});

describe('malformed bodies', () => {
  it('a refusal names the property that is not allowed, and lists the values that are', async () => {
    const unknown = await expectRefused(node.api('POST', '/v1/agents', agentBody({ id: 'x1', admin: true })), 400, 'VALIDATION_FAILED');
    expect(unknown.detail).toBe('body has a property that is not allowed: "admin"');
    const choice = await expectRefused(node.api('POST', '/v1/agents', agentBody({ id: 'x1', provenance: { model: 'm', modelVersion: '1', environment: 'prod' } })), 400, 'VALIDATION_FAILED');
    expect(choice.errors).toEqual([{ path: 'body/provenance/environment', message: 'must be one of "production", "staging", "sandbox"' }]);
    const mode = await expectRefused(node.api('POST', '/v1/agents/existing-bot/revoke', { mode: 'nuke', reason: 'r' }), 400, 'VALIDATION_FAILED');
    expect(mode.detail).toBe('body/mode must be one of "immediate", "graceful", "quarantine"');
  });

  it('an unknown field is VALIDATION_FAILED, not silently dropped', async () => {
    await expectRefused(node.api('POST', '/v1/agents', agentBody({ id: 'x1', admin: true })), 400, 'VALIDATION_FAILED');
    await expectRefused(node.api('POST', '/v1/agents', agentBody({ id: 'x1', provenance: { model: 'm', modelVersion: '1', environment: 'production', extra: 1 } })), 400, 'VALIDATION_FAILED');
  });

  it.each([
    ['trustScore as a string', { trustScore: '60' }],
    ['trustScore out of range', { trustScore: 101 }],
    ['trustScore fractional', { trustScore: 6.5 }],
    ['tags not an array', { tags: 'finance' }],
    ['environment not in the enum', { provenance: { model: 'm', modelVersion: '1', environment: 'prod' } }],
    ['purpose empty', { purpose: '' }],
    ['owner missing', { owner: undefined }],
    ['an algorithm Leash never accepts (none)', { credentials: credentials({ algorithms: ['none'] }) }],
    ['an HMAC algorithm', { credentials: credentials({ algorithms: ['HS256'] }) }],
    ['clock skew beyond five minutes', { credentials: credentials({ clockSkewSeconds: 3600 }) }],
  ])('%s is VALIDATION_FAILED', async (_name, override) => {
    await expectRefused(node.api('POST', '/v1/agents', agentBody({ id: 'x2', ...override })), 400, 'VALIDATION_FAILED');
  });

  it('ids with quotes, slashes, spaces, unicode or over 128 characters are refused', async () => {
    for (const id of ["o'brien", 'a"b', 'a/b', 'a b', 'agént', '🤖', '', 'x'.repeat(129), '../etc']) {
      await expectRefused(node.api('POST', '/v1/agents', agentBody({ id })), 400, 'VALIDATION_FAILED');
      await expectRefused(node.api('POST', '/v1/humans', { id, email: 'x@example.com' }), 400, 'VALIDATION_FAILED');
    }
    for (const path of ['a%2Fb', 'a%22b', '%F0%9F%A4%96', 'a%20b']) {
      await expectRefused(node.api('POST', `/v1/agents/${path}/retire`, { reason: 'x' }), 400, 'VALIDATION_FAILED');
    }
  });

  it('a body over 64 KiB is PAYLOAD_TOO_LARGE', async () => {
    await expectRefused(node.api('POST', '/v1/agents', agentBody({ id: 'big', purpose: 'x'.repeat(70 * 1024) })), 413, 'PAYLOAD_TOO_LARGE');
  });

  it('text Postgres cannot store (NUL, lone surrogate) is VALIDATION_FAILED, not a 500', async () => {
    const nul = await expectRefused(node.api('POST', '/v1/agents', agentBody({ id: 'nul', purpose: 'a\u0000b' })), 400, 'VALIDATION_FAILED');
    expect(nul.detail).toMatch(/\/purpose contains a NUL/);
    // A complete, otherwise valid body whose purpose is an unpaired surrogate escape.
    const raw = JSON.stringify(agentBody({ id: 'sur', purpose: 'SURROGATE' })).replace('SURROGATE', '\\ud800');
    const sur = await expectRefused(node.api('POST', '/v1/agents', raw), 400, 'VALIDATION_FAILED');
    expect(sur.detail).toMatch(/\/purpose contains/);
  });

  it('broken JSON, an empty body and a non-JSON content type are refused', async () => {
    await expectRefused(node.api('POST', '/v1/humans', '{"id": "x",'), 400, 'VALIDATION_FAILED');
    await expectRefused(node.api('POST', '/v1/humans', '', { 'content-type': 'application/json' }), 400, 'VALIDATION_FAILED');
    await expectRefused(node.api('POST', '/v1/humans', 'id=x', { 'content-type': 'application/x-www-form-urlencoded' }), 415, 'UNSUPPORTED_MEDIA_TYPE');
    await expectRefused(node.api('POST', '/v1/humans', '[1,2]'), 400, 'VALIDATION_FAILED');
  });

  it('a malformed If-Match or Idempotency-Key header is VALIDATION_FAILED', async () => {
    await expectRefused(node.api('POST', '/v1/agents/existing-bot/authorize', { grants: [] }, { 'if-match': 'abc' }), 400, 'VALIDATION_FAILED');
    await expectRefused(node.api('POST', '/v1/agents/existing-bot/authorize', { grants: [] }, { 'idempotency-key': 'x'.repeat(201) }), 400, 'VALIDATION_FAILED');
  });

  it('an unknown route is NOT_FOUND as problem+json', async () => {
    await expectRefused(node.api('GET', '/v1/nothing-here'), 404, 'NOT_FOUND');
  });
});

describe('references and duplicates', () => {
  it('an owner who is not a registered human is UNKNOWN_OWNER', async () => {
    const body = await expectRefused(node.api('POST', '/v1/agents', agentBody({ id: 'orphan', owner: 'ghost' })), 422, 'UNKNOWN_OWNER');
    expect(body.owner).toBe('ghost');
  });

  it('a group that does not exist is UNKNOWN_GROUP, for agents, humans and group parents', async () => {
    await expectRefused(node.api('POST', '/v1/agents', agentBody({ id: 'lost', groups: ['finance-agents', 'nope'] })), 422, 'UNKNOWN_GROUP');
    await expectRefused(node.api('POST', '/v1/humans', { id: 'erin', email: 'erin@example.com', groups: ['nope'] }), 422, 'UNKNOWN_GROUP');
    await expectRefused(node.api('POST', '/v1/groups', { id: 'child', parents: ['nope'] }), 422, 'UNKNOWN_GROUP');
  });

  it('the same id registered twice is 409, naming the current state for agents', async () => {
    const body = await expectRefused(node.api('POST', '/v1/agents', agentBody({ id: 'existing-bot' })), 409, 'INVALID_TRANSITION');
    expect(body.currentState).toBe('registered');
    await expectRefused(node.api('POST', '/v1/humans', { id: 'alice', email: 'other@example.com' }), 409, 'ALREADY_EXISTS');
    await expectRefused(node.api('POST', '/v1/groups', { id: 'finance' }), 409, 'ALREADY_EXISTS');
    await expectRefused(node.api('POST', '/v1/agents/discover', { id: 'existing-bot', source: 's', fingerprint: 'f' }), 409, 'INVALID_TRANSITION');
  });
});

describe('credential pins', () => {
  it.each([
    ['a private key', { jwks: { keys: [{ ...publicJwk, d: 'c2VjcmV0' }] } }],
    ['a symmetric key', { jwks: { keys: [{ kty: 'oct', k: 'c2VjcmV0' }] } }],
    ['a key that is not a key', { jwks: { keys: [{ kty: 'EC', crv: 'P-256', x: 'AAAA', y: 'AAAA' }] } }],
    ['a key for an algorithm that is not pinned', { algorithms: ['RS256'] }],
    ['both jwks and jwksUri', { jwksUri: 'https://idp.example/jwks' }],
    ['neither jwks nor jwksUri', { jwks: undefined }],
    ['a plain-http JWKS URL', { jwks: undefined, jwksUri: 'http://idp.example/jwks' }],
    ['a JWKS URL with credentials in it', { jwks: undefined, jwksUri: 'https://user:pw@idp.example/jwks' }],
  ])('%s is INVALID_CREDENTIALS, on register and on rotate', async (_name, override) => {
    await expectRefused(node.api('POST', '/v1/agents', agentBody({ id: 'pinned', credentials: credentials(override) })), 422, 'INVALID_CREDENTIALS');
    await expectRefused(node.api('POST', '/v1/agents/existing-bot/rotate', { credentials: credentials(override) }), 422, 'INVALID_CREDENTIALS');
  });

  it('a JWKS URL over https is accepted', async () => {
    const res = await node.api('POST', '/v1/agents', agentBody({ id: 'remote-keys', credentials: credentials({ jwks: undefined, jwksUri: 'https://idp.example/.well-known/jwks.json' }) }));
    expect(res.status).toBe(201);
  });
});
