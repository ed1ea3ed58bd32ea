import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DecisionLog, readDecisions, verifyDecisionChain, type DecisionRecord } from '../../src/audit/decision-log.ts';
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

  it('several writers on one database (nodes) keep one gap-free chain, each taking the head the others moved', async () => {
    // Each log writes in one statement while its view of the head is current; when another
    // writer got there first it must notice (not fork the chain) and append after it.
    const logs = [log, new DecisionLog(connection.db), new DecisionLog(connection.db)];
    for (let round = 0; round < 5; round++) {
      await Promise.all(logs.flatMap((l, n) => Array.from({ length: 8 }, (_, i) => l.record({ ...record(round * 100 + n * 10 + i), nodeId: `n${n}` }))));
    }
    const all = await readDecisions(connection.db, 0, 1000);
    expect(all.map((d) => d.seq)).toEqual(Array.from({ length: 120 }, (_, i) => i + 1));
    expect(new Set(all.map((d) => d.id)).size).toBe(120);
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
      await log.record(record(1)); // head unknown: the locked way, in a transaction
      await log.record(record(2)); // head known: the prepared append
      await sql`deallocate leash_append_decisions`.execute(connection.db);
      await log.record(record(3));
      await log.record(record(4));
      const all = await readDecisions(connection.db, 0, 10);
      expect(all.map((d) => d.seq)).toEqual([1, 2, 3, 4]);
      expect(verifyDecisionChain(all)).toEqual({ ok: true });
    } finally {
      await connection.db.destroy();
    }
  });
});
