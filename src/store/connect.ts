import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { CompiledQuery, Kysely, PostgresDialect, type Transaction } from 'kysely';
import pg from 'pg';
import type { PGlite } from '@electric-sql/pglite';
import type { Database } from './events.table.ts';
import { PGliteThread } from './pglite-thread.ts';

export type Backend =
  | { kind: 'postgres'; url: string; poolSize?: number }
  | { kind: 'pglite'; dataDir: string | null }; // null: in memory (tests only)

export interface Connection {
  db: Kysely<Database>;
  backend: Backend;
  /** Human-readable, with no password in it. */
  describe: string;
}

/** The pool under each PostgreSQL connection, for `runStatement`. */
const pools = new WeakMap<Kysely<Database>, pg.Pool>();
/** Pools whose server lost a statement they had prepared: a transaction pooler is in between. */
const unprepared = new WeakSet<pg.Pool>();

/**
 * A statement on the hot path (the group commits' appends), `text` with $1, $2 … parameters.
 * On PostgreSQL it runs as a named prepared statement straight on the pool: parsed and planned
 * once per connection instead of every time, and no query builder in between (measured: about
 * half the client's CPU per call, and ~45 µs of the server's). Elsewhere (PGlite, or inside
 * a transaction) it goes through kysely as written.
 */
export async function runStatement<R>(db: Kysely<Database> | Transaction<Database>, statement: { name: string; text: string }, values: unknown[]): Promise<R[]> {
  const pool = pools.get(db);
  if (!pool) return (await db.executeQuery<R>(CompiledQuery.raw(statement.text, values))).rows;
  if (!unprepared.has(pool)) {
    try {
      return (await pool.query<R & pg.QueryResultRow>({ name: statement.name, text: statement.text, values })).rows;
    } catch (err) {
      // 26000: the server does not know a statement this connection prepared, which is what a
      // transaction-mode pooler (PgBouncer) does when it hands the call to another server
      // connection. Nothing ran; from now on this pool sends the statement's text each time.
      if ((err as { code?: unknown }).code !== '26000') throw err;
      unprepared.add(pool);
    }
  }
  return (await pool.query<R & pg.QueryResultRow>({ text: statement.text, values })).rows;
}

export async function connect(backend: Backend): Promise<Connection> {
  if (backend.kind === 'postgres') {
    const pool = new pg.Pool({ connectionString: backend.url, max: backend.poolSize ?? 10 });
    // A pool error (server restart, dropped connection) must not crash the process:
    // the next query reconnects or fails with a clear error.
    pool.on('error', () => {});
    const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
    pools.set(db, pool);
    return { db, backend, describe: `postgres ${redactUrl(backend.url)}` };
  }
  const { PGliteDialect } = await import('kysely-pglite-dialect');
  if (backend.dataDir !== null) mkdirSync(backend.dataDir, { recursive: true });
  // On a thread of its own (pglite-thread.ts), so its work is not the HTTP thread's.
  const thread = await PGliteThread.start(backend.dataDir === null ? null : join(backend.dataDir, 'pgdata'));
  // The dialect calls `query` and `close` only, which the thread answers as PGlite does.
  const calls: Pick<PGlite, 'query' | 'close'> = thread;
  const db = new Kysely<Database>({ dialect: new PGliteDialect(calls as PGlite) });
  // kysely's destroy() closes a driver only once it has handed out a connection: take one now
  // (no statement is sent), so that destroy() always ends the thread.
  await db.connection().execute(async () => {});
  return { db, backend, describe: `pglite ${backend.dataDir ?? '(memory)'}` };
}

export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparseable DATABASE_URL)';
  }
}
