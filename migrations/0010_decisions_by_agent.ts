import { sql, type Kysely } from 'kysely';

// Frozen: never import application code from a migration.
//
// An agent's own decisions, in log order (least-privilege suggestions read an agent's window):
// the agent is the request's subject, inside the jsonb, so the index is on that expression.
// A query must spell it the same way, `request #>> '{subject,id}'`, for the planner to use it.

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`create index decisions_by_agent on decisions ((request #>> '{subject,id}'), seq)`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop index decisions_by_agent`.execute(db);
}
