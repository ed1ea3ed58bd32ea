import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { freshPostgres } from '../support/backends.ts';
import { agentBody, seedPrincipals, startTestNode, type TestNode } from '../support/node.ts';

// Two deployments (two databases) whose nodes share one NATS server, even under the same node
// ids: each broadcasts under its own deployment id, so neither takes the other's events as its
// own, nor counts the other's nodes in its fences.

let a: TestNode;
let b: TestNode;

beforeAll(async () => {
  a = await startTestNode(await freshPostgres(), { nodeId: 'same-id', natsUrl: inject('natsUrl') });
  b = await startTestNode(await freshPostgres(), { nodeId: 'same-id', natsUrl: inject('natsUrl') });
});
afterAll(async () => Promise.all([a?.close(), b?.close()]));

describe('deployments sharing a NATS server', () => {
  it('each has its own id, hears only its own nodes, and applies only its own events', async () => {
    const id = async (n: TestNode) => (await n.connection.db.selectFrom('deployment').select('id').executeTakeFirstOrThrow()).id;
    expect(await id(a)).not.toBe(await id(b));
    await seedPrincipals(a);
    const registered = await a.api('POST', '/v1/agents', agentBody({ id: 'only-in-a' }));
    expect(registered.status).toBe(201);
    // A fenced change in a waits for a's nodes only.
    expect((await a.api('POST', '/v1/agents/only-in-a/authorize', { grants: [] })).status).toBe(200);
    const suspended = await a.api('POST', '/v1/agents/only-in-a/suspend', { reason: 'x' });
    expect(suspended.body).toMatchObject({ nodesConfirmed: 1, nodesExpected: 1, nodesMissing: [] });
    // b's log and view hold nothing of a's (its own policy set is all), though a's events were broadcast inline.
    await new Promise((r) => setTimeout(r, 300));
    expect(b.view.agents.has('only-in-a')).toBe(false);
    expect(b.view.humans.has('alice')).toBe(false);
    expect(b.view.position).toBe(await b.eventCount());
  });
});
