import { sql, type Kysely } from 'kysely';

// Frozen: never import application code from a migration.
//
// RFC 7523 client assertions are single-use: the `jti` of every assertion the token endpoint
// accepted, per agent, kept until the assertion could no longer be accepted anyway (its `exp`
// plus the agent's clock-skew leeway). Every node inserts here, so a `jti` seen by any node
// is refused by all; the insert itself is the check (one statement, decided by the primary
// key). Rows past their expiry are deleted: this is a cache of recent uses, not a history.

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    create table client_assertion_jtis (
      agent_id    text        not null,
      jti         text        not null,
      expires_at  timestamptz not null,
      primary key (agent_id, jti)
    )`.execute(db);
  await sql`create index client_assertion_jtis_expires_at on client_assertion_jtis (expires_at)`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop table client_assertion_jtis`.execute(db);
}
