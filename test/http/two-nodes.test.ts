import { sql } from 'kysely';
import { describe, expect, it, vi } from 'vitest';
import { verifyChain } from '../../src/store/hash-chain.ts';
import { freshPostgres } from '../support/backends.ts';
import { agentBody, seedPrincipals, startTestNode, type TestNode } from '../support/node.ts';

async function eventually(check: () => boolean, timeoutMs = 5000): Promise<number> {
  const start = Date.now();
  while (!check()) {
    if (Date.now() - start > timeoutMs) throw new Error(`not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
  return Date.now() - start;
}

describe('two nodes sharing one PostgreSQL', () => {
  it('a node hears the other node\'s commits by NOTIFY, not by polling', async () => {
    const backend = await freshPostgres();
    // Polling every minute: only LISTEN/NOTIFY can bring the other node's write in time.
    const a = await startTestNode(backend, { nodeId: 'a', pollMs: 60_000 });
    const b = await startTestNode(backend, { nodeId: 'b', pollMs: 60_000 });
    try {
      await seedPrincipals(a);
      await a.api('POST', '/v1/agents', agentBody({ id: 'seen-elsewhere' }));
      await eventually(() => b.view.agents.get('seen-elsewhere')?.record.status === 'registered', 2000);
      await b.api('POST', '/v1/agents/seen-elsewhere/revoke', { mode: 'immediate', reason: 'x' });
      await eventually(() => a.view.agents.get('seen-elsewhere')?.record.status === 'revoked', 2000);
      expect((await a.api('GET', '/v1/agents/seen-elsewhere')).body.version).toBe(2);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('a commit held back by a transaction still open elsewhere is read once that one ends, not at the next poll', async () => {
    const backend = await freshPostgres();
    const a = await startTestNode(backend, { nodeId: 'a', pollMs: 60_000 });
    const b = await startTestNode(backend, { nodeId: 'b', pollMs: 60_000 });
    try {
      await seedPrincipals(a);
      await b.follower.sync();
      // An open transaction with an id older than the next append's: until it ends, a read
      // cannot tell whether it will add events before that append, so holds the append back.
      await b.connection.db.transaction().execute(async (trx) => {
        await sql`select pg_current_xact_id()`.execute(trx);
        await a.api('POST', '/v1/agents', agentBody({ id: 'held-back' }));
        await new Promise((r) => setTimeout(r, 300));
        expect(b.view.agents.get('held-back')).toBeUndefined();
      });
      // No other commit, no poll within the minute: only the retried read can bring it.
      await eventually(() => b.view.agents.get('held-back')?.record.status === 'registered', 3000);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('concurrent writes on both nodes keep one gap-free chain and both views agree', async () => {
    const backend = await freshPostgres();
    const nodes: TestNode[] = [await startTestNode(backend, { nodeId: 'a' }), await startTestNode(backend, { nodeId: 'b' })];
    try {
      await seedPrincipals(nodes[0]!);
      await nodes[1]!.follower.sync();
      const before = await nodes[0]!.eventCount();
      const writes = Array.from({ length: 40 }, (_, i) => nodes[i % 2]!.api('POST', '/v1/agents', agentBody({ id: `multi-${i}` })));
      expect((await Promise.all(writes)).every((r) => r.status === 201)).toBe(true);
      // Both nodes race to authorize the same agent with the same If-Match: one wins.
      const race = await Promise.all(nodes.map((n) => n.api('POST', '/v1/agents/multi-0/authorize', { grants: [] }, { 'if-match': '"1"' })));
      expect(race.map((r) => r.status).sort()).toEqual([200, 412]);

      // readAll holds back rows past the server-wide snapshot xmin (another test file's open
      // transaction can pin it for a moment): wait for the whole log.
      let events = await nodes[0]!.store.readAll(0, 10_000);
      await vi.waitFor(async () => {
        events = await nodes[0]!.store.readAll(0, 10_000);
        expect(events).toHaveLength(before + 40 + 1);
      }, { timeout: 15_000, interval: 100 });
      expect(verifyChain(events).ok).toBe(true);
      await Promise.all(nodes.map((n) => n.follower.sync()));
      const [viewA, viewB] = await Promise.all(nodes.map(async (n) => (await n.api('GET', '/v1/agents?limit=1000')).body));
      expect(viewA).toEqual(viewB);
      expect(viewA.agents).toHaveLength(40);
    } finally {
      await Promise.all(nodes.map((n) => n.close()));
    }
  });

  it('readyz turns 503 while the event log cannot be read, without exposing why, and recovers', async () => {
    const node = await startTestNode(await freshPostgres(), { pollMs: 20 });
    try {
      // Ready once it has heard its own broadcast (a start on a busy machine may take a moment).
      await vi.waitFor(async () => {
        const ready = (await node.api('GET', '/readyz', undefined, {}, null)).body;
        expect(ready, JSON.stringify(ready)).toMatchObject({ ready: true });
      }, { timeout: 5000, interval: 50 });
      await sql`alter table events rename to events_away`.execute(node.connection.db);
      await eventually(() => node.follower.status.lastError !== null, 3000);
      const down = await node.api('GET', '/readyz', undefined, {}, null);
      expect(down.status).toBe(503);
      expect(down.body).toMatchObject({ ready: false, checks: { log: { ok: false } } });
      expect(JSON.stringify(down.body)).not.toMatch(/events_away|relation|127\.0\.0\.1|does not exist/);
      await sql`alter table events_away rename to events`.execute(node.connection.db);
      await eventually(() => node.follower.status.lastError === null, 3000);
      expect((await node.api('GET', '/readyz', undefined, {}, null)).status).toBe(200);
    } finally {
      await node.close();
    }
  });
});
