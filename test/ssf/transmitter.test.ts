import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freshPglite, freshPostgres } from '../support/backends.ts';
import { agentBody, ADMIN_TOKEN, clientAssertionOf, seedPrincipals, startTestNode, type TestNode } from '../support/node.ts';
import { pay, payToken, registerPayBot } from '../support/payments.ts';
import { PushReceiver, verifySet, eventually } from './receiver.ts';

// Leash as a Shared Signals transmitter: streams managed over the SSF API, SETs pushed to a
// receiver (RFC 8935) or polled (RFC 8936), every one verified as a receiver would, with jose's
// jwtVerify against the published JWKS.

const ISSUER = 'http://127.0.0.1:8080';
const SESSION_REVOKED = 'https://schemas.openid.net/secevent/caep/event-type/session-revoked';
const TOKEN_CLAIMS_CHANGE = 'https://schemas.openid.net/secevent/caep/event-type/token-claims-change';
const CREDENTIAL_CHANGE = 'https://schemas.openid.net/secevent/caep/event-type/credential-change';
const VERIFICATION = 'https://schemas.openid.net/secevent/ssf/event-type/verification';
const examples = JSON.parse(readFileSync(new URL('./spec-examples.json', import.meta.url), 'utf8')).examples as Record<string, Record<string, any>[]>;


const register = async (node: TestNode, id: string) => {
  const res = await node.api('POST', '/v1/agents', agentBody({ id }));
  expect(res.status, JSON.stringify(res.body)).toBe(201);
};
const revoke = (node: TestNode, id: string, reason = 'compromised') => node.api('POST', `/v1/agents/${id}/revoke`, { mode: 'immediate', reason });

async function claimsOf(node: TestNode, sets: string[], audience: string) {
  const jwks = (await node.api('GET', '/.well-known/jwks.json', undefined, {}, null)).body;
  return Promise.all(sets.map((s) => verifySet(s, jwks, { issuer: ISSUER, audience })));
}

