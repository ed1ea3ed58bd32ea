import { SignJWT } from 'jose';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { InProcessBus } from '../../src/bus/bus.ts';
import { Cluster, SUBJECTS } from '../../src/cluster/cluster.ts';
import type { EventStore, StoredEvent } from '../../src/store/event-store.ts';
import { Follower } from '../../src/store/follower.ts';
import { freshPostgres } from '../support/backends.ts';
import { PEP_TOKEN, agentBody, agentPrivateKey, seedPrincipals, startTestNode, type TestNode } from '../support/node.ts';
import { SharedBus } from '../support/shared-bus.ts';

// SPEC §6, the fence in detail: two nodes in this process on one PostgreSQL, with a
// broadcast whose delivery the test controls (late, lost, cut off).

const mint = (agent: string) => {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ authorization_details: [{ type: 'leash:cedar', actions: ['read'], resourceIn: { type: 'Folder', id: 'invoices' } }] })
    .setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setIssuer('https://idp.example').setAudience('leash').setSubject(agent)
    .setIssuedAt(now).setExpirationTime(now + 300).sign(agentPrivateKey);
};

async function decide(node: TestNode, agent: string, token: string) {
  const res = await node.api('POST', '/access/v1/evaluation', {
    subject: { type: 'agent', id: agent, properties: { token } }, action: { name: 'read' }, resource: { type: 'Document', id: 'd1' },
    context: { entities: [{ uid: { type: 'Document', id: 'd1' }, attrs: {}, parents: [{ type: 'Folder', id: 'invoices' }] }, { uid: { type: 'Folder', id: 'invoices' }, attrs: {}, parents: [] }] },
  }, {}, PEP_TOKEN);
  return { status: res.status, decision: res.status === 200 ? res.body.decision : null, code: res.body.context?.code ?? res.body.code };
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('the fence, with a broadcast the test controls', () => {
  const bus = new SharedBus();
  let a: TestNode;
  let b: TestNode;
  let c: TestNode;
  const agents = ['late', 'lost', 'patient', 'cut', 'fine'];
  const tokens: Record<string, string> = {};

  beforeAll(async () => {
    const database = await freshPostgres();
    // No polling: whatever b learns, it learns from the broadcast or from a catch-up it started.
    const options = { pollMs: 600_000, stalenessMs: 400, heartbeatMs: 50 };
    a = await startTestNode(database, { ...options, nodeId: 'a', bus: bus.for('a') });
    b = await startTestNode(database, { ...options, nodeId: 'b', bus: bus.for('b') });
    // c trusts its caches for longer after going silent: fences must wait that long for it.
    c = await startTestNode(database, { ...options, stalenessMs: 900, nodeId: 'c', bus: bus.for('c') });
    await seedPrincipals(a);
    // The example policies let finance read invoices; the ceiling is the invoices folder.
    const ceiling = { template: 'ceiling-folder', values: { '?resource': { type: 'Folder', id: 'invoices' } } };
    for (const id of agents) expect((await a.api('POST', '/v1/agents', agentBody({ id, groups: ['finance'], ceiling }))).status).toBe(201);
    await new Promise((r) => setTimeout(r, 1100));
    for (const id of agents) expect((await a.api('POST', `/v1/agents/${id}/authorize`, { grants: [] })).status).toBe(200);
    await new Promise((r) => setTimeout(r, 1100));
    for (const id of agents) tokens[id] = await mint(id);
  }, 60_000);

  afterAll(async () => {
    await a?.close();
    await c?.close();
    await b?.close().catch(() => {}); // its database pool may already be gone (last test)
  });

  beforeEach(async () => {
    bus.drop = () => false;
    bus.delay = () => 0;
    for (const node of [a, b, c]) {
      await until('all three nodes live and ready', async () => {
        const r = await node.api('GET', '/readyz');
        return r.status === 200 && r.body.checks.broadcast.detail.startsWith('3 live node(s)');
      });
    }
  });

  it('a node slow to hear the broadcast holds the revoke until it has applied it', async () => {
    expect(await decide(b, 'late', tokens.late!)).toMatchObject({ decision: true });
    bus.delay = (node) => (node === 'b' ? 150 : 0); // everything reaches b 150 ms late
    const started = Date.now();
    const revoked = await a.api('POST', '/v1/agents/late/revoke', { mode: 'immediate', reason: 'slow node' });
    expect(revoked.body).toMatchObject({ nodesConfirmed: 3, nodesExpected: 3, nodesMissing: [] });
    expect(Date.now() - started).toBeGreaterThanOrEqual(150);
    expect(await decide(b, 'late', tokens.late!)).toMatchObject({ decision: false });
  });

  it('a lost message is noticed by its position (heartbeats carry positions) and repaired from the log', async () => {
    expect(await decide(b, 'lost', tokens.lost!)).toMatchObject({ decision: true });
    bus.drop = (node, subject) => node === 'b' && subject === SUBJECTS.events; // b never gets the events themselves
    const revoked = await a.api('POST', '/v1/agents/lost/revoke', { mode: 'immediate', reason: 'lost message' });
    expect(revoked.body).toMatchObject({ nodesConfirmed: 3, nodesExpected: 3, nodesMissing: [] });
    expect(b.view.agents.get('lost')?.record.status).toBe('revoked');
    expect(await decide(b, 'lost', tokens.lost!)).toMatchObject({ decision: false });
  });

  it('a silent node is waited for as long as its own staleness bound, though the fencing node\'s is shorter', async () => {
    expect(await decide(c, 'patient', tokens.patient!)).toMatchObject({ decision: true });
    bus.drop = (node) => node === 'c';
    const started = Date.now();
    const revoked = await a.api('POST', '/v1/agents/patient/revoke', { mode: 'immediate', reason: 'silent node' });
    expect(revoked.body).toMatchObject({ nodesConfirmed: 2, nodesExpected: 3, nodesMissing: ['c'] });
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    expect((await c.api('GET', '/readyz')).status).toBe(503);
    expect(await decide(c, 'patient', tokens.patient!)).toMatchObject({ decision: false });
  });

  it('a node cut off is named by the fence, re-reads the log before deciding, and without the log decides nothing', async () => {
    expect(await decide(b, 'cut', tokens.cut!)).toMatchObject({ decision: true });
    bus.drop = (node) => node === 'b'; // nothing reaches b, nothing leaves it
    const revoked = await a.api('POST', '/v1/agents/cut/revoke', { mode: 'immediate', reason: 'cut off' });
    expect(revoked.body).toMatchObject({ nodesConfirmed: 2, nodesExpected: 3, nodesMissing: ['b'] });
    const ready = await b.api('GET', '/readyz');
    expect(ready.status).toBe(503);
    expect(ready.body.checks.broadcast).toMatchObject({ ok: false });
    expect(await decide(b, 'cut', tokens.cut!)).toMatchObject({ decision: false });
    expect(await decide(b, 'fine', tokens.fine!)).toMatchObject({ decision: true });
    await b.connection.db.destroy(); // and now Postgres is gone too
    expect(await decide(b, 'fine', tokens.fine!)).toMatchObject({ status: 503, code: 'NOT_READY' });
  });
});

describe('confirmations', () => {
  const event = (position: number): StoredEvent => ({
    position, streamId: `group/g${position}`, streamType: 'group', version: 1, type: 'GroupRegistered', data: {}, metadata: {},
    at: new Date(), idempotencyKey: null, prevHash: '', hash: '',
  });

  it('a node confirms a position only once every decision it made before that position has left', async () => {
    const fold = { position: 0, apply(e: StoredEvent) { this.position = e.position; } };
    const log = { readAll: async () => [], onCommit: () => () => {}, observe: () => {} } as unknown as EventStore; // an empty log: nothing to catch up
    const follower = new Follower(log, fold);
    const bus = new InProcessBus();
    const cluster = new Cluster({ nodeId: 'n1', bus, follower, heartbeatMs: 60_000 });
    const applied: number[] = [];
    bus.subscribe(SUBJECTS.acks('n2'), (m) => (m as { kind: string }).kind === 'applied' && applied.push((m as { position: number }).position));
    cluster.start();
    const tick = () => new Promise((r) => setTimeout(r, 5));

    const before = await cluster.admit(); // a decision starts at position 0…
    const inline = [event(1), event(2)].map((e) => ({ ...e, at: e.at.toISOString() }));
    bus.publish(SUBJECTS.events, { node: 'n2', first: 1, last: 2, replyTo: SUBJECTS.acks('n2'), events: inline });
    await tick();
    expect(follower.position).toBe(2); // …the fold moves on at once…
    expect(applied).toEqual([]); // …but position 2 is not vouched for while that decision is out
    const after = await cluster.admit();
    cluster.release(before);
    await tick();
    expect(applied).toEqual([2]); // the one admitted at 2 does not hold 2 back
    cluster.release(after);
    await cluster.stop();
  });
});
