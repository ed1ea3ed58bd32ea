import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { bodyAroundSeq, decisionBody, decisionHash, DecisionLog, readDecisions, readSubjectDecisions, subjectDecisionsQuery, verifyDecisionChain, type DecisionRecord } from '../../src/audit/decision-log.ts';
import { connect, type Connection } from '../../src/store/connect.ts';
import { migrateToLatest } from '../../src/store/migrate.ts';
import { backends, freshPostgres } from '../support/backends.ts';

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

  it('records concurrent decisions with gap-free sequence numbers in one hash chain', async () => {
    const stored = await Promise.all(Array.from({ length: 50 }, (_, i) => log.record(record(i))));
    expect(stored.map((d) => d.seq).sort((a, b) => a - b)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
    const all = await readDecisions(connection.db, 0, 1000);
    expect(all).toHaveLength(50);
    expect(all[0]).toMatchObject({ request: expect.any(Object), reasons: expect.any(Array), policyVersion: 1, logPosition: 7 });
    expect(verifyDecisionChain(all)).toEqual({ ok: true });
    const edited = all.map((d, i) => (i === 10 ? { ...d, decision: !d.decision } : d));
    expect(verifyDecisionChain(edited)).toEqual({ ok: false, seq: 11 });
    expect(verifyDecisionChain([...all.slice(0, 5), ...all.slice(6)])).toEqual({ ok: false, seq: 7 });
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

  it('several writers on one database (nodes) keep one gap-free chain, each taking the head the others moved', async () => {
    // Each batch is chained onto the head in the database, under the log's lock: whoever
    // wrote last, no writer forks the chain or skips a number.
    const logs = [log, new DecisionLog(connection.db), new DecisionLog(connection.db)];
    for (let round = 0; round < 5; round++) {
      await Promise.all(logs.flatMap((l, n) => Array.from({ length: 8 }, (_, i) => l.record({ ...record(round * 100 + n * 10 + i), nodeId: `n${n}` }))));
    }
    const all = await readDecisions(connection.db, 0, 1000);
    expect(all.map((d) => d.seq)).toEqual(Array.from({ length: 120 }, (_, i) => i + 1));
    expect(new Set(all.map((d) => d.id)).size).toBe(120);
    expect(verifyDecisionChain(all)).toEqual({ ok: true });
  });

  it('the database chains each record exactly as verify hashes it, whatever its text (escapes, non-ASCII, a "seq" of its own, a shadow)', async () => {
    const awkward = ['quote " and backslash \\ and newline \n and tab \t', 'ünïcödé 日本語 😀 \u0301e', '"seq":0', '\u2028\u2029 and \u007f', '</script>'];
    const awkwardRecord = (text: string, i: number): DecisionRecord => ({
      ...record(i), request: { subject: { type: 'user', id: text, properties: { seq: 0, '"seq":0': text, nested: [{ seq: i }] } } },
      reasons: [text], code: i % 2 ? text : null,
      ...(i === 1 ? { shadow: { decision: true, layer: 'all', reasons: [text], code: 'REVOKED_GRACE_PERIOD' } } : {}),
    });
    // A log's first batches are chained in the database; once it knows it writes alone, it
    // chains them itself. Both kinds of link must be the ones verify recomputes.
    const stored = await Promise.all(awkward.map((text, i) => log.record(awkwardRecord(text, i))));
    for (const [i, text] of awkward.entries()) stored.push(await log.record(awkwardRecord(text, i)));
    for (const d of stored) expect(d.hash).toBe(decisionHash(d.prevHash, d));
    const all = await readDecisions(connection.db, 0, 100);
    expect(all.map((d) => d.hash)).toEqual([...stored].sort((a, b) => a.seq - b.seq).map((d) => d.hash));
    expect(verifyDecisionChain(all)).toEqual({ ok: true });
  });

  it('a writer of the previous version (head known to it, leash_append_decisions) and this one share the chain', async () => {
    await log.record(record(1));
    const [head] = await readDecisions(connection.db, 0, 10);
    // As a node before migration 0007 appends: it chains onto the head it knows.
    const d = { ...record(2), seq: head!.seq + 1, nodeId: 'old' };
    const hash = decisionHash(head!.hash, d);
    const row = {
      seq: d.seq, id: d.id, node_id: d.nodeId, recorded_at: d.at.toISOString(), request: d.request, decision: d.decision, layer: d.layer,
      code: d.code, reasons: d.reasons, policy_version: d.policyVersion, log_position: d.logPosition, prev_hash: head!.hash, hash, shadow: null,
    };
    const appended = await sql<{ appended: boolean }>`select appended from leash_append_decisions(${String(head!.seq)}, ${head!.hash}, ${JSON.stringify([row])}::jsonb)`.execute(connection.db);
    expect(appended.rows[0]!.appended).toBe(true);
    await log.record(record(3));
    const all = await readDecisions(connection.db, 0, 10);
    expect(all.map((r) => [r.seq, r.nodeId])).toEqual([[1, 'n1'], [2, 'old'], [3, 'n1']]);
    expect(verifyDecisionChain(all)).toEqual({ ok: true });
  });

  it('is append-only in the database', async () => {
    await log.record(record(1));
    await expect(sql`update decisions set decision = true`.execute(connection.db)).rejects.toThrow(/append-only/);
    await expect(sql`delete from decisions`.execute(connection.db)).rejects.toThrow(/append-only/);
    await expect(sql`truncate decisions`.execute(connection.db)).rejects.toThrow(/append-only/);
    expect(await readDecisions(connection.db, 0, 10)).toHaveLength(1);
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
      expect(all.map((d) => d.seq)).toEqual(all.map((_, i) => i + 1));
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
      // Both appends prepared on the one connection: a new log's batches are chained in the
      // database, and once it has seen it writes alone, by the log itself.
      for (let i = 1; i <= 6; i++) await log.record(record(i));
      await sql`deallocate all`.execute(connection.db);
      await log.record(record(7));
      await log.record(record(8));
      const all = await readDecisions(connection.db, 0, 10);
      expect(all.map((d) => d.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
      expect(verifyDecisionChain(all)).toEqual({ ok: true });
    } finally {
      await connection.db.destroy();
    }
  });
});

describe('a decision body cut for the database', () => {
  it('is the canonical body with the sequence number left out, for any request, reasons and shadow', () => {
    const records = fc.record({
      // Sometimes with a "seq" of its own, which comes before the record's in the text.
      request: fc.oneof(fc.jsonValue({ maxDepth: 3 }), fc.jsonValue({ maxDepth: 2 }).map((v) => ({ seq: 0, v }))),
      reasons: fc.array(fc.string()),
      code: fc.option(fc.string()),
      shadow: fc.option(fc.record({ decision: fc.boolean(), layer: fc.string(), reasons: fc.array(fc.string()), code: fc.string() }, { requiredKeys: ['decision', 'layer', 'reasons'] })),
      seq: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
    });
    fc.assert(fc.property(records, ({ seq, shadow, ...fields }) => {
      const d = { ...record(0), ...fields, ...(shadow ? { shadow } : {}) };
      const { body_head, body_tail } = bodyAroundSeq(d);
      expect(`${body_head}${seq}${body_tail}`).toBe(decisionBody({ ...d, seq }));
    }), { numRuns: 500 });
  });
});
