import { Writable } from 'node:stream';
import { decodeJwt, decodeProtectedHeader, exportJWK, generateKeyPair, SignJWT, type JWTPayload } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stackFrames } from '../../src/http/routes/oauth.ts';
import { claimAssertionJti, pruneAssertionJtis } from '../../src/store/assertion-jtis.ts';
import { PEP_TOKEN, agentBody, agentPrivateKey, decideOverHttp, seedPrincipals, startTestNode, type TestNode } from '../support/node.ts';

// Leash issues agents' tokens, on the embedded default (PGlite), driven with plain fetch and
// form bodies as any OAuth client would: metadata, JWKS, the token endpoint with a
// private_key_jwt client assertion, every refusal with its OAuth error code, and the token
// used at the decision API.

const ISSUER = 'http://127.0.0.1:8080'; // LEASH_PUBLIC_URL as the test node has it (not the port it listens on)
const TOKEN_ENDPOINT = `${ISSUER}/oauth/token`;
const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const folder = (id: string) => ({ type: 'Folder', id });
const readInvoices = [{ type: 'leash:cedar', actions: ['read'], resourceIn: folder('invoices') }];
const writeInvoices = [{ type: 'leash:cedar', actions: ['write'], resourceIn: folder('invoices') }];
const nowSeconds = () => Math.floor(Date.now() / 1000);

const other = await generateKeyPair('ES256', { extractable: true });
const otherJwk = { ...(await exportJWK(other.publicKey)), alg: 'ES256', kid: 'k2' };

let node: TestNode;
let url: string;
const logs: string[] = [];

/** A client assertion for `agent` (iss = sub = agent, aud = the issuer, 60 s, a fresh jti), as overridden. */
async function assertion(agent: string, claims: JWTPayload = {}, o: { key?: CryptoKeyLike; kid?: string; omit?: string[] } = {}): Promise<string> {
  const now = nowSeconds();
  const body: Record<string, unknown> = { iss: agent, sub: agent, aud: ISSUER, iat: now, exp: now + 60, jti: crypto.randomUUID(), ...claims };
  for (const k of o.omit ?? []) delete body[k];
  return new SignJWT(body).setProtectedHeader({ alg: 'ES256', kid: o.kid ?? 'k1' }).sign(o.key ?? agentPrivateKey);
}
type CryptoKeyLike = Parameters<SignJWT['sign']>[0];

/** POST /oauth/token with a form body; pairs keep repeats and order. */
async function token(form: Record<string, string> | [string, string][], init: { contentType?: string; body?: string } = {}) {
  const res = await fetch(`${url}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': init.contentType ?? 'application/x-www-form-urlencoded' },
    body: init.body ?? new URLSearchParams(form).toString(),
  });
  return { status: res.status, headers: res.headers, body: (await res.json()) as Record<string, any> };
}

const grant = async (agent: string, details: unknown = readInvoices, extra: Record<string, string> = {}) => ({
  grant_type: 'client_credentials', client_assertion_type: ASSERTION_TYPE, client_assertion: await assertion(agent), authorization_details: JSON.stringify(details), ...extra,
});

const decide = (agent: string, accessToken: string, action: string, doc: string) => decideOverHttp(url, agent, accessToken, action, doc);

beforeAll(async () => {
  const logStream = new Writable({ write: (chunk, _enc, done) => void (logs.push(String(chunk)), done()) });
  // PGlite in memory: the embedded default's database and migrations, without a data directory to write.
  node = await startTestNode({ kind: 'pglite', dataDir: null }, { logger: { level: 'info', stream: logStream } });
  await seedPrincipals(node);
  const ceiling = { template: 'ceiling-folder', values: { '?resource': folder('invoices') } };
  const register = async (id: string, overrides: Record<string, unknown> = {}) => {
    expect((await node.api('POST', '/v1/agents', agentBody({ id, groups: ['finance'], ceiling, ...overrides }))).status).toBe(201);
    expect((await node.api('POST', `/v1/agents/${id}/authorize`, { grants: [] })).status).toBe(200);
  };
  await register('oauth-bot');
  await register('oauth-short', { credentials: { ...agentBody().credentials, maxTokenLifetimeSeconds: 60 } });
  await register('oauth-suspended');
  expect((await node.api('POST', '/v1/agents/oauth-suspended/suspend', { reason: 'anomaly' })).status).toBe(200);
  await register('oauth-no-ceiling', { ceiling: null });
  await node.app.listen({ port: 0, host: '127.0.0.1' });
  url = `http://127.0.0.1:${(node.app.server.address() as { port: number }).port}`;
});
afterAll(async () => node?.close());

