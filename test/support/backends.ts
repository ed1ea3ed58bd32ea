import { randomBytes } from 'node:crypto';
import { cpSync, mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { inject } from 'vitest';
import type { Backend } from '../../src/store/connect.ts';

/** A new, empty database on the test PostgreSQL server, so files never share state. */
export async function freshPostgres(): Promise<Extract<Backend, { kind: 'postgres' }>> {
  const admin = new URL(inject('postgresUrl'));
  const name = `leash_${randomBytes(6).toString('hex')}`;
  const client = new pg.Client({ connectionString: admin.toString() });
  await client.connect();
  try {
    await client.query(`create database ${name}`);
  } finally {
    await client.end();
  }
  admin.pathname = `/${name}`;
  return { kind: 'postgres', url: admin.toString() };
}

/** A new embedded data directory holding a new, empty database: a copy of the one global-setup had PGlite create. */
export function freshPglite(): Extract<Backend, { kind: 'pglite' }> & { dataDir: string } {
  // Under the run's own directory, which the run removes when it ends (global-setup.ts).
  const dataDir = mkdtempSync(join(inject('runDir'), 'pglite-'));
  cpSync(inject('pgliteTemplate'), dataDir, { recursive: true });
  return { kind: 'pglite', dataDir };
}

/** The same suites run against both backends (SPEC §1: same migrations, same code). */
export const backends = [
  { name: 'postgres', fresh: freshPostgres },
  { name: 'pglite', fresh: async () => freshPglite() },
] as const;
