import { sql, type Kysely } from 'kysely';

// Frozen: never import application code from a migration.
//
// The decision log browsed by time (GET /v1/decisions?since=&until=): newest first from an
// instant, without reading every later decision. Inserts come in time order, so the index
// grows at its right edge.

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`create index decisions_recorded_at on decisions (recorded_at, seq)`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop index decisions_recorded_at`.execute(db);
}