describe('the transmitter, pushing (RFC 8935)', () => {
  let node: TestNode;
  const receiver = new PushReceiver();
  let endpoint: string;
  let streamId: string;

  beforeAll(async () => {
    node = await startTestNode(freshPglite());
    await seedPrincipals(node);
    endpoint = await receiver.start();
    const created = await node.api('POST', '/ssf/stream', {
      delivery: { method: 'urn:ietf:rfc:8935', endpoint_url: endpoint, authorization_header: 'Bearer receiver-secret-4711' },
      events_requested: [SESSION_REVOKED, TOKEN_CLAIMS_CHANGE, CREDENTIAL_CHANGE, 'urn:example:not-a-leash-event'],
      description: 'the SIEM',
      aud: 'https://siem.example/leash',
    });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    streamId = created.body.stream_id;
  });
  afterAll(async () => {
    await node?.close();
    await receiver.stop();
  });

  it('publishes its configuration without a token, naming the endpoints, the delivery methods and the JWKS', async () => {
    const res = await node.api('GET', '/.well-known/ssf-configuration', undefined, {}, null);
    expect(res.status).toBe(200);
    expect(res.body).toEqual({
      spec_version: '1_0', issuer: ISSUER, jwks_uri: `${ISSUER}/.well-known/jwks.json`,
      delivery_methods_supported: ['urn:ietf:rfc:8935', 'urn:ietf:rfc:8936'],
      configuration_endpoint: `${ISSUER}/ssf/stream`, status_endpoint: `${ISSUER}/ssf/status`, verification_endpoint: `${ISSUER}/ssf/verify`,
      authorization_schemes: [{ spec_urn: 'urn:ietf:rfc:6750' }], default_subjects: 'ALL',
    });
  });

  it('answers the stream as created: Leash\'s members, the types it delivers of those asked for, and never the receiver\'s header', async () => {
    const res = await node.api('GET', `/ssf/stream?stream_id=${streamId}`);
    expect(res.status).toBe(200);
    expect(res.headers['cache-control']).toBe('no-store');
    expect(res.body).toMatchObject({
      stream_id: streamId, iss: ISSUER, aud: 'https://siem.example/leash', delivery: { method: 'urn:ietf:rfc:8935', endpoint_url: endpoint },
      events_requested: [SESSION_REVOKED, TOKEN_CLAIMS_CHANGE, CREDENTIAL_CHANGE, 'urn:example:not-a-leash-event'],
      events_delivered: [SESSION_REVOKED, CREDENTIAL_CHANGE, TOKEN_CLAIMS_CHANGE], description: 'the SIEM',
    });
    expect(res.body.events_supported).toContain('urn:leash:secevent:anomaly');
    const list = await node.api('GET', '/ssf/stream');
    expect(list.body.map((s: { stream_id: string }) => s.stream_id)).toEqual([streamId]);
    // The secret is nowhere but its own table: not in an answer, not in the event log.
    const everything = JSON.stringify([res.body, list.body, await node.connection.db.selectFrom('events').selectAll().execute()]);
    expect(everything).not.toContain('receiver-secret-4711');
  });

  it('a revoke reaches the receiver as a session-revoked SET within a second, signed, with the header asked for', async () => {
    await register(node, 'pay-bot');
    const before = receiver.received.length;
    const started = performance.now();
    expect((await revoke(node, 'pay-bot', 'prompt injection')).status).toBe(200);
    const got = await eventually(() => receiver.received.length > before && receiver.received[before], 1000);
    expect(got.at - started).toBeLessThan(1000);
    expect(got.headers['content-type']).toBe('application/secevent+jwt');
    expect(got.headers.authorization).toBe('Bearer receiver-secret-4711');
    const [claims] = await claimsOf(node, [got.body], 'https://siem.example/leash');
    expect(claims!.sub_id).toEqual({ format: 'opaque', id: 'pay-bot' });
    expect(claims!.events[SESSION_REVOKED]).toMatchObject({ initiating_entity: 'admin', reason_admin: { en: 'prompt injection' }, agent_status: 'revoked', event_timestamp: expect.any(Number) });
    expect(claims!.jti).toMatch(new RegExp(`^${streamId}\\.\\d+$`));
  });

  it('sends only what the stream asked for and Leash sends: a key rotation and a revoke, not a registration', async () => {
    const before = receiver.received.length;
    await register(node, 'ledger-bot');
    expect((await node.api('POST', '/v1/agents/ledger-bot/rotate', { credentials: agentBody().credentials })).status).toBe(200);
    expect((await revoke(node, 'ledger-bot')).status).toBe(200);
    const sets = await eventually(() => receiver.received.length >= before + 2 && receiver.received.slice(before), 2000);
    await new Promise((r) => setTimeout(r, 200));
    const claims = await claimsOf(node, receiver.received.slice(before).map((r) => r.body), 'https://siem.example/leash');
    expect(sets.length).toBe(2);
    expect(claims.map((c) => Object.keys(c.events)[0])).toEqual([CREDENTIAL_CHANGE, SESSION_REVOKED]);
    expect(claims.map((c) => c.sub_id.id)).toEqual(['ledger-bot', 'ledger-bot']);
  });

  it('holds what comes while paused and sends it when enabled again; drops what comes while disabled, and what was held when it was', async () => {
    for (const id of ['p1', 'p2', 'd1', 'e1']) await register(node, id);
    const status = (status: string) => node.api('POST', '/ssf/status', { stream_id: streamId, status, reason: `test: ${status}` });
    expect((await status('paused')).body).toEqual({ stream_id: streamId, status: 'paused', reason: 'test: paused' });
    expect((await node.api('GET', `/ssf/status?stream_id=${streamId}`)).body).toEqual({ stream_id: streamId, status: 'paused', reason: 'test: paused' });
    const before = receiver.received.length;
    await revoke(node, 'p1');
    await new Promise((r) => setTimeout(r, 300));
    expect(receiver.received.length).toBe(before);
    await status('enabled');
    await eventually(() => receiver.received.length === before + 1, 3000);
    // Paused again: p2 waits; then disabled, which drops it, and d1 with it.
    await status('paused');
    await revoke(node, 'p2');
    await status('disabled');
    await revoke(node, 'd1');
    await status('enabled');
    await revoke(node, 'e1');
    await eventually(() => receiver.received.length >= before + 2, 3000);
    await new Promise((r) => setTimeout(r, 300));
    const claims = await claimsOf(node, receiver.received.slice(before).map((r) => r.body), 'https://siem.example/leash');
    expect(claims.map((c) => c.sub_id.id)).toEqual(['p1', 'e1']);
  });

  it('sends a verification event when the receiver asks, with its state; asking again at once is a 429 saying when to', async () => {
    const before = receiver.received.length;
    expect((await node.api('POST', '/ssf/verify', { stream_id: streamId, state: 'c3RhdGU' })).status).toBe(204);
    const got = await eventually(() => receiver.received[before], 2000);
    const [claims] = await claimsOf(node, [got.body], 'https://siem.example/leash');
    expect(claims!.sub_id).toEqual({ format: 'opaque', id: streamId });
    expect(claims!.events).toEqual({ [VERIFICATION]: { state: 'c3RhdGU' } });
    const again = await node.api('POST', '/ssf/verify', { stream_id: streamId });
    expect(again.status).toBe(429);
    expect(again.body).toMatchObject({ code: 'RATE_LIMITED', retryAfterSeconds: expect.any(Number) });
    expect(Number(again.headers['retry-after'])).toBeGreaterThanOrEqual(29);
    expect(again.body.retryAfterSeconds).toBe(Number(again.headers['retry-after']));
  });

  it('a receiver that refuses a SET with 400 is not sent it again; one that answers 503 is, until it takes it', async () => {
    await register(node, 'r400');
    await register(node, 'r503');
    const before = receiver.received.length;
    receiver.answer = 400;
    await revoke(node, 'r400');
    await new Promise((r) => setTimeout(r, 300));
    receiver.answer = 503;
    await revoke(node, 'r503');
    await new Promise((r) => setTimeout(r, 600));
    receiver.answer = null;
    const got = await eventually(() => receiver.received[before], 8000);
    const [claims] = await claimsOf(node, [got.body], 'https://siem.example/leash');
    expect(claims!.sub_id.id).toBe('r503');
  });

  it('the SETs have the members and JSON types of the CAEP and SSF specifications\' own examples', async () => {
    await register(node, 'rot-bot');
    const before = receiver.received.length;
    await node.api('POST', '/v1/agents/rot-bot/rotate', { credentials: agentBody().credentials });
    await revoke(node, 'rot-bot', 'rotated and retired');
    const sets = await eventually(() => receiver.received.length >= before + 2 && receiver.received.slice(before), 3000);
    const claims = await claimsOf(node, sets.map((r) => r.body), 'https://siem.example/leash');
    const shape = (v: unknown): unknown => (Array.isArray(v) ? 'array' : v !== null && typeof v === 'object' ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, shape(x)])) : typeof v);
    for (const [type, name] of [[CREDENTIAL_CHANGE, 'credential-change'], [SESSION_REVOKED, 'session-revoked']] as const) {
      const ours = claims.find((c) => type in c.events)!;
      // Every member an example SET has at the top, ours has, with the same JSON type (sub_id aside: its format differs).
      for (const example of examples[name]!) {
        for (const member of ['iss', 'jti', 'iat', 'aud', 'txn', 'events']) expect(typeof ours[member], `${name} ${member}`).toBe(typeof example[member]);
        const theirs = example.events[type];
        const mine = ours.events[type]!;
        for (const member of ['event_timestamp', 'initiating_entity', 'credential_type', 'change_type', 'reason_admin'].filter((m) => m in theirs && m in mine)) {
          expect(shape(mine[member]), `${name} ${member}`).toEqual(shape(theirs[member]));
        }
        if ('initiating_entity' in mine) expect(['admin', 'user', 'policy', 'system']).toContain(mine.initiating_entity);
      }
    }
    const change = claims.find((c) => CREDENTIAL_CHANGE in c.events)!.events[CREDENTIAL_CHANGE]!;
    expect(change).toMatchObject({ credential_type: expect.any(String), change_type: 'update' });
    // The verification example's shape, too.
    expect(Object.keys(examples.verification![0]!.events[VERIFICATION])).toEqual(['state']);
  });
});

