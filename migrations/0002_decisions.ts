import { sql, type Kysely } from 'kysely';

// Frozen: never import application code from a migration.

export async function up(db: Kysely<unknown>): Promise<void> {
  // Every decision, hash-chained like the event log. The request is stored without any raw
  // token: the token's verified claims and jti, and a fingerprint of it.
  await sql`
    create table decisions (
      seq             bigint      primary key,
      id              uuid        not null unique,
      node_id         text        not null,
      recorded_at     timestamptz not null,
      request         jsonb       not null,
      decision        boolean     not null,
      layer           text        not null,
      code            text,
      reasons         jsonb       not null,
      policy_version  integer     not null,
      log_position    bigint      not null,
      prev_hash       text        not null,
      hash            text        not null
    )`.execute(db);
  await sql`
    create function leash_decisions_append_only() returns trigger language plpgsql as $$
    begin
      raise exception 'leash: the decisions table is append-only (% refused)', tg_op
        using errcode = 'restrict_violation';
    end
    $$`.execute(db);
  await sql`
    create trigger decisions_no_update_or_delete before update or delete on decisions
    for each row execute function leash_decisions_append_only()`.execute(db);
  await sql`
    create trigger decisions_no_truncate before truncate on decisions
    for each statement execute function leash_decisions_append_only()`.execute(db);
}

export async function down(): Promise<void> {
  throw new Error('0002_decisions cannot be rolled back: the decision log is append-only');
}
