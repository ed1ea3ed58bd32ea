import { sql, type Kysely } from 'kysely';

// Frozen: never import application code from a migration.

export async function up(db: Kysely<unknown>): Promise<void> {
  // For a quarantined agent (SPEC §6): the decision it would have had. The caller was denied.
  // Null for every other decision, so existing records and their hashes are unchanged.
  await sql`alter table decisions add column shadow jsonb`.execute(db);
}

export async function down(): Promise<void> {
  throw new Error('0003_decision_shadow cannot be rolled back: the decision log is append-only');
}
