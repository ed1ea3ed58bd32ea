import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freshPostgres } from '../support/backends.ts';
import { agentBody, credentials, seedPrincipals, startTestNode, type TestNode } from '../support/node.ts';

let node: TestNode;

beforeAll(async () => {
  node = await startTestNode(await freshPostgres());
  await seedPrincipals(node);
});
afterAll(async () => node?.close());

describe('agent lifecycle over HTTP (SPEC §7)', () => {
  it('walks an agent through register → authorize → rotate → suspend → authorize → revoke → retire', async () => {
    const reg = await node.api('POST', '/v1/agents', agentBody());
    expect(reg.status).toBe(201);
    expect(reg.headers.etag).toBe('"1"');
    expect(reg.headers.location).toBe('/v1/agents/invoice-bot');
    expect(reg.body).toMatchObject({ id: 'invoice-bot', status: 'registered', version: 1, owner: 'alice', trustScore: 60, groups: ['finance-agents'], tags: ['finance'] });

    const steps: [string, unknown, string][] = [
      ['authorize', { grants: [{ template: 'grant-read-folder', values: { '?resource': { type: 'Folder', id: 'inv' } } }] }, 'active'],
      ['rotate', { credentials: credentials({ issuer: 'https://idp2.example' }) }, 'active'],
      ['suspend', { reason: 'anomaly score high' }, 'suspended'],
      ['authorize', { grants: [] }, 'active'],
      ['revoke', { mode: 'immediate', reason: 'key leaked' }, 'revoked'],
      ['retire', { reason: 'decommissioned' }, 'retired'],
    ];
    for (const [i, [verb, body, status]] of steps.entries()) {
      const res = await node.api('POST', `/v1/agents/invoice-bot/${verb}`, body);
      expect(res.status, `${verb}: ${JSON.stringify(res.body)}`).toBe(200);
      expect(res.body).toMatchObject({ status, version: i + 2 });
      expect(res.headers.etag).toBe(`"${i + 2}"`);
      if (verb === 'revoke') expect(res.body).toMatchObject({ position: expect.any(Number), nodesConfirmed: 1, nodesExpected: 1 });
    }

    const got = await node.api('GET', '/v1/agents/invoice-bot');
    expect(got.body).toMatchObject({ status: 'retired', version: 7, credentials: { issuer: 'https://idp2.example' }, retirement: { reason: 'decommissioned' } });

    const history = await node.api('GET', '/v1/agents/invoice-bot/events');
    expect(history.body.events.map((e: { type: string; version: number }) => [e.type, e.version])).toEqual([
      ['AgentRegistered', 1], ['AgentAuthorized', 2], ['CredentialRotated', 3], ['AgentSuspended', 4],
      ['AgentAuthorized', 5], ['AgentRevoked', 6], ['AgentRetired', 7],
    ]);
    expect(history.body.events[5]).toMatchObject({ data: { mode: 'immediate', reason: 'key leaked' }, position: expect.any(Number), at: expect.any(String) });

    const refused = await node.api('POST', '/v1/agents/invoice-bot/authorize', { grants: [] });
    expect(refused.status).toBe(409);
    expect(refused.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(refused.body).toMatchObject({ code: 'INVALID_TRANSITION', currentState: 'retired', status: 409 });
  });

  it('discovers a shadow agent, then registers it', async () => {
    const found = await node.api('POST', '/v1/agents/discover', { id: 'shadow-1', source: 'egress-proxy', fingerprint: 'sha256:ab' });
    expect(found.status).toBe(201);
    expect(found.body).toMatchObject({ id: 'shadow-1', status: 'discovered', owner: null, discovery: { source: 'egress-proxy' } });
    const reg = await node.api('POST', '/v1/agents', agentBody({ id: 'shadow-1' }));
    expect(reg.status).toBe(201);
    expect(reg.body).toMatchObject({ status: 'registered', version: 2, discovery: { fingerprint: 'sha256:ab' } });
  });

  it('lists and filters agents by status, owner and tag, with paging', async () => {
    await node.api('POST', '/v1/humans', { id: 'bob', email: 'bob@example.com' });
    for (const id of ['list-a', 'list-b', 'list-c']) {
      expect((await node.api('POST', '/v1/agents', agentBody({ id, owner: id === 'list-c' ? 'bob' : 'alice', tags: [id === 'list-a' ? 'ops' : 'finance'] }))).status).toBe(201);
    }
    await node.api('POST', '/v1/agents/list-a/authorize', { grants: [] });
    const ids = async (query: string) => (await node.api('GET', `/v1/agents${query}`)).body.agents.map((a: { id: string }) => a.id);
    expect(await ids('?status=active')).toEqual(['list-a']);
    expect(await ids('?owner=bob')).toEqual(['list-c']);
    expect(await ids('?tag=ops')).toEqual(['list-a']);
    expect(await ids('?owner=alice&status=registered')).toEqual(expect.arrayContaining(['list-b']));
    const page = await node.api('GET', '/v1/agents?limit=1');
    expect(page.body.agents).toHaveLength(1);
    const next = await node.api('GET', `/v1/agents?limit=1&after=${page.body.next}`);
    expect(next.body.agents[0].id > page.body.agents[0].id).toBe(true);
    expect((await node.api('GET', '/v1/agents?status=bogus')).body.code).toBe('VALIDATION_FAILED');
  });

  it('gets humans and groups', async () => {
    expect((await node.api('GET', '/v1/humans/alice')).body).toMatchObject({ id: 'alice', email: 'alice@example.com', groups: ['finance'], version: 1 });
    expect((await node.api('GET', '/v1/groups/finance')).body).toMatchObject({ id: 'finance', parents: [] });
    expect((await node.api('GET', '/v1/humans')).body.humans.map((h: { id: string }) => h.id)).toContain('alice');
    expect((await node.api('GET', '/v1/humans/nobody')).body.code).toBe('HUMAN_NOT_FOUND');
    expect((await node.api('GET', '/v1/groups/nobody')).body.code).toBe('GROUP_NOT_FOUND');
    expect((await node.api('GET', '/v1/agents/nobody')).body.code).toBe('AGENT_NOT_FOUND');
    expect((await node.api('GET', '/v1/agents/nobody/events')).status).toBe(404);
    expect((await node.api('POST', '/v1/agents/nobody/revoke', { mode: 'immediate', reason: 'x' })).body.code).toBe('AGENT_NOT_FOUND');
  });
});

describe('If-Match and Idempotency-Key', () => {
  it('If-Match with a stale version is 412 and appends nothing; the current version succeeds', async () => {
    await node.api('POST', '/v1/agents', agentBody({ id: 'etag-bot' }));
    const before = await node.eventCount();
    const stale = await node.api('POST', '/v1/agents/etag-bot/authorize', { grants: [] }, { 'if-match': '"7"' });
    expect(stale.status).toBe(412);
    expect(stale.body).toMatchObject({ code: 'VERSION_MISMATCH', currentVersion: 1, expectedVersion: 7 });
    expect(await node.eventCount()).toBe(before);
    const ok = await node.api('POST', '/v1/agents/etag-bot/authorize', { grants: [] }, { 'if-match': '"1"' });
    expect(ok.status).toBe(200);
  });

  it('50 concurrent writes with the same If-Match: one 200, 49 × 412, one event', async () => {
    await node.api('POST', '/v1/agents', agentBody({ id: 'race-bot' }));
    await node.api('POST', '/v1/agents/race-bot/authorize', { grants: [] });
    const before = await node.eventCount();
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) => node.api('POST', '/v1/agents/race-bot/suspend', { reason: `writer ${i}` }, { 'if-match': '"2"' })),
    );
    expect(results.filter((r) => r.status === 200)).toHaveLength(1);
    const conflicts = results.filter((r) => r.status === 412);
    expect(conflicts).toHaveLength(49);
    expect(conflicts.every((r) => r.body.code === 'VERSION_MISMATCH')).toBe(true);
    expect(await node.eventCount()).toBe(before + 1);
  });

  it('a retried write with the same Idempotency-Key gets the same response and appends once', async () => {
    const headers = { 'idempotency-key': 'register-idem-bot-1' };
    const first = await node.api('POST', '/v1/agents', agentBody({ id: 'idem-bot' }), headers);
    const count = await node.eventCount();
    await node.api('POST', '/v1/agents/idem-bot/authorize', { grants: [] }); // state moves on
    const retry = await node.api('POST', '/v1/agents', agentBody({ id: 'idem-bot' }), headers);
    expect(first.status).toBe(201);
    expect(retry.status).toBe(201);
    expect(retry.body).toEqual(first.body);
    expect(retry.headers['idempotent-replayed']).toBe('true');
    expect(await node.eventCount()).toBe(count + 1); // only the authorize

    const revokeHeaders = { 'idempotency-key': 'revoke-idem-bot-1' };
    const r1 = await node.api('POST', '/v1/agents/idem-bot/revoke', { mode: 'immediate', reason: 'x' }, revokeHeaders);
    const r2 = await node.api('POST', '/v1/agents/idem-bot/revoke', { mode: 'immediate', reason: 'x' }, revokeHeaders);
    expect(r2.status).toBe(200);
    expect(r2.body).toEqual(r1.body);
  });

  it('concurrent retries with one Idempotency-Key append exactly once', async () => {
    await node.api('POST', '/v1/agents', agentBody({ id: 'idem-race' }));
    const before = await node.eventCount();
    const results = await Promise.all(Array.from({ length: 10 }, () => node.api('POST', '/v1/agents/idem-race/authorize', { grants: [] }, { 'idempotency-key': 'authz-idem-race' })));
    expect(results.every((r) => r.status === 200 && r.body.version === 2)).toBe(true);
    expect(await node.eventCount()).toBe(before + 1);
  });

  it('the same Idempotency-Key with another body is IDEMPOTENCY_KEY_REUSED', async () => {
    const headers = { 'idempotency-key': 'human-carol' };
    expect((await node.api('POST', '/v1/humans', { id: 'carol', email: 'carol@example.com' }, headers)).status).toBe(201);
    const before = await node.eventCount();
    const reused = await node.api('POST', '/v1/humans', { id: 'dave', email: 'dave@example.com' }, headers);
    expect(reused.status).toBe(422);
    expect(reused.body.code).toBe('IDEMPOTENCY_KEY_REUSED');
    expect(await node.eventCount()).toBe(before);
  });
});
