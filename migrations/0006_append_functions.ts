import { sql, type Kysely } from 'kysely';

// Frozen: never import application code from a migration.
//
// The two logs' appends as functions. A function's statements are planned once per session
// and then reused, where the same INSERT sent as a parameterised statement was parsed and
// planned on every append (about half a millisecond here, on every group commit). Each takes
// its log's append lock, then reads the head: in a function each statement sees what
// committed before it started, so the head read after the lock is the real one, and a batch
// chained onto anything else is refused (appended = false) with nothing written.
// Rows arrive as one JSON array: one parameter, parsed once.

export async function up(db: Kysely<unknown>): Promise<void> {
  // The lock keys are the applications' (src/audit/decision-log.ts, src/store/event-store.ts).
  await sql`
    create function leash_append_decisions(after_seq bigint, after_hash text, batch jsonb, out appended boolean)
    language plpgsql as $$
    declare
      head_seq bigint;
      head_hash text;
    begin
      perform pg_advisory_xact_lock(465557353321);
      select d.seq, d.hash into head_seq, head_hash from decisions d order by d.seq desc limit 1;
      if coalesce(head_seq, 0) <> after_seq or (head_seq is not null and head_hash <> after_hash) then
        appended := false;
        return;
      end if;
      insert into decisions (seq, id, node_id, recorded_at, request, decision, layer, code, reasons, policy_version, log_position, prev_hash, hash, shadow)
      select t.seq, t.id, t.node_id, t.recorded_at, t.request, t.decision, t.layer, t.code, t.reasons, t.policy_version, t.log_position, t.prev_hash, t.hash, t.shadow
        from jsonb_to_recordset(batch) as t(seq bigint, id uuid, node_id text, recorded_at timestamptz, request jsonb, decision boolean, layer text,
                                            code text, reasons jsonb, policy_version integer, log_position bigint, prev_hash text, hash text, shadow jsonb);
      appended := true;
    end
    $$`.execute(db);

  // Also refused (appended = false): a request whose stream is not at the version it expects.
  await sql`
    create function leash_append_events(after_position bigint, after_hash text, batch jsonb, expected jsonb, out appended boolean)
    language plpgsql as $$
    declare
      head_position bigint;
      head_hash text;
    begin
      perform pg_advisory_xact_lock(465557353320);
      select e.position, e.hash into head_position, head_hash from events e order by e.position desc limit 1;
      if coalesce(head_position, 0) <> after_position or (head_position is not null and head_hash <> after_hash) then
        appended := false;
        return;
      end if;
      if exists (
        select 1 from jsonb_to_recordset(expected) as c(stream_id text, version integer)
         where coalesce((select max(e.version) from events e where e.stream_id = c.stream_id), 0) <> c.version
      ) then
        appended := false;
        return;
      end if;
      insert into events (position, stream_id, stream_type, version, type, data, metadata, recorded_at, idempotency_key, prev_hash, hash)
      select t.position, t.stream_id, t.stream_type, t.version, t.type, t.data, t.metadata, t.recorded_at, t.idempotency_key, t.prev_hash, t.hash
        from jsonb_to_recordset(batch) as t(position bigint, stream_id text, stream_type text, version integer, type text, data jsonb,
                                            metadata jsonb, recorded_at timestamptz, idempotency_key text, prev_hash text, hash text);
      appended := true;
    end
    $$`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop function leash_append_decisions(bigint, text, jsonb)`.execute(db);
  await sql`drop function leash_append_events(bigint, text, jsonb, jsonb)`.execute(db);
}
