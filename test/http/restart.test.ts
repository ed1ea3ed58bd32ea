import { describe, expect, it } from 'vitest';
import { backends } from '../support/backends.ts';
import { agentBody, seedPrincipals, startTestNode } from '../support/node.ts';

describe.each(backends)('restart on $name', ({ fresh }) => {
  it('serves the same registry after a restart as before it, and keeps appending', async () => {
    const backend = await fresh();
    const first = await startTestNode(backend);
    await seedPrincipals(first);
    await first.api('POST', '/v1/agents', agentBody({ id: 'keeper' }));
    await first.api('POST', '/v1/agents/keeper/authorize', { grants: [] });
    await first.api('POST', '/v1/agents', agentBody({ id: 'goner' }));
    await first.api('POST', '/v1/agents/goner/revoke', { mode: 'quarantine', reason: 'odd traffic' });
    const snapshot = async (node: typeof first) => ({
      agents: (await node.api('GET', '/v1/agents')).body,
      humans: (await node.api('GET', '/v1/humans')).body,
      groups: (await node.api('GET', '/v1/groups')).body,
      events: (await node.api('GET', '/v1/agents/goner/events')).body,
      position: node.view.position,
    });
    const before = await snapshot(first);
    await first.close();

    const second = await startTestNode(backend);
    try {
      // The same registry; the log has grown by the restarted node's new signing key only.
      expect(await snapshot(second)).toEqual({ ...before, position: before.position + 1 });
      expect((await second.store.readAll(before.position, 10)).map((e) => [e.streamId, e.type])).toEqual([['signing-key/test-node', 'SigningKeyPublished']]);
      expect(before.agents.agents.map((a: { id: string; status: string }) => [a.id, a.status])).toEqual([['goner', 'quarantined'], ['keeper', 'active']]);
      const next = await second.api('POST', '/v1/agents/goner/authorize', { grants: [] }, { 'if-match': '"2"' });
      expect(next.body).toMatchObject({ status: 'active', version: 3 });
    } finally {
      await second.close();
    }
  });
});