describe('metadata and keys', () => {
  it('the metadata names the issuer and every endpoint under LEASH_PUBLIC_URL, whatever Host the caller sends', async () => {
    const res = await fetch(`${url}/.well-known/oauth-authorization-server`, { headers: { host: 'evil.example', 'x-forwarded-host': 'evil.example' } });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({
      issuer: ISSUER,
      token_endpoint: TOKEN_ENDPOINT,
      jwks_uri: `${ISSUER}/.well-known/jwks.json`,
      introspection_endpoint: `${ISSUER}/oauth/introspect`,
      revocation_endpoint: `${ISSUER}/oauth/revoke`,
      grant_types_supported: ['client_credentials', 'urn:ietf:params:oauth:grant-type:token-exchange'],
      token_endpoint_auth_methods_supported: ['private_key_jwt'],
      token_endpoint_auth_signing_alg_values_supported: ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'],
      authorization_details_types_supported: ['leash:cedar'],
    });
  });

  it('the JWKS holds this node\'s public key, with kid, alg and use, and no private member', async () => {
    const jwks = (await (await fetch(`${url}/.well-known/jwks.json`)).json()) as { keys: Record<string, unknown>[] };
    expect(jwks.keys).toHaveLength(1);
    const [key] = jwks.keys;
    expect(key).toMatchObject({ kty: 'EC', crv: 'P-256', kid: node.signer.kid, alg: 'ES256', use: 'sig' });
    expect(Object.keys(key!).sort()).toEqual(['alg', 'crv', 'kid', 'kty', 'use', 'x', 'y']);
    for (const secret of ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k']) expect(key).not.toHaveProperty(secret);
    // The projection the document is served from holds exactly the public members too (the response schema is a second guard).
    for (const k of node.keys.jwks().keys) expect(Object.keys(k).sort()).toEqual(['alg', 'crv', 'kid', 'kty', 'use', 'x', 'y']);
  });
});

describe('POST /oauth/token', () => {
  it('issues an RFC 9068 access token for an agent\'s client assertion, which the decision API accepts within its details', async () => {
    const before = nowSeconds();
    const res = await token(await grant('oauth-bot'));
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.headers.get('cache-control')).toBe('no-store');
    expect(res.headers.get('pragma')).toBe('no-cache');
    expect(res.body).toEqual({ access_token: expect.any(String), token_type: 'Bearer', expires_in: 300, authorization_details: readInvoices });
    const accessToken = res.body.access_token as string;
    expect(decodeProtectedHeader(accessToken)).toEqual({ alg: 'ES256', typ: 'at+jwt', kid: node.signer.kid });
    const claims = decodeJwt(accessToken);
    expect(claims).toEqual({
      iss: ISSUER, sub: 'oauth-bot', aud: 'leash', client_id: 'oauth-bot', iat: expect.any(Number), exp: claims.iat! + 300, jti: expect.any(String), authorization_details: readInvoices,
    });
    expect(claims.iat).toBeGreaterThanOrEqual(before);

    // Allowed: its details cover reading d1, the ceiling, the agent and its human allow it.
    expect(await decide('oauth-bot', accessToken, 'read', 'd1')).toMatchObject({ decision: true, context: { layer: 'all' } });
    // The same token again (the verified-token cache), still allowed.
    expect(await decide('oauth-bot', accessToken, 'read', 'd1')).toMatchObject({ decision: true });
    // Denied: the details do not cover writing, nor anything outside invoices.
    expect(await decide('oauth-bot', accessToken, 'write', 'd1')).toMatchObject({ decision: false, context: { layer: 'details', code: 'DETAILS_NOT_COVERING' } });
    expect(await decide('oauth-bot', accessToken, 'read', 'r1')).toMatchObject({ decision: false, context: { layer: 'details', code: 'DETAILS_NOT_COVERING' } });
    // For another agent it is not.
    expect(await decide('oauth-no-ceiling', accessToken, 'read', 'd1')).toMatchObject({ decision: false, context: { layer: 'token', code: 'TOKEN_SUBJECT_MISMATCH' } });
  });

  it('every layer applies to a Leash token as to the agent\'s own: writing is within the ceiling, but no policy lets the agent write', async () => {
    const res = await token(await grant('oauth-bot', writeInvoices));
    expect(res.status).toBe(200);
    expect(await decide('oauth-bot', res.body.access_token, 'write', 'd1')).toMatchObject({ decision: false, context: { layer: 'agent' } });
  });

  it('resource becomes aud; the assertion may name the token endpoint as its audience; the lifetime never passes the agent\'s maximum', async () => {
    const form = { ...(await grant('oauth-short')), client_assertion: await assertion('oauth-short', { aud: TOKEN_ENDPOINT }), resource: 'https://api.example/invoices' };
    const res = await token(form);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.expires_in).toBe(60);
    const claims = decodeJwt(res.body.access_token);
    expect(claims).toMatchObject({ aud: 'https://api.example/invoices', sub: 'oauth-short' });
    expect(claims.exp! - claims.iat!).toBe(60);
    expect(await decide('oauth-short', res.body.access_token, 'read', 'd1')).toMatchObject({ decision: true });
  });

  it('a Leash token stops working when its agent is suspended (the cached verification goes with the agent\'s version)', async () => {
    expect((await node.api('POST', '/v1/agents', agentBody({ id: 'oauth-later', groups: ['finance'], ceiling: { template: 'ceiling-folder', values: { '?resource': folder('invoices') } } }))).status).toBe(201);
    expect((await node.api('POST', '/v1/agents/oauth-later/authorize', { grants: [] })).status).toBe(200);
    const res = await token(await grant('oauth-later'));
    expect(await decide('oauth-later', res.body.access_token, 'read', 'd1')).toMatchObject({ decision: true });
    expect((await node.api('POST', '/v1/agents/oauth-later/suspend', { reason: 'x' })).status).toBe(200);
    expect(await decide('oauth-later', res.body.access_token, 'read', 'd1')).toMatchObject({ decision: false, context: { layer: 'token', code: 'AGENT_NOT_ACTIVE' } });
  });

  it('an agent cannot sign as Leash: a token with Leash\'s issuer is checked against Leash\'s keys only', async () => {
    const now = nowSeconds();
    const forged = await new SignJWT({ client_id: 'oauth-bot', jti: crypto.randomUUID(), authorization_details: readInvoices })
      .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: node.signer.kid! }).setIssuer(ISSUER).setAudience('leash').setSubject('oauth-bot')
      .setIssuedAt(now).setExpirationTime(now + 60).sign(agentPrivateKey);
    expect(await decide('oauth-bot', forged, 'read', 'd1')).toMatchObject({ decision: false, context: { layer: 'token', code: 'TOKEN_BAD_SIGNATURE' } });
  });
});

