import { sql, type Kysely } from 'kysely';

// Frozen: never import application code from a migration.
//
// The decision log's append, chained where the head is: under the log's append lock the
// function reads the head and links each record onto it, so an append never depends on
// which node wrote last. leash_append_decisions (0006) needs the caller to know the head:
// right for a node that writes alone, but with several nodes deciding each one's view of it
// was stale at almost every batch, which then went the locked way (five round trips, the
// lock held from the second through the commit).
//
// A record's hash is sha-256 over the previous hash, a newline and the record's canonical
// body. The body holds the record's sequence number, which only the database knows here, so
// the caller sends the body cut at that number: body_head || seq || body_tail. Rows arrive as
// one JSON array. leash_append_decisions stays, takes the same lock and reads the same head,
// so a node of the previous version and one of this version can share a log.

export async function up(db: Kysely<unknown>): Promise<void> {
  // The lock key is the application's (src/audit/decision-log.ts).
  await sql`
    create function leash_chain_decisions(batch jsonb, out first_seq bigint, out first_prev_hash text, out hashes text[])
    language plpgsql as $$
    declare
      head_seq bigint;
      h text;
      r record;
      prevs text[] := '{}';
    begin
      perform pg_advisory_xact_lock(465557353321);
      select d.seq, d.hash into head_seq, h from decisions d order by d.seq desc limit 1;
      first_seq := coalesce(head_seq, 0) + 1;
      h := coalesce(h, repeat('0', 64));
      first_prev_hash := h;
      hashes := '{}';
      for r in select e.value ->> 'body_head' as body_head, e.value ->> 'body_tail' as body_tail, e.n
                 from jsonb_array_elements(batch) with ordinality as e(value, n) order by e.n loop
        prevs := prevs || h;
        h := encode(sha256(convert_to(h || E'\n' || r.body_head || (first_seq + r.n - 1)::text || r.body_tail, 'UTF8')), 'hex');
        hashes := hashes || h;
      end loop;
      insert into decisions (seq, id, node_id, recorded_at, request, decision, layer, code, reasons, policy_version, log_position, prev_hash, hash, shadow)
      select first_seq + e.n - 1, (e.value ->> 'id')::uuid, e.value ->> 'node_id', (e.value ->> 'recorded_at')::timestamptz, e.value -> 'request',
             (e.value ->> 'decision')::boolean, e.value ->> 'layer', e.value ->> 'code', e.value -> 'reasons', (e.value ->> 'policy_version')::integer,
             (e.value ->> 'log_position')::bigint, prevs[e.n], hashes[e.n], nullif(e.value -> 'shadow', 'null'::jsonb)
        from jsonb_array_elements(batch) with ordinality as e(value, n);
    end
    $$`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop function leash_chain_decisions(jsonb)`.execute(db);
}
