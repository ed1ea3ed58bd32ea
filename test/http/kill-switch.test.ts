import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backends } from '../support/backends.ts';
import { agentBody, seedPrincipals, startTestNode, type TestNode } from '../support/node.ts';

// SPEC §6 kill switches: every live agent of an owner, with a tag, or all of them, in one
// call that returns after the fence. Same code on both backends.

describe.each(backends)('kill switch on $name', ({ fresh }) => {
  let node: TestNode;
  const status = async (id: string) => (await node.api('GET', `/v1/agents/${id}`)).body.status as string;

  beforeAll(async () => {
    node = await startTestNode(await fresh());
    await seedPrincipals(node);
    expect((await node.api('POST', '/v1/humans', { id: 'bob', email: 'bob@example.com', groups: [] })).status).toBe(201);
    const agents: [string, string, string[], string | null][] = [
      ['a-active', 'alice', ['finance'], 'authorize'],
      ['a-suspended', 'alice', ['ops'], 'suspend'],
      ['a-registered', 'alice', ['ops'], null],
      ['a-retired', 'alice', ['finance'], 'retire'],
      ['b-active', 'bob', ['finance'], 'authorize'],
      ['b-ops', 'bob', ['ops'], 'authorize'],
    ];
    for (const [id, owner, tags, then] of agents) {
      expect((await node.api('POST', '/v1/agents', agentBody({ id, owner, tags }))).status).toBe(201);
      if (then === 'suspend') await node.api('POST', `/v1/agents/${id}/authorize`, { grants: [] });
      if (then) expect((await node.api('POST', `/v1/agents/${id}/${then}`, then === 'authorize' ? { grants: [] } : { reason: 'setup' })).status).toBe(200);
    }
  });
  afterAll(async () => node?.close());

  it('refuses a scope that is not exactly one of owner, tag or all, and callers without the operator token', async () => {
    for (const scope of [{}, { owner: 'alice', tag: 'ops' }, { all: false }, { owner: 'not an id!' }, { tag: '' }]) {
      const res = await node.api('POST', '/v1/kill-switch', { scope, mode: 'immediate', reason: 'x' });
      expect(res.status, JSON.stringify(scope)).toBe(400);
      expect(res.body.code).toBe('VALIDATION_FAILED');
    }
    expect((await node.api('POST', '/v1/kill-switch', { scope: { all: true }, mode: 'sideways', reason: 'x' })).status).toBe(400);
    expect((await node.api('POST', '/v1/kill-switch', { scope: { all: true }, mode: 'immediate', reason: 'x' }, {}, null)).status).toBe(401);
    expect(await status('b-active')).toBe('active'); // nothing happened
  });

  it('by owner: every live agent of that owner, no one else, confirmed by the fence', async () => {
    const res = await node.api('POST', '/v1/kill-switch', { scope: { owner: 'alice' }, mode: 'immediate', reason: 'account compromised' });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ revoked: ['a-active', 'a-registered', 'a-suspended'], skipped: [], nodesConfirmed: 1, nodesExpected: 1, nodesMissing: [] });
    expect(await status('a-active')).toBe('revoked');
    expect(await status('a-retired')).toBe('retired'); // retired stays retired
    expect(await status('b-active')).toBe('active');
    // Repeating it finds nothing left to do, and appends nothing.
    const before = await node.eventCount();
    expect((await node.api('POST', '/v1/kill-switch', { scope: { owner: 'alice' }, mode: 'immediate', reason: 'again' })).body).toMatchObject({ revoked: [] });
    expect(await node.eventCount()).toBe(before);
  });

  it('by tag, in quarantine mode', async () => {
    const res = await node.api('POST', '/v1/kill-switch', { scope: { tag: 'ops' }, mode: 'quarantine', reason: 'odd traffic' });
    // a-suspended (tag ops) is already revoked; b-ops is the live one.
    expect(res.body).toMatchObject({ revoked: ['b-ops'] });
    expect(await status('b-ops')).toBe('quarantined');
    expect(await status('b-active')).toBe('active');
  });

  it('all: everything still live, including the quarantined', async () => {
    const res = await node.api('POST', '/v1/kill-switch', { scope: { all: true }, mode: 'immediate', reason: 'incident' });
    expect(res.body).toMatchObject({ revoked: ['b-active', 'b-ops'] });
    const listed = await node.api('GET', '/v1/agents?limit=100');
    expect(listed.body.agents.map((a: { status: string }) => a.status).filter((s: string) => s !== 'revoked' && s !== 'retired')).toEqual([]);
  });
});