describe('refusals, each with its OAuth error', () => {
  const refused = async (form: Record<string, string> | [string, string][], error: string, status = 400, init: { contentType?: string; body?: string } = {}) => {
    const res = await token(form, init);
    expect(res.body.error, JSON.stringify(res.body)).toBe(error);
    expect(res.status).toBe(status);
    expect(typeof res.body.error_description).toBe('string');
    expect(Object.keys(res.body).sort()).toEqual(['error', 'error_description']);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    expect(res.headers.get('cache-control')).toBe('no-store');
    return res;
  };
  const withAssertion = async (value: string, agent = 'oauth-bot') => ({ ...(await grant(agent)), client_assertion: value });

  it('invalid_client: the client assertion is missing, of another type, not a JWT, or badly signed', async () => {
    const { client_assertion: _, ...noAssertion } = await grant('oauth-bot');
    await refused(noAssertion, 'invalid_client', 401);
    await refused({ ...(await grant('oauth-bot')), client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:saml2-bearer' }, 'invalid_client', 401);
    await refused(await withAssertion('not-a-jwt'), 'invalid_client', 401);
    // One signature byte changed.
    const good = await assertion('oauth-bot');
    const [h, p, sig] = good.split('.') as [string, string, string];
    const flipped = `${h}.${p}.${sig[0] === 'A' ? 'B' : 'A'}${sig.slice(1)}`;
    await refused(await withAssertion(flipped), 'invalid_client', 401);
  });

  it('invalid_client: signed by a key that is not in the agent\'s pins (same kid, or another kid)', async () => {
    await refused(await withAssertion(await assertion('oauth-bot', {}, { key: other.privateKey })), 'invalid_client', 401);
    const res = await refused(await withAssertion(await assertion('oauth-bot', {}, { key: other.privateKey, kid: otherJwk.kid })), 'invalid_client', 401);
    expect(res.body.error_description).toMatch(/kid/);
  });

  it('invalid_client: aud is neither the issuer nor the token endpoint; iss or sub is not the agent', async () => {
    await refused(await withAssertion(await assertion('oauth-bot', { aud: 'https://elsewhere.example' })), 'invalid_client', 401);
    await refused(await withAssertion(await assertion('oauth-bot', { aud: `${url}/oauth/token` })), 'invalid_client', 401); // the address it listens on is not the public URL
    await refused(await withAssertion(await assertion('oauth-bot', { iss: 'https://idp.example' })), 'invalid_client', 401);
    await refused({ ...(await grant('oauth-bot')), client_id: 'oauth-short' }, 'invalid_client', 401);
  });

  it('invalid_client: expired, or valid for more than 5 minutes, or without a jti', async () => {
    const now = nowSeconds();
    await refused(await withAssertion(await assertion('oauth-bot', { iat: now - 600, exp: now - 120 })), 'invalid_client', 401);
    const res = await refused(await withAssertion(await assertion('oauth-bot', { exp: now + 600 })), 'invalid_client', 401);
    expect(res.body.error_description).toMatch(/300 s/);
    await refused(await withAssertion(await assertion('oauth-bot', {}, { omit: ['jti'] })), 'invalid_client', 401);
    await refused(await withAssertion(await assertion('oauth-bot', { jti: 'x'.repeat(257) })), 'invalid_client', 401);
  });

  it('invalid_client: an assertion is used once; the same jti again is a replay, whatever else changed', async () => {
    const form = await grant('oauth-bot');
    expect((await token(form)).status).toBe(200);
    await refused(form, 'invalid_client', 401);
    const jti = decodeJwt(form.client_assertion).jti as string;
    await refused(await withAssertion(await assertion('oauth-bot', { jti })), 'invalid_client', 401);
    // Another agent may use the same jti: replay is per agent.
    expect((await token({ ...(await grant('oauth-short')), client_assertion: await assertion('oauth-short', { jti }) })).status).toBe(200);
  });

  it('invalid_client for an unknown agent; unauthorized_client for one that is not active', async () => {
    await refused(await grant('nobody-here'), 'invalid_client', 401);
    const res = await refused(await grant('oauth-suspended'), 'unauthorized_client');
    expect(res.body.error_description).toMatch(/suspended/);
  });

  it('invalid_authorization_details: malformed (wrong types, empty, huge, deep, NUL, not JSON) or of an unknown type', async () => {
    const cases: unknown[] = [
      { type: 'leash:cedar', actions: ['read'], resourceIn: folder('invoices') }, // an object, not an array
      [{ type: 'leash:cedar', actions: 'read', resourceIn: folder('invoices') }],
      [{ type: 'leash:cedar', actions: [7], resourceIn: folder('invoices') }],
      [{ type: 'leash:cedar', actions: ['read'], resourceIn: { type: 'Folder', id: 5 } }],
      [{ type: 'leash:cedar', actions: ['read'], resource: folder('a'), resourceIn: folder('invoices') }],
      [],
      Array.from({ length: 33 }, () => readInvoices[0]), // more entries than a token may carry
      [{ type: 'leash:cedar', actions: ['read'], resourceIn: folder('invoices'), note: 'x'.repeat(9000) }], // longer than a form value may be
      [{ type: 'leash:cedar', actions: ['read'], resourceIn: folder('invoices'), deep: JSON.parse('['.repeat(40) + ']'.repeat(40)) }],
      [{ type: 'leash:cedar', actions: ['re\u0000ad'], resourceIn: folder('invoices') }],
      [{ type: 'leash:cedar', actions: ['read'], resourceIn: folder('invoices\u0000') }],
      [{ type: 'leash:cedar', actions: ['read'], resourceIn: folder('invoices'), note: 'a\u0000b' }], // the decision log could not keep it
      [{ type: 'https://other.example/rar', actions: ['read'] }],
      [...readInvoices, { type: 'payment_initiation', instructedAmount: { currency: 'EUR', amount: '1' } }],
      [{ type: 'leash:cedar', actions: ['fly'], resourceIn: folder('invoices') }], // an action the schema does not know
    ];
    const through: string[] = [];
    for (const details of cases) {
      const res = await token(await grant('oauth-bot', details));
      if (res.body.error !== 'invalid_authorization_details' || res.status !== 400) through.push(`${JSON.stringify(details).slice(0, 120)} → ${res.status} ${res.body.error}`);
    }
    expect(through).toEqual([]);
    await refused({ ...(await grant('oauth-bot')), authorization_details: '[{"type":' }, 'invalid_authorization_details');
    await refused({ ...(await grant('oauth-bot')), authorization_details: '1e400' }, 'invalid_authorization_details');
  });

  it('invalid_authorization_details: one entry beyond the ceiling refuses the whole request, never a narrower token', async () => {
    const res = await refused(await grant('oauth-bot', [...readInvoices, { type: 'leash:cedar', actions: ['read'], resourceIn: folder('reports') }]), 'invalid_authorization_details');
    expect(res.body.error_description).toMatch(/never narrowed/);
    // A document whose place under invoices the registry does not know is not shown to be within it.
    await refused(await grant('oauth-bot', [{ type: 'leash:cedar', actions: ['read'], resource: { type: 'Document', id: 'd1' } }]), 'invalid_authorization_details');
    await refused(await grant('oauth-no-ceiling'), 'invalid_authorization_details');
  });

  it('invalid_request: no details, a repeated parameter, a JSON body, a body too large, a NUL in the form', async () => {
    const { authorization_details: _, ...noDetails } = await grant('oauth-bot');
    await refused(noDetails, 'invalid_request');
    const form = await grant('oauth-bot');
    await refused([...Object.entries(form), ['authorization_details', JSON.stringify(readInvoices)]], 'invalid_request');
    await refused([...Object.entries(form), ['grant_type', 'client_credentials']], 'invalid_request');
    await refused(form, 'invalid_request', 400, { contentType: 'application/json', body: JSON.stringify(form) });
    await refused(form, 'invalid_request', 400, { contentType: 'text/plain', body: new URLSearchParams(form).toString() });
    await refused({ ...form, padding: 'x'.repeat(30_000) }, 'invalid_request');
    await refused({ ...form, client_id: 'oauth\u0000bot' }, 'invalid_request');
    const { grant_type: __, ...noGrant } = form;
    await refused(noGrant, 'invalid_request');
    // The assertion was never used, so it still works.
    expect((await token(form)).status).toBe(200);
  });

  it('unsupported_grant_type for any grant but client_credentials and token exchange (token-exchange.test.ts)', async () => {
    await refused({ ...(await grant('oauth-bot')), grant_type: 'password' }, 'unsupported_grant_type');
    await refused({ ...(await grant('oauth-bot')), grant_type: 'authorization_code' }, 'unsupported_grant_type');
  });

  it('invalid_target: a resource that is not an absolute URI, has a fragment, or is given twice', async () => {
    for (const resource of ['not a uri', 'relative/path', 'https://api.example/#frag', `https://api.example/${'x'.repeat(2100)}`]) {
      await refused({ ...(await grant('oauth-bot')), resource }, 'invalid_target');
    }
    await refused([...Object.entries(await grant('oauth-bot')), ['resource', 'https://a.example'], ['resource', 'https://b.example']], 'invalid_target');
  });
});

describe('what is kept and logged', () => {
  it('no event, log line or error holds an assertion, an access token or a private key', async () => {
    const form = await grant('oauth-bot');
    const issued = await token(form);
    expect(issued.status).toBe(200);
    const replayed = await token(form);
    const events = JSON.stringify(await node.store.readAll(0, 100_000));
    const logged = logs.join('');
    expect(logged).toContain('/oauth/token'); // requests are logged…
    for (const secret of [form.client_assertion, issued.body.access_token as string, form.client_assertion.split('.')[2]!, (issued.body.access_token as string).split('.')[2]!]) {
      expect(events).not.toContain(secret);
      expect(logged).not.toContain(secret); // …never what they carry
      expect(JSON.stringify(replayed.body)).not.toContain(secret);
    }
    const keyEvents = (await node.store.readAll(0, 100_000)).filter((e) => e.type === 'SigningKeyPublished');
    expect(keyEvents.length).toBeGreaterThan(0);
    for (const e of keyEvents) expect(Object.keys(e.data.jwk).sort()).toEqual(['alg', 'crv', 'kid', 'kty', 'use', 'x', 'y']);
    expect(JSON.stringify(node.signer)).not.toMatch(/"d"/);
  });
});

describe('an unexpected failure at the token endpoint, as logged', () => {
  it('names where it was thrown, never what its message quotes, even a line of it made to look like a frame', () => {
    const assertion = 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl';
    const err = new Error(`bad form: client_assertion=${assertion}\n    at ${assertion}\n    at also-quoted (${'x'.repeat(10_000)})`);
    const frames = stackFrames(err);
    expect(frames.length).toBeGreaterThan(0);
    expect(frames.join('\n')).not.toContain(assertion);
    expect(frames.join('\n')).not.toContain('also-quoted');
    expect(frames.every((f) => f.startsWith('at ') && f.length <= 200)).toBe(true);
    // A long stack is cut: at most 12 frames.
    const deep = (n: number): Error => (n === 0 ? new Error('deep') : deep(n - 1));
    const long = deep(40);
    long.stack = long.stack!.split('\n').concat(Array.from({ length: 40 }, (_, i) => `    at frame${i} (file.ts:${i})`)).join('\n');
    expect(stackFrames(long)).toHaveLength(12);
    expect(stackFrames({ message: 'no stack' })).toEqual([]);
  });
});

describe('the replay table', () => {
  it('one use per (agent, jti) until it expires, then the jti is free again; pruning removes expired rows', async () => {
    const db = node.connection.db;
    const t = Date.now();
    const at = (s: number) => new Date(t + s * 1000);
    expect(await claimAssertionJti(db, 'a', 'j', at(60), at(0))).toBe(true);
    expect(await claimAssertionJti(db, 'a', 'j', at(120), at(30))).toBe(false);
    expect(await claimAssertionJti(db, 'b', 'j', at(60), at(30))).toBe(true);
    expect(await claimAssertionJti(db, 'a', 'j', at(200), at(61))).toBe(true);
    expect(await pruneAssertionJtis(db, at(100))).toBeGreaterThanOrEqual(1); // b's row
    expect(await claimAssertionJti(db, 'a', 'j', at(300), at(150))).toBe(false);
  });
});
