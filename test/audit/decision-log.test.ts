import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { anchorBody, decisionBody, decisionHash, DecisionLog, type DecisionRecord } from '../../src/audit/decision-log.ts';
import { chainNodes, readAnchors, readChain, readChainHead, readDecisions, readNodeAnchors, readSharedChain, readSubjectDecisions, subjectDecisionsQuery, verifyDecisionChain } from '../../src/audit/decision-reads.ts';
import { chainHash, GENESIS_HASH } from '../../src/store/hash-chain.ts';
import { connect, type Connection } from '../../src/store/connect.ts';
import { migrateToLatest } from '../../src/store/migrate.ts';
import { backends, freshPostgres } from '../support/backends.ts';
import { sharedChainLog } from '../support/shared-chain.ts';

const record = (i: number): DecisionRecord => ({
  id: randomUUID(), nodeId: 'n1', at: new Date('2026-11-23T10:00:00.000Z'), request: { subject: { type: 'user', id: `u${i}` } },
  decision: i % 2 === 0, layer: 'subject', code: null, reasons: i % 2 === 0 ? ['p1'] : [], policyVersion: 1, logPosition: 7,
});

describe.each(backends)('decision log on $name', ({ fresh }) => {
  let connection: Connection;
  let log: DecisionLog;
  beforeEach(async () => {
    connection = await connect(await fresh());
    await migrateToLatest(connection.db);
    log = new DecisionLog(connection.db);
  });
  afterEach(async () => connection.db.destroy());

  it("records concurrent decisions in the node's own chain: numbered without gaps, in the log's order, each hash over the one before", async () => {
    const stored = await Promise.all(Array.from({ length: 50 }, (_, i) => log.record(record(i))));
    expect(stored.map((d) => d.chainSeq).sort((a, b) => a! - b!)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
    const all = await readDecisions(connection.db, 0, 1000);
    expect(all).toHaveLength(50);
    expect(all.map((d) => d.chainSeq)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
    expect(all.map((d) => d.seq)).toEqual(stored.map((d) => d.seq).sort((a, b) => a - b));
    expect(all[0]).toMatchObject({ request: expect.any(Object), reasons: expect.any(Array), policyVersion: 1, logPosition: 7 });
    expect(await readChain(connection.db, 'n1', 0, 1000)).toEqual(all);
    expect(verifyDecisionChain(all)).toEqual({ ok: true });
    const edited = all.map((d, i) => (i === 10 ? { ...d, decision: !d.decision } : d));
    expect(verifyDecisionChain(edited)).toEqual({ ok: false, at: 11 });
    expect(verifyDecisionChain([...all.slice(0, 5), ...all.slice(6)])).toEqual({ ok: false, at: 7 });
    // The log's sequence number is an address, not part of the hash: the chain's number is.
    expect(decisionBody(all[3]!)).toContain('"chainSeq":4,');
    expect(decisionBody(all[3]!)).not.toContain('"seq"');
  });

  it("one subject's decisions since a time, in order and paged, read through the subject index (migration 0010)", async () => {
    const at = (i: number) => new Date(Date.UTC(2026, 10, 1 + (i % 10)));
    for (let i = 0; i < 60; i++) await log.record({ ...record(i % 3), at: at(i) });
    const since = new Date(Date.UTC(2026, 10, 5));
    const u1 = await readSubjectDecisions(connection.db, 'u1', since, 0, 1000);
    expect(u1.length).toBe(60 / 3 - 8); // u1 is every third record; 8 of its 20 fall before the 5th
    expect(u1.every((d) => (d.request as { subject: { id: string } }).subject.id === 'u1' && d.at >= since)).toBe(true);
    expect(u1.map((d) => d.seq)).toEqual([...u1.map((d) => d.seq)].sort((a, b) => a - b));
    expect(await readSubjectDecisions(connection.db, 'u1', since, u1[4]!.seq, 3)).toEqual(u1.slice(5, 8));
    expect(await readSubjectDecisions(connection.db, 'nobody', since, 0, 10)).toEqual([]);
    // The planner takes the index once a scan of the table is made dear (the table is tiny).
    const plan = await connection.db.transaction().execute(async (tx) => {
      await sql`set local enable_seqscan = off`.execute(tx);
      return (await subjectDecisionsQuery(tx, 'u1', since, 0, 10).explain()).map((r) => Object.values(r).join(' ')).join('\n');
    });
    expect(plan).toMatch(/decisions_by_agent/);
  });

  it('several nodes on one database each keep a gap-free chain of their own, with no number of the log given twice', async () => {
    const logs = [log, new DecisionLog(connection.db), new DecisionLog(connection.db)];
    for (let round = 0; round < 5; round++) {
      await Promise.all(logs.flatMap((l, n) => Array.from({ length: 8 }, (_, i) => l.record({ ...record(round * 100 + n * 10 + i), nodeId: `n${n}` }))));
    }
    const all = await readDecisions(connection.db, 0, 1000);
    expect(new Set(all.map((d) => d.seq)).size).toBe(120);
    expect(new Set(all.map((d) => d.id)).size).toBe(120);
    expect(await chainNodes(connection.db)).toEqual(['n0', 'n1', 'n2']);
    for (const node of ['n0', 'n1', 'n2']) {
      const chain = await readChain(connection.db, node, 0, 1000);
      expect(chain.map((d) => d.chainSeq)).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
      expect(chain.map((d) => d.seq)).toEqual(chain.map((d) => d.seq).sort((a, b) => a - b));
      expect(verifyDecisionChain(chain)).toEqual({ ok: true });
      expect(await readChainHead(connection.db, node)).toEqual({ at: 40, hash: chain[39]!.hash });
    }
  });

  it('the same node id written by two processes: a batch onto a moved head is refused whole and chained again, the chain never forks', async () => {
    const other = new DecisionLog(connection.db);
    const outcomes: PromiseSettledResult<unknown>[] = [];
    for (let round = 0; round < 4; round++) {
      outcomes.push(...(await Promise.allSettled([log, other].flatMap((l, n) => Array.from({ length: 5 }, (_, i) => l.record(record(round * 100 + n * 10 + i)))))));
    }
    // Each refused batch is chained again onto the head the other wrote (a batch that loses
    // eight times in a row fails, as a misconfiguration may): whatever was recorded is one chain.
    const recorded = outcomes.filter((o) => o.status === 'fulfilled').length;
    expect(recorded).toBeGreaterThan(20);
    const chain = await readChain(connection.db, 'n1', 0, 1000);
    expect(chain.map((d) => d.chainSeq)).toEqual(Array.from({ length: recorded }, (_, i) => i + 1));
    expect(verifyDecisionChain(chain)).toEqual({ ok: true });
    // A batch chained onto a head that is not the chain's is refused with nothing written.
    const stale = { ...record(1), id: randomUUID(), chain_seq: 2, recorded_at: new Date().toISOString(), prev_hash: chain[0]!.hash, hash: 'f'.repeat(64), policy_version: 1, log_position: 7, shadow: null };
    const refused = await sql<{ appended: boolean }>`select appended from leash_append_chain('n1', 1, ${chain[0]!.hash}, ${JSON.stringify([stale])}::jsonb)`.execute(connection.db);
    expect(refused.rows[0]!.appended).toBe(false);
    expect(await readChain(connection.db, 'n1', 0, 1000)).toHaveLength(recorded);
  });

  it('records removed from the end of its chain while it runs: the node writes nothing more rather than new records in their place', async () => {
    for (let i = 1; i <= 5; i++) await log.record(record(i));
    await sql`alter table decisions disable trigger user`.execute(connection.db);
    await sql`delete from decisions where chain_seq >= 4`.execute(connection.db);
    // A batch onto the head it knows is refused; the head it then reads is behind what it wrote.
    await expect(log.record(record(6))).rejects.toThrow(/ends at record 3 in the database, but this node wrote record 5: records were removed/);
    await expect(log.record(record(7))).rejects.toThrow(/records were removed/);
    expect((await readChain(connection.db, 'n1', 0, 10)).map((d) => d.chainSeq)).toEqual([1, 2, 3]);
    // Another process (the node restarted) starts from what the database holds; verify is what tells.
    await new DecisionLog(connection.db).record(record(8));
    expect((await readChain(connection.db, 'n1', 0, 10)).map((d) => d.chainSeq)).toEqual([1, 2, 3, 4]);
  });

  it('refuses a chain without a node id', async () => {
    await expect(log.record({ ...record(1), nodeId: '' })).rejects.toThrow(/needs a node id/);
    await expect(sql`select appended from leash_append_chain('', 0, ${'0'.repeat(64)}, '[]'::jsonb)`.execute(connection.db)).rejects.toThrow(/needs a node id/);
    expect(await readDecisions(connection.db, 0, 10)).toEqual([]);
  });

  it('anchors each chain head it wrote into the shared anchor chain, which hashes as verify recomputes it, and only a head that exists', async () => {
    const other = new DecisionLog(connection.db);
    await Promise.all([log.record(record(1)), log.record(record(2)), other.record({ ...record(3), nodeId: 'n2' })]);
    await log.anchor();
    await other.anchor();
    await log.anchor(); // nothing new: no second anchor of the same head
    await log.record(record(4));
    await log.close();
    const anchors = await readAnchors(connection.db, 0, 10);
    expect(anchors.map((a) => [a.seq, a.nodeId, a.chainSeq])).toEqual([[1, 'n1', 2], [2, 'n2', 1], [3, 'n1', 3]]);
    let prev = GENESIS_HASH;
    for (const a of anchors) {
      expect(a.prevHash).toBe(prev);
      expect(a.hash).toBe(chainHash(prev, anchorBody(a)));
      prev = a.hash;
    }
    const n1 = await readChain(connection.db, 'n1', 0, 10);
    expect(anchors[2]!.chainHash).toBe(n1[2]!.hash);
    expect(await readNodeAnchors(connection.db, 'n1', { chainSeq: 0, seq: 0 }, 10, 10)).toEqual([anchors[0], anchors[2]]);
    await expect(sql`select seq from leash_append_anchor('n1', 3, ${'0'.repeat(64)}, now(), '{"seq":', '}')`.execute(connection.db)).rejects.toThrow(/is not the hash of record 3/);
    await expect(sql`select seq from leash_append_anchor('n1', 9, ${n1[2]!.hash}, now(), '{"seq":', '}')`.execute(connection.db)).rejects.toThrow(/is not the hash of record 9/);
  });

  it('the database chains each record exactly as verify hashes it, whatever its text (escapes, non-ASCII, a "seq" of its own, a shadow)', async () => {
    const awkward = ['quote " and backslash \\ and newline \n and tab \t', 'ünïcödé 日本語 😀 \u0301e', '"seq":0', '\u2028\u2029 and \u007f', '</script>'];
    const awkwardRecord = (text: string, i: number): DecisionRecord => ({
      ...record(i), request: { subject: { type: 'user', id: text, properties: { seq: 0, '"seq":0': text, nested: [{ seq: i }] } } },
      reasons: [text], code: i % 2 ? text : null,
      ...(i === 1 ? { shadow: { decision: true, layer: 'all', reasons: [text], code: 'REVOKED_GRACE_PERIOD' } } : {}),
    });
    const stored = await Promise.all(awkward.map((text, i) => log.record(awkwardRecord(text, i))));
    for (const [i, text] of awkward.entries()) stored.push(await log.record(awkwardRecord(text, i)));
    const all = await readDecisions(connection.db, 0, 100);
    // Read back from the database (jsonb, timestamptz), each hash is still the one over its body.
    for (const d of all) expect(d.hash).toBe(decisionHash(d.prevHash, d));
    expect(all.map((d) => d.hash)).toEqual([...stored].sort((a, b) => a.seq - b.seq).map((d) => d.hash));
    expect(verifyDecisionChain(all)).toEqual({ ok: true });
  });

  it('refuses a writer of an earlier version (leash_append_decisions, leash_chain_decisions): it would fork the log', async () => {
    await log.record(record(1));
    const [head] = await readDecisions(connection.db, 0, 10);
    await expect(sql`select appended from leash_append_decisions(${String(head!.seq)}, ${head!.hash}, '[]'::jsonb)`.execute(connection.db)).rejects.toThrow(/upgrade this node/);
    await expect(sql`select hashes from leash_chain_decisions('[]'::jsonb)`.execute(connection.db)).rejects.toThrow(/upgrade this node/);
    expect(await readDecisions(connection.db, 0, 10)).toHaveLength(1);
  });

  it('is append-only in the database', async () => {
    await log.record(record(1));
    await expect(sql`update decisions set decision = true`.execute(connection.db)).rejects.toThrow(/append-only/);
    await expect(sql`delete from decisions`.execute(connection.db)).rejects.toThrow(/append-only/);
    await expect(sql`truncate decisions`.execute(connection.db)).rejects.toThrow(/append-only/);
    expect(await readDecisions(connection.db, 0, 10)).toHaveLength(1);
    await log.anchor();
    await expect(sql`update decision_anchors set chain_seq = 2`.execute(connection.db)).rejects.toThrow(/append-only/);
    await expect(sql`delete from decision_anchors`.execute(connection.db)).rejects.toThrow(/append-only/);
    await expect(sql`truncate decision_anchors`.execute(connection.db)).rejects.toThrow(/append-only/);
  });

  it('a log from before per-node chains: its shared chain stays as it was, and new decisions follow it in the log', async () => {
    const old = await connect(await fresh());
    try {
      await sharedChainLog(old.db, [1, 2, 3].map((i) => ({ ...record(i), nodeId: 'old' })));
      await migrateToLatest(old.db);
      const upgraded = new DecisionLog(old.db);
      await upgraded.record(record(4));
      await upgraded.record(record(5));
      const all = await readDecisions(old.db, 0, 10);
      expect(all.map((d) => [d.seq, d.chainSeq, d.nodeId])).toEqual([[1, undefined, 'old'], [2, undefined, 'old'], [3, undefined, 'old'], [4, 1, 'n1'], [5, 2, 'n1']]);
      const shared = await readSharedChain(old.db, 0, 10);
      expect(shared).toEqual(all.slice(0, 3));
      expect(verifyDecisionChain(shared)).toEqual({ ok: true });
      expect(verifyDecisionChain(all.slice(3))).toEqual({ ok: true });
      // Read through its own index, not past every newer record.
      const plan = await old.db.transaction().execute(async (tx) => {
        await sql`set local enable_seqscan = off`.execute(tx);
        return (await tx.selectFrom('decisions').selectAll().where('chain_seq', 'is', null).where('seq', '>', '0').orderBy('seq').limit(10).explain()).map((r) => Object.values(r).join(' ')).join('\n');
      });
      expect(plan).toMatch(/decisions_shared_chain/);
    } finally {
      await old.db.destroy();
    }
  });
});

describe('decision log on postgres, its connections cut', () => {
  it('keeps one chain when the server ends its sessions: a record may be refused, none is half-written, the next ones are recorded', async () => {
    // The appends run as prepared statements on pooled connections; a connection the server
    // dropped must be replaced (and its statement prepared again), never reused broken.
    const backend = await freshPostgres();
    const connection = await connect(backend);
    const admin = await connect(backend);
    try {
      await migrateToLatest(connection.db);
      const log = new DecisionLog(connection.db);
      await Promise.all(Array.from({ length: 8 }, (_, i) => log.record(record(i))));
      await sql`select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()`.execute(admin.db);
      const outcomes = await Promise.allSettled(Array.from({ length: 8 }, (_, i) => log.record(record(100 + i))));
      const refused = outcomes.filter((o) => o.status === 'rejected').length;
      for (let i = 0; i < 8; i++) await log.record(record(200 + i)); // each on a working connection
      const all = await readDecisions(connection.db, 0, 1000);
      expect(all).toHaveLength(8 + (8 - refused) + 8);
      expect(all.map((d) => d.chainSeq)).toEqual(all.map((_, i) => i + 1));
      expect(verifyDecisionChain(all)).toEqual({ ok: true });
    } finally {
      await connection.db.destroy();
      await admin.db.destroy();
    }
  });
});

describe('decision log on postgres behind a transaction pooler', () => {
  it('goes on recording when the server no longer knows the prepared append (as behind PgBouncer in transaction mode)', async () => {
    // One connection, so the statement dropped below is the one the log prepared: the client
    // still believes it prepared, as it would when a pooler moves it to another server session.
    const connection = await connect({ ...(await freshPostgres()), poolSize: 1 });
    try {
      await migrateToLatest(connection.db);
      const log = new DecisionLog(connection.db);
      for (let i = 1; i <= 6; i++) await log.record(record(i));
      await sql`deallocate all`.execute(connection.db);
      await log.record(record(7));
      await log.record(record(8));
      const all = await readDecisions(connection.db, 0, 10);
      expect(all.map((d) => d.chainSeq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
      expect(verifyDecisionChain(all)).toEqual({ ok: true });
    } finally {
      await connection.db.destroy();
    }
  });
});