describe('the transmitter, polled (RFC 8936)', () => {
  let node: TestNode;
  let streamId: string;
  const poll = (body: Record<string, unknown>) => node.api('POST', `/ssf/poll/${streamId}`, body);

  beforeAll(async () => {
    node = await startTestNode(await freshPostgres(), { ssf: { longPollMs: 3000 } });
    await seedPrincipals(node);
    const created = await node.api('POST', '/ssf/stream', { events_requested: [SESSION_REVOKED] });
    expect(created.status).toBe(201);
    streamId = created.body.stream_id;
    expect(created.body.delivery).toEqual({ method: 'urn:ietf:rfc:8936', endpoint_url: `${ISSUER}/ssf/poll/${streamId}` });
    expect(created.body.aud).toBe(streamId);
  });
  afterAll(async () => node?.close());

  it('hands out unacknowledged SETs, the same ones again until they are acknowledged, then the next', async () => {
    for (const id of ['a1', 'a2', 'a3']) {
      await register(node, id);
      await revoke(node, id);
    }
    const first = await poll({ maxEvents: 2, returnImmediately: true });
    expect(first.status).toBe(200);
    expect(first.body.moreAvailable).toBe(true);
    const jtis = Object.keys(first.body.sets);
    expect(jtis).toHaveLength(2);
    const claims = await claimsOf(node, Object.values(first.body.sets), streamId);
    expect(claims.map((c) => c.sub_id.id)).toEqual(['a1', 'a2']);
    expect(claims.map((c) => c.jti)).toEqual(jtis);
    // Not acknowledged: the same again, with the same ids.
    const again = await poll({ maxEvents: 2, returnImmediately: true });
    expect(Object.keys(again.body.sets)).toEqual(jtis);
    // a1 acknowledged, a2 reported unusable (setErrs count as taken): the next is a3.
    const next = await poll({ ack: [jtis[0]], setErrs: { [jtis[1]!]: { err: 'invalid_key', description: 'test' } }, returnImmediately: true });
    const nextClaims = await claimsOf(node, Object.values(next.body.sets), streamId);
    expect(nextClaims.map((c) => c.sub_id.id)).toEqual(['a3']);
    expect(next.body.moreAvailable).toBe(false);
    const ackOnly = await poll({ ack: Object.keys(next.body.sets), maxEvents: 0 });
    expect(ackOnly.body).toEqual({ sets: {}, moreAvailable: false });
    expect((await poll({ returnImmediately: true })).body.sets).toEqual({});
  });

  it('without returnImmediately, waits for the next event and answers as soon as it is committed', async () => {
    await register(node, 'late');
    const waiting = poll({});
    await new Promise((r) => setTimeout(r, 300));
    const revoked = performance.now();
    await revoke(node, 'late');
    const res = await waiting;
    expect(performance.now() - revoked).toBeLessThan(1500);
    const claims = await claimsOf(node, Object.values(res.body.sets), streamId);
    expect(claims.map((c) => c.sub_id.id)).toEqual(['late']);
    await poll({ ack: Object.keys(res.body.sets), maxEvents: 0 });
  });

  it('an acknowledgement of an id that is not this stream\'s, or not handed out yet, changes nothing', async () => {
    await register(node, 'kept');
    await revoke(node, 'kept');
    const res = await poll({ ack: [`${streamId}.999999999`, 'someone-else.3', `${streamId}.0`, `${streamId}.-1`, ''], returnImmediately: true });
    const claims = await claimsOf(node, Object.values(res.body.sets), streamId);
    expect(claims.map((c) => c.sub_id.id)).toEqual(['kept']);
  });
});

