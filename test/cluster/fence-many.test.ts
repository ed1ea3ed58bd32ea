import { describe, expect, it } from 'vitest';
import { InProcessBus } from '../../src/bus/bus.ts';
import { Cluster, SUBJECTS } from '../../src/cluster/cluster.ts';
import type { EventStore, StoredEvent } from '../../src/store/event-store.ts';
import { Follower } from '../../src/store/follower.ts';

// A fence over hundreds of nodes: confirmations arrive many to a turn, and each must count;
// those that never come are named, exactly.

const event = (position: number): StoredEvent => ({
  position, streamId: `group/g${position}`, streamType: 'group', version: 1, type: 'GroupRegistered', data: {}, metadata: {},
  at: new Date(), idempotencyKey: null, prevHash: '', hash: '',
});

async function clusterWithPeers(peers: string[], peerStalenessMs: number, fenceTimeoutMs: number) {
  const fold = { position: 0, apply(e: StoredEvent) { this.position = e.position; } };
  const log = { readAll: async () => [], onCommit: () => () => {}, observe: () => {} } as unknown as EventStore;
  const follower = new Follower(log, fold);
  const bus = new InProcessBus();
  const cluster = new Cluster({ nodeId: 'n1', bus, follower, heartbeatMs: 50, stalenessMs: peerStalenessMs, fenceTimeoutMs });
  cluster.start();
  for (const node of peers) bus.publish(SUBJECTS.nodes, { kind: 'heartbeat', node, position: 0, stalenessMs: peerStalenessMs });
  // This node applies position 1 (committed by another), as the fence will ask of everyone.
  bus.publish(SUBJECTS.events, { node: 'elsewhere', first: 1, last: 1, events: [{ ...event(1), at: event(1).at.toISOString() }] });
  await new Promise((r) => setTimeout(r, 20));
  expect(cluster.liveNodes()).toHaveLength(peers.length + 1);
  return { cluster, bus, follower };
}

const peers = Array.from({ length: 300 }, (_, i) => `peer-${String(i).padStart(3, '0')}`);

describe('a fence over many nodes', () => {
  it('counts every confirmation when hundreds arrive in one turn, and returns then (its timeout is a minute)', async () => {
    const { cluster, bus, follower } = await clusterWithPeers(peers, 60_000, 60_000);
    expect(follower.position).toBe(1);
    const fencing = cluster.fence(1);
    // All in one synchronous burst: the fence hears each of them, not only the first.
    for (const node of peers) bus.publish(SUBJECTS.acks('n1'), { kind: 'applied', node, position: 1 });
    expect(await fencing).toEqual({ position: 1, nodesConfirmed: 301, nodesExpected: 301, nodesMissing: [] });
    await cluster.stop();
  });

  it('names exactly the nodes that do not confirm', async () => {
    const { cluster, bus } = await clusterWithPeers(peers, 200, 300);
    const silent = new Set(['peer-007', 'peer-150', 'peer-299']);
    const fencing = cluster.fence(1);
    for (const node of peers) if (!silent.has(node)) bus.publish(SUBJECTS.acks('n1'), { kind: 'applied', node, position: 1 });
    // One confirms late, after a turn, but before the fence gives up.
    setTimeout(() => bus.publish(SUBJECTS.acks('n1'), { kind: 'applied', node: 'peer-150', position: 1 }), 50);
    expect(await fencing).toEqual({ position: 1, nodesConfirmed: 299, nodesExpected: 301, nodesMissing: ['peer-007', 'peer-299'] });
    await cluster.stop();
  });
});
