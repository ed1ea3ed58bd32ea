import { sql, type Kysely } from 'kysely';

// Frozen: never import application code from a migration.
// One statement per `sql` call, so the same file runs on PGlite (extended protocol) and pg.

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    create table events (
      position        bigint      primary key,
      stream_id       text        not null,
      stream_type     text        not null,
      version         integer     not null check (version > 0),
      type            text        not null,
      data            jsonb       not null,
      metadata        jsonb       not null,
      recorded_at     timestamptz not null,
      idempotency_key text,
      prev_hash       text        not null,
      hash            text        not null,
      transaction_id  xid8        not null default pg_current_xact_id(),
      constraint events_stream_version unique (stream_id, version)
    )`.execute(db);
  await sql`create unique index events_idempotency_key on events (idempotency_key) where idempotency_key is not null`.execute(db);
  await sql`create index events_stream_type on events (stream_type, position)`.execute(db);

  // History is append-only in the database itself: no UPDATE, DELETE or TRUNCATE,
  // whatever the caller (a bug, a migration, an operator at a psql prompt).
  await sql`
    create function leash_events_append_only() returns trigger language plpgsql as $$
    begin
      raise exception 'leash: the events table is append-only (% refused)', tg_op
        using errcode = 'restrict_violation';
    end
    $$`.execute(db);
  await sql`
    create trigger events_no_update_or_delete before update or delete on events
    for each row execute function leash_events_append_only()`.execute(db);
  await sql`
    create trigger events_no_truncate before truncate on events
    for each statement execute function leash_events_append_only()`.execute(db);

  // Every committed insert wakes the other nodes' followers (LISTEN leash_events); they
  // read from their own position, so the payload is only a hint.
  await sql`
    create function leash_events_notify() returns trigger language plpgsql as $$
    begin
      perform pg_notify('leash_events', '');
      return null;
    end
    $$`.execute(db);
  await sql`
    create trigger events_notify after insert on events
    for each statement execute function leash_events_notify()`.execute(db);
}

export async function down(): Promise<void> {
  throw new Error('0001_events cannot be rolled back: the event log is append-only');
}