describe('what the log\'s events become on a stream that asks for everything', () => {
  it('the kill switch, an approval asked and answered, a grant change and one Leash token revoked, each as its SET, in order', async () => {
    const node = await startTestNode(await freshPostgres());
    try {
      await seedPrincipals(node);
      const stream = (await node.api('POST', '/ssf/stream', {})).body.stream_id;
      await registerPayBot(node);
      const invoices = { type: 'Folder', id: 'invoices' };
      expect((await node.api('POST', '/v1/agents', agentBody({ id: 'reader', ceiling: { template: 'ceiling-folder', values: { '?resource': invoices } } }))).status).toBe(201);
      expect((await node.api('POST', '/v1/agents/reader/authorize', { grants: [{ template: 'grant-read-folder', values: { '?resource': invoices } }] })).status).toBe(200);
      for (const id of ['fleet-1', 'fleet-2']) expect((await node.api('POST', '/v1/agents', agentBody({ id, tags: ['fleet'] }))).status).toBe(201);
      const killed = await node.api('POST', '/v1/kill-switch', { scope: { tag: 'fleet' }, mode: 'immediate', reason: 'fleet compromised' });
      expect(killed.body.revoked).toEqual(['fleet-1', 'fleet-2']);
      await new Promise((r) => setTimeout(r, 1100)); // pay-bot's tokens from after its authorize (whole seconds)
      const held = await pay(node, await payToken(), 25_000);
      expect(held.context.code).toBe('APPROVAL_REQUIRED');
      expect((await node.api('POST', `/v1/approvals/${held.context.approval!.id}/approve`, { reason: 'checked', approver: 'alice' })).status).toBe(200);
      // A token Leash issued, revoked by the operator (RFC 7009).
      const form = (fields: Record<string, string>) => new URLSearchParams(fields).toString();
      const issued = await node.app.inject({ method: 'POST', url: '/oauth/token', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: form({
        grant_type: 'client_credentials', client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: await clientAssertionOf('reader'),
        authorization_details: JSON.stringify([{ type: 'leash:cedar', actions: ['read'], resourceIn: invoices }]),
      }) });
      expect(issued.statusCode, issued.body).toBe(200);
      const accessToken = issued.json().access_token as string;
      const jti = JSON.parse(Buffer.from(accessToken.split('.')[1]!, 'base64url').toString()).jti as string;
      const revoked = await node.app.inject({ method: 'POST', url: '/oauth/revoke', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Bearer ${ADMIN_TOKEN}` }, payload: form({ token: accessToken }) });
      expect(revoked.statusCode).toBe(200);

      // What is not acknowledged comes again: poll until the revoke's SET is there too (the log
      // is read only up to transactions older than every one still running on the server, and
      // the test server runs other files' transactions meanwhile).
      let polled = await node.api('POST', `/ssf/poll/${stream}`, { returnImmediately: true });
      for (const deadline = Date.now() + 5000; Object.keys(polled.body.sets).length < 7 && Date.now() < deadline;) {
        await new Promise((r) => setTimeout(r, 50));
        polled = await node.api('POST', `/ssf/poll/${stream}`, { returnImmediately: true });
      }
      const claims = await claimsOf(node, Object.values(polled.body.sets), stream);
      const seen = claims.map((c) => {
        const [type, event] = Object.entries(c.events)[0]!;
        return [type.replace(/^.*\//, ''), c.sub_id, (event as { status?: string; agent_status?: string }).status ?? (event as { agent_status?: string }).agent_status ?? null];
      });
      expect(seen).toEqual([
        ['token-claims-change', { format: 'opaque', id: 'pay-bot' }, null], // authorized, with its grants
        ['token-claims-change', { format: 'opaque', id: 'reader' }, null],
        ['session-revoked', { format: 'opaque', id: 'fleet-1' }, 'revoked'],
        ['session-revoked', { format: 'opaque', id: 'fleet-2' }, 'revoked'],
        ['urn:leash:secevent:approval', { format: 'opaque', id: 'pay-bot' }, 'pending'],
        ['urn:leash:secevent:approval', { format: 'opaque', id: 'pay-bot' }, 'approved'],
        ['session-revoked', { format: 'jwt_id', iss: ISSUER, jti }, null],
      ]);
      const kill = claims[2]!.events[SESSION_REVOKED]!;
      expect(kill).toMatchObject({ initiating_entity: 'admin', reason_admin: { en: 'fleet compromised' } });
      expect(claims[5]!.events['urn:leash:secevent:approval']).toMatchObject({ approval: held.context.approval!.id, approver: 'human:alice', initiating_entity: 'admin' });
      expect(claims[0]!.events[TOKEN_CLAIMS_CHANGE]).toMatchObject({ claims: { grants: [] } });
      expect(claims[1]!.events[TOKEN_CLAIMS_CHANGE]).toMatchObject({ claims: { grants: [{ template: 'grant-read-folder', values: { '?resource': invoices } }] } });
      // One log event, one SET: the txn names it, and the two kill-switch SETs are two events.
      expect(new Set(claims.map((c) => c.txn)).size).toBe(claims.length);
    } finally {
      await node.close();
    }
  });
});

describe('the stream management API under hostile input', () => {
  let node: TestNode;
  let streamId: string;

  beforeAll(async () => {
    node = await startTestNode(await freshPostgres());
    streamId = (await node.api('POST', '/ssf/stream', {})).body.stream_id;
  });
  afterAll(async () => node?.close());

  it('every management route and the poll endpoint need the operator token; the configuration does not', async () => {
    for (const [method, url, body] of [
      ['GET', '/ssf/stream', undefined], ['POST', '/ssf/stream', {}], ['PATCH', '/ssf/stream', { stream_id: streamId }], ['PUT', '/ssf/stream', { stream_id: streamId }],
      ['DELETE', `/ssf/stream?stream_id=${streamId}`, undefined], ['GET', `/ssf/status?stream_id=${streamId}`, undefined],
      ['POST', '/ssf/status', { stream_id: streamId, status: 'disabled' }], ['POST', '/ssf/verify', { stream_id: streamId }], ['POST', `/ssf/poll/${streamId}`, {}],
      ['POST', `/ssf/poll/${encodeURIComponent(streamId)}%2F..`, {}], ['GET', '/ssf/%73tream', undefined],
    ] as const) {
      for (const token of [null, 'wrong-token', `${ADMIN_TOKEN} `.repeat(2)]) {
        const res = await node.api(method, url, body, {}, token);
        expect(res.status, `${method} ${url} with ${String(token)}`).toBe(401);
      }
    }
    expect((await node.api('GET', `/ssf/status?stream_id=${streamId}`)).body.status).toBe('enabled');
  });

  it('refuses what a stream cannot be: wrong types, unknown members, a bad or private URL, a header with a newline, NUL, too many types', async () => {
    const bad: [unknown, RegExp][] = [
      [{ delivery: { method: 'urn:ietf:rfc:8935' } }, /endpoint_url is required/],
      [{ delivery: { method: 'urn:ietf:rfc:8935', endpoint_url: 'not a url' } }, /not a URL/],
      [{ delivery: { method: 'urn:ietf:rfc:8935', endpoint_url: 'ftp://example.com/x' } }, /must use https/],
      [{ delivery: { method: 'urn:ietf:rfc:8935', endpoint_url: 'https://u:p@example.com/x' } }, /credentials/],
      [{ delivery: { method: 'urn:ietf:rfc:8936', endpoint_url: 'https://example.com/x' } }, /Leash's to give/],
      [{ delivery: { method: 'urn:ietf:rfc:8935', endpoint_url: 'https://example.com/x', authorization_header: 'Bearer a\r\nX-Evil: 1' } }, /authorization_header/],
      [{ delivery: { method: 'https://example.com/carrier-pigeon' } }, /method/],
      [{ events_requested: 'all' }, /events_requested/],
      [{ events_requested: [] }, /events_requested/],
      [{ events_requested: Array.from({ length: 33 }, (_, i) => `urn:x:${i}`) }, /events_requested/],
      [{ description: 'a\u0000b' }, /NUL|description/],
      [{ description: 'x'.repeat(257) }, /description/],
      [{ stream_id: 'chosen-by-me' }, /stream_id|additional/],
      [{ delivery: { method: 'urn:ietf:rfc:8935', endpoint_url: 'https://example.com/x', extra: 1 } }, /extra|additional/],
    ];
    for (const [body, why] of bad) {
      const res = await node.api('POST', '/ssf/stream', body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(res.body.code).toBe('VALIDATION_FAILED');
      expect(JSON.stringify(res.body), JSON.stringify(body)).toMatch(why);
    }
    const deep = await node.api('POST', '/ssf/stream', `{"description":${'['.repeat(5000)}${']'.repeat(5000)}}`);
    expect(deep.status).toBe(400);
  });

  it('a private address is refused unless LEASH_ALLOW_PRIVATE_URLS', async () => {
    const strict = await startTestNode(await freshPostgres(), { allowPrivateUrls: false });
    try {
      for (const url of ['https://127.0.0.1/events', 'https://169.254.169.254/latest', 'http://127.0.0.1:9/events', 'https://[::1]/x', 'https://localhost/x']) {
        const res = await strict.api('POST', '/ssf/stream', { delivery: { method: 'urn:ietf:rfc:8935', endpoint_url: url } });
        expect(res.status, url).toBe(400);
      }
    } finally {
      await strict.close();
    }
  });

  it('unknown or malformed stream ids: 404 STREAM_NOT_FOUND or 400, never a 500', async () => {
    const unknown = '00000000-0000-4000-8000-000000000000';
    for (const [method, url, body] of [
      ['GET', `/ssf/stream?stream_id=${unknown}`, undefined], ['GET', `/ssf/status?stream_id=${unknown}`, undefined], ['DELETE', `/ssf/stream?stream_id=${unknown}`, undefined],
      ['POST', '/ssf/verify', { stream_id: unknown }], ['POST', '/ssf/status', { stream_id: unknown, status: 'paused' }], ['PATCH', '/ssf/stream', { stream_id: unknown }],
      ['POST', `/ssf/poll/${unknown}`, {}],
    ] as const) {
      const res = await node.api(method, url, body);
      expect(res.status, `${method} ${url}`).toBe(404);
      expect(res.body.code).toBe('STREAM_NOT_FOUND');
    }
    for (const [method, url, body] of [
      ['GET', '/ssf/stream?stream_id=__proto__', undefined], ['GET', '/ssf/status', undefined], ['GET', `/ssf/stream?stream_id=${streamId}&stream_id=${streamId}`, undefined],
      ['POST', '/ssf/status', { stream_id: streamId, status: 'off' }], ['POST', '/ssf/poll/x%00y', {}], ['POST', `/ssf/poll/${streamId}`, { maxEvents: -1 }],
      ['POST', `/ssf/poll/${streamId}`, { maxEvents: 1001 }], ['POST', `/ssf/poll/${streamId}`, { ack: 'all' }], ['POST', `/ssf/poll/${streamId}`, { returnImmediately: 'yes' }],
      ['POST', `/ssf/poll/${streamId}`, { ack: Array.from({ length: 1001 }, () => 'x') }], ['POST', `/ssf/poll/${streamId}`, { setErrs: { a: { err: 'bad\nline' } } }],
      ['PATCH', '/ssf/stream', { stream_id: streamId, aud: 'someone-else' }], ['PATCH', '/ssf/stream', { stream_id: streamId, iss: 'https://evil.example' }],
    ] as const) {
      const res = await node.api(method, url, body);
      expect(res.status, `${method} ${url} ${JSON.stringify(body)}`).toBe(400);
    }
  });

  it('PATCH changes what it names, PUT withdraws what it leaves out, DELETE ends the stream', async () => {
    const patched = await node.api('PATCH', '/ssf/stream', { stream_id: streamId, description: 'renamed', events_requested: [SESSION_REVOKED] });
    expect(patched.status).toBe(200);
    expect(patched.body).toMatchObject({ description: 'renamed', events_delivered: [SESSION_REVOKED] });
    const put = await node.api('PUT', '/ssf/stream', { stream_id: streamId, description: 'replaced' });
    expect(put.body).toMatchObject({ description: 'replaced', delivery: { method: 'urn:ietf:rfc:8936' } });
    expect(put.body.events_requested).toBeUndefined();
    expect(put.body.events_delivered).toHaveLength(5);
    expect((await node.api('DELETE', `/ssf/stream?stream_id=${streamId}`)).status).toBe(204);
    expect((await node.api('GET', `/ssf/stream?stream_id=${streamId}`)).status).toBe(404);
    expect((await node.api('GET', '/ssf/stream')).body).toEqual([]);
  });
});

describe('delivery survives a receiver down and a transmitter restart (real PostgreSQL)', () => {
  it('a receiver down for 10 s, with the node restarted meanwhile, then gets every SET exactly once, in order', async () => {
    const backend = await freshPostgres();
    const receiver = new PushReceiver();
    const endpoint = await receiver.start();
    let node = await startTestNode(backend, { nodeId: 'n1' });
    try {
      await seedPrincipals(node);
      const created = await node.api('POST', '/ssf/stream', { delivery: { method: 'urn:ietf:rfc:8935', endpoint_url: endpoint }, events_requested: [SESSION_REVOKED] });
      const stream = created.body.stream_id;
      const ids = ['s1', 's2', 's3', 's4', 's5', 's6'];
      for (const id of ids) await register(node, id);
      await revoke(node, 's1');
      await eventually(() => receiver.received.length === 1, 2000);
      await receiver.stop();
      const down = Date.now();
      // A receiver that is down holds up no revocation.
      for (const id of ['s2', 's3']) {
        const started = performance.now();
        expect((await revoke(node, id)).status).toBe(200);
        expect(performance.now() - started).toBeLessThan(1000);
      }
      await new Promise((r) => setTimeout(r, 1500));
      // The node goes away with SETs undelivered; a new process takes over from the cursor.
      await node.close();
      node = await startTestNode(backend, { nodeId: 'n1' });
      await revoke(node, 's4');
      await revoke(node, 's5');
      await new Promise((r) => setTimeout(r, Math.max(0, 10_000 - (Date.now() - down))));
      await receiver.restart();
      await revoke(node, 's6');
      await eventually(() => receiver.received.length >= 6, 8000);
      await new Promise((r) => setTimeout(r, 500));
      const claims = await claimsOf(node, receiver.received.map((r) => r.body), stream);
      expect(claims.map((c) => c.sub_id.id)).toEqual(ids);
      expect(new Set(claims.map((c) => c.jti)).size).toBe(6);
    } finally {
      await node.close();
      await receiver.stop();
    }
  }, 40_000);

  it('two nodes on one database: one of them pushes the stream, and each SET arrives once, whichever node made the change', async () => {
    const backend = await freshPostgres();
    const receiver = new PushReceiver();
    const endpoint = await receiver.start();
    const a = await startTestNode(backend, { nodeId: 'a' });
    const b = await startTestNode(backend, { nodeId: 'b' });
    try {
      await seedPrincipals(a);
      const stream = (await a.api('POST', '/ssf/stream', { delivery: { method: 'urn:ietf:rfc:8935', endpoint_url: endpoint }, events_requested: [SESSION_REVOKED] })).body.stream_id;
      await eventually(() => b.streams.get(stream), 3000);
      const ids = ['t1', 't2', 't3', 't4', 't5', 't6'];
      for (const [i, id] of ids.entries()) {
        const node = i % 2 === 0 ? a : b;
        await register(node, id);
        expect((await revoke(node, id)).status).toBe(200);
      }
      await eventually(() => receiver.received.length >= 6, 5000);
      await new Promise((r) => setTimeout(r, 500));
      const claims = await claimsOf(a, receiver.received.map((r) => r.body), stream);
      expect(claims.map((c) => c.sub_id.id)).toEqual(ids);
    } finally {
      await Promise.all([a.close(), b.close()]);
      await receiver.stop();
    }
  });
});
