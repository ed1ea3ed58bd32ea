import { createServer, type Server } from 'node:http';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import { connect, JSONCodec, type NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { replay } from '../../src/audit/replay.ts';
import { PostgresSource } from '../../src/audit/source.ts';
import { traceDecision } from '../../src/audit/trace.ts';
import type { Backend } from '../../src/store/connect.ts';
import { freshPostgres } from '../support/backends.ts';
import { listeningNode, seedPrincipals, type TestNode } from '../support/node.ts';
import { peoplePins, personToken } from '../support/people.ts';
import { pay, payToken, registerPayBot } from '../support/payments.ts';

// Approvals on two nodes sharing PostgreSQL and NATS: an approval is spent once across both
// (two PEPs retrying on the two nodes at the same instant get exactly one allow), pending
// approvals go out on NATS and to a webhook as JWTs signed with Leash's keys, and replay and
// trace show decisions made with an approval as they were.

let backend: Backend;
let n1: TestNode;
let n2: TestNode;
let url1: string;
let nats: NatsConnection;
let receiver: Server;
const published: Record<string, unknown>[] = [];
/** Webhook deliveries as the receiver got them: the raw body, and whether it took it. */
const deliveries: { body: string; accepted: boolean }[] = [];
const codec = JSONCodec();

beforeAll(async () => {
  backend = await freshPostgres();
  // The receiver refuses its first two deliveries: Leash must retry until one is taken.
  receiver = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      const accepted = deliveries.length >= 2 && req.headers['content-type'] === 'application/jwt';
      deliveries.push({ body, accepted });
      res.writeHead(accepted ? 202 : 503).end();
    });
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
  const webhook = `http://127.0.0.1:${(receiver.address() as { port: number }).port}/approvals?secret=s3cr3t`;
  const options = { natsUrl: inject('natsUrl'), humanPins: peoplePins, approvalWebhook: webhook, approvalBackoffMs: () => 20 };
  ({ node: n1, url: url1 } = await listeningNode(backend, { ...options, nodeId: 'n1' }));
  ({ node: n2 } = await listeningNode(backend, { ...options, nodeId: 'n2' }));
  nats = await connect({ servers: inject('natsUrl') });
  const sub = nats.subscribe('leash.approvals');
  void (async () => {
    for await (const m of sub) published.push(codec.decode(m.data) as Record<string, unknown>);
  })();
  await seedPrincipals(n1);
  await registerPayBot(n1);
  await n2.follower.waitFor(n1.view.position);
});
afterAll(async () => {
  await Promise.all([n1?.close(), n2?.close()]);
  await nats?.close();
  receiver?.close();
});

/**
 * Until each node has heard the other's heartbeats within its staleness bound. In one busy
 * test process a node's heartbeats can pause past it, and a fence then rightly leaves it out.
 */
async function bothLive(): Promise<void> {
  for (const deadline = Date.now() + 10_000; !(n1.cluster.liveNodes().length === 2 && n2.cluster.liveNodes().length === 2);) {
    if (Date.now() > deadline) throw new Error(`the two nodes do not hear each other: ${n1.cluster.liveNodes()} / ${n2.cluster.liveNodes()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('an approval is spent once across nodes', () => {
  it('two PEPs retrying on two nodes at the same instant get exactly one allow, round after round', async () => {
    const token = await payToken();
    const alice = await personToken('alice');
    for (let round = 0; round < 8; round++) {
      const doc = `race-${round}`;
      const held = await pay(n1, token, 20_000 + round, doc);
      expect(held.context.code).toBe('APPROVAL_REQUIRED');
      const id = held.context.approval!.id;
      // Approved on the other node: fenced, so both know before the answer returns.
      await bothLive();
      const approved = await n2.api('POST', `/v1/approvals/${id}/approve`, { reason: 'ok' }, {}, alice);
      expect(approved.body).toMatchObject({ status: 'approved', nodesConfirmed: 2, nodesExpected: 2 });
      const [a, b] = await Promise.all([n1, n2].map((n) => pay(n, token, 20_000 + round, doc, { approvalId: id })));
      const allows = [a!, b!].filter((r) => r.decision);
      expect(allows, `round ${round}`).toHaveLength(1);
      const loser = [a!, b!].find((r) => !r.decision)!;
      expect(loser.context.code).toBe('APPROVAL_REQUIRED');
      const events = await n1.store.readStream(`approval/${id}`);
      expect(events.map((e) => e.type)).toEqual(['ApprovalRequested', 'ApprovalGranted', 'ApprovalUsed']);
      expect(events[2]!.data).toEqual({ decisionId: allows[0]!.context.id });
    }
  });

  it('replay decides every decision made with approvals the same way again; trace names who approved', async () => {
    const token = await payToken();
    const held = await pay(n1, token, 99_000, 'traced');
    const id = held.context.approval!.id;
    await n1.api('POST', `/v1/approvals/${id}/approve`, { reason: 'board minute 12' }, {}, await personToken('alice'));
    const allowed = await pay(n2, token, 99_000, 'traced', { approvalId: id });
    expect(allowed.decision).toBe(true);
    const trace = await traceDecision(new PostgresSource(n1.connection.db), allowed.context.id);
    expect(trace!.approval).toMatchObject({ id, status: 'approved', answeredBy: 'human:alice', reason: 'board minute 12', approvers: ['human:alice'] });
    const report = await replay(new PostgresSource(n1.connection.db), {});
    expect(report.decisions).toBeGreaterThan(20);
    expect(report.differing).toBe(0);
  });
});

describe('pending approvals reach the approvers', () => {
  it('on NATS, and at the webhook as a JWT signed with Leash\'s key, retried until taken, without the request\'s context', async () => {
    const held = await pay(n1, await payToken(), 12_345, 'notified');
    const id = held.context.approval!.id;
    await expect.poll(() => published.find((m) => m.id === id), { timeout: 5_000 }).toMatchObject({ id, status: 'pending', agent: 'pay-bot', approvers: ['human:alice'] });
    const notice = published.find((m) => m.id === id)!;
    expect(JSON.stringify(notice)).not.toContain('12345');

    const jwks = createRemoteJWKSet(new URL(`${url1}/.well-known/jwks.json`));
    const verified = async (body: string) => (await jwtVerify(body, jwks, { issuer: 'http://127.0.0.1:8080', typ: 'leash-approval+jwt' })).payload as { jti: string; approval: { id: string } };
    await expect.poll(async () => {
      for (const d of deliveries.filter((x) => x.accepted)) if ((await verified(d.body)).approval.id === id) return true;
      return false;
    }, { timeout: 10_000 }).toBe(true);
    // Every delivery verifies with the JWKS; none carries the amount.
    for (const d of deliveries) {
      const claims = await verified(d.body);
      expect(claims.jti).toBe(claims.approval.id);
      expect(d.body).not.toContain('s3cr3t');
    }
    // The first approval was refused twice, then taken; each approval is taken once.
    expect(deliveries.slice(0, 2).every((d) => !d.accepted)).toBe(true);
    const taken = await Promise.all(deliveries.filter((d) => d.accepted).map(async (d) => (await verified(d.body)).approval.id));
    expect(new Set(taken).size).toBe(taken.length);
  });
});
