import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import type { Database } from './events.table.ts';

export type Backend =
  | { kind: 'postgres'; url: string; poolSize?: number }
  | { kind: 'pglite'; dataDir: string | null }; // null: in memory (tests only)

export interface Connection {
  db: Kysely<Database>;
  backend: Backend;
  /** Human-readable, with no password in it. */
  describe: string;
}

export async function connect(backend: Backend): Promise<Connection> {
  if (backend.kind === 'postgres') {
    const pool = new pg.Pool({ connectionString: backend.url, max: backend.poolSize ?? 10 });
    // A pool error (server restart, dropped connection) must not crash the process:
    // the next query reconnects or fails with a clear error.
    pool.on('error', () => {});
    const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
    return { db, backend, describe: `postgres ${redactUrl(backend.url)}` };
  }
  const { PGlite } = await import('@electric-sql/pglite');
  const { PGliteDialect } = await import('kysely-pglite-dialect');
  let client;
  if (backend.dataDir === null) {
    client = await PGlite.create();
  } else {
    mkdirSync(backend.dataDir, { recursive: true });
    client = await PGlite.create(join(backend.dataDir, 'pgdata'));
  }
  const db = new Kysely<Database>({ dialect: new PGliteDialect(client) });
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
