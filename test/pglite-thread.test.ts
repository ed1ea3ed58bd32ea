import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { connect, type Connection } from '../src/store/connect.ts';
import { PGliteThread } from '../src/store/pglite-thread.ts';

// The embedded database runs on a thread of its own: statements and their answers cross
// between threads, and the thread that serves HTTP keeps running while a statement does.

describe('the embedded database on its own thread', () => {
  let connection: Connection;
  beforeAll(async () => {
    connection = await connect({ kind: 'pglite', dataDir: null });
  });
  afterAll(async () => connection.db.destroy());

  it('answers with the values PGlite gives: JSON as objects, timestamps as dates, counts of rows', async () => {
    const { rows } = await sql<{ n: number; j: unknown; t: Date }>`select 41 + 1 as n, '{"a":[1,"ü"]}'::jsonb as j, '2026-12-02T10:00:00Z'::timestamptz as t`.execute(connection.db);
    expect(rows).toEqual([{ n: 42, j: { a: [1, 'ü'] }, t: new Date('2026-12-02T10:00:00Z') }]);
    await sql`create table things (id text primary key)`.execute(connection.db);
    const inserted = await sql`insert into things values ('a'), ('b')`.execute(connection.db);
    expect(inserted.numAffectedRows).toBe(2n);
  });

  it('keeps the database error whole: message, SQLSTATE and the constraint it broke', async () => {
    await sql`create table unique_things (id text constraint unique_things_pk primary key)`.execute(connection.db);
    await sql`insert into unique_things values ('a')`.execute(connection.db);
    const err = await sql`insert into unique_things values ('a')`.execute(connection.db).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect(err).toMatchObject({ code: '23505', constraint: 'unique_things_pk', message: expect.stringContaining('duplicate key') });
    await expect(sql`select 1/0`.execute(connection.db)).rejects.toMatchObject({ code: '22012' });
  });

  it('runs a transaction as one: a failure inside it leaves nothing behind', async () => {
    await sql`create table ledger (n int)`.execute(connection.db);
    await expect(connection.db.transaction().execute(async (trx) => {
      await sql`insert into ledger values (1)`.execute(trx);
      await sql`insert into ledger values ('not a number')`.execute(trx);
    })).rejects.toMatchObject({ code: '22P02' });
    expect((await sql<{ n: number }>`select count(*)::int as n from ledger`.execute(connection.db)).rows).toEqual([{ n: 0 }]);
  });

  it('leaves this thread free while a statement runs', async () => {
    let ticks = 0;
    const timer = setInterval(() => ticks++, 10);
    const started = performance.now();
    try {
      await sql`select sum(i) from generate_series(1, 6000000) as i`.execute(connection.db);
    } finally {
      clearInterval(timer);
    }
    const took = performance.now() - started;
    // On the same thread the timer could not fire at all until the statement was done.
    expect(took).toBeGreaterThan(100);
    expect(ticks).toBeGreaterThanOrEqual(Math.floor(took / 10 / 4));
  });
});

describe('the embedded database thread when it cannot run', () => {
  it('refuses to start on a data directory that is a file, saying where', async () => {
    const file = join(inject('runDir'), 'not-a-directory');
    writeFileSync(file, 'x');
    await expect(PGliteThread.start(file)).rejects.toThrow(/the embedded database could not start in .*not-a-directory: /);
  });

  it('fails every statement after it is closed, saying so, and never leaves one waiting', async () => {
    const thread = await PGliteThread.start(null);
    expect((await thread.query<{ one: number }>('select 1 as one')).rows).toEqual([{ one: 1 }]);
    await thread.close();
    await expect(thread.query('select 1')).rejects.toThrow(/embedded database/);
  });
});
