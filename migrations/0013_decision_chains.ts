import { sql, type Kysely } from 'kysely';
// Frozen: never import application code from a migration.
//
// The decision log past one writer. Until now every decision of every node was chained into
// one hash chain under one lock, held from the append to its commit, so nodes took turns at
// the log. From here on each node writes a chain of its own: its records numbered 1, 2, 3 …
// in `chain_seq` (the node's id names the chain), each hash over the node's previous one. No
// lock is shared on that path: a per-node lock only keeps out a second process that uses
// the same node id.
//
// `seq` stays the log's reading order, now drawn from a sequence: unique and increasing, but
// not hashed, and records of different nodes commit independently, so it is an address, not a
// proof. What proves order and completeness across nodes is `decision_anchors`: a shared hash
// chain into which every node writes its chain's head (node, chain_seq, hash) at a fixed
// interval. A node's chain must still reach every head it anchored, with the same hashes.
//
// The records before this migration stay as they were: one shared chain (chain_seq null)
// numbered by `seq`, closed by the anchor chain's first entry (node_id '', the shared chain's
// head), so neither its tail cut off nor a record added after it goes unseen. leash_append_decisions (0006) and leash_chain_decisions (0007) would
// append to that chain; they now refuse, so a node of an earlier version stops deciding (its
// decisions fail closed) rather than fork the log. Upgrade every node together.
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`alter table decisions add column chain_seq bigint`.execute(db);
  await sql`create unique index decisions_by_chain on decisions (node_id, chain_seq) where chain_seq is not null`.execute(db);
  // The shared chain read on its own (verify, archive) without passing every newer record.
  await sql`create index decisions_shared_chain on decisions (seq) where chain_seq is null`.execute(db);
  await sql`create sequence decisions_seq as bigint owned by decisions.seq`.execute(db);
  await sql`
    select setval('decisions_seq', greatest(
      coalesce((select max(seq) from decisions), 0),
      coalesce((select max(last) from audit_archive where chain = 'decisions'), 0)) + 1, false)`.execute(db);
  await sql`alter table decisions alter column seq set default nextval('decisions_seq')`.execute(db);

  await sql`
    create table decision_anchors (
      seq          bigint      primary key,
      node_id      text        not null,
      chain_seq    bigint      not null,
      chain_hash   text        not null,
      recorded_at  timestamptz not null,
      prev_hash    text        not null,
      hash         text        not null
    )`.execute(db);
  await sql`create index decision_anchors_by_chain on decision_anchors (node_id, chain_seq)`.execute(db);
  await sql`
    create function leash_decision_anchors_append_only() returns trigger language plpgsql as $$
    begin
      raise exception 'leash: the decision_anchors table is append-only (% refused)', tg_op
        using errcode = 'restrict_violation';
    end
    $$`.execute(db);
  await sql`
    create trigger decision_anchors_append_only before update or delete on decision_anchors
    for each row execute function leash_decision_anchors_append_only()`.execute(db);
  await sql`
    create trigger decision_anchors_no_truncate before truncate on decision_anchors
    for each statement execute function leash_decision_anchors_append_only()`.execute(db);

  // A node's batch, chained by the node onto the head it knows. Refused (appended = false,
  // nothing written) if its chain's head is elsewhere. The chain's lock is the node's own
  // (the two-key advisory lock space, apart from the logs' single-key locks).
  await sql`
    create function leash_append_chain(node text, after_seq bigint, after_hash text, batch jsonb, out appended boolean, out seqs bigint[])
    language plpgsql as $$
    declare
      head_seq bigint;
      head_hash text;
    begin
      if node = '' then
        raise exception 'leash: a decision chain needs a node id' using errcode = 'invalid_parameter_value';
      end if;
      perform pg_advisory_xact_lock(1818583393, hashtext(node));
      select d.chain_seq, d.hash into head_seq, head_hash from decisions d
       where d.node_id = node and d.chain_seq is not null order by d.chain_seq desc limit 1;
      if head_seq is null then
        select a.last, a.last_hash into head_seq, head_hash from audit_archive a
         where a.chain = 'decisions' and a.node_id = node order by a.last desc limit 1;
      end if;
      if coalesce(head_seq, 0) <> after_seq or (head_seq is not null and head_hash <> after_hash) then
        appended := false;
        return;
      end if;
      with written as (
        insert into decisions (id, node_id, chain_seq, recorded_at, request, decision, layer, code, reasons, policy_version, log_position, prev_hash, hash, shadow)
        select t.id, node, t.chain_seq, t.recorded_at, t.request, t.decision, t.layer, t.code, t.reasons, t.policy_version, t.log_position, t.prev_hash, t.hash, t.shadow
          from jsonb_to_recordset(batch) as t(id uuid, chain_seq bigint, recorded_at timestamptz, request jsonb, decision boolean, layer text,
                                              code text, reasons jsonb, policy_version integer, log_position bigint, prev_hash text, hash text, shadow jsonb)
         order by t.chain_seq
        returning decisions.seq, decisions.chain_seq
      )
      select array_agg(w.seq order by w.chain_seq) into seqs from written w;
      appended := true;
    end
    $$`.execute(db);

  // A node's head into the shared anchor chain. The head must be a record of the node's chain
  // (or the last one archived of it); the anchor's hash is over its canonical body, which the
  // node sends cut where the anchor's sequence number goes: body_head || seq || body_tail.
  await sql`
    create function leash_append_anchor(node text, at_chain_seq bigint, at_hash text, at timestamptz, body_head text, body_tail text, out seq bigint, out hash text)
    language plpgsql as $$
    declare
      h text;
    begin
      if node = '' then
        raise exception 'leash: a decision chain needs a node id' using errcode = 'invalid_parameter_value';
      end if;
      if not exists (select 1 from decisions d where d.node_id = node and d.chain_seq = at_chain_seq and d.hash = at_hash)
         and not exists (select 1 from audit_archive a where a.chain = 'decisions' and a.node_id = node and a.last = at_chain_seq and a.last_hash = at_hash) then
        raise exception 'leash: % is not the hash of record % of node %''s decision chain', at_hash, at_chain_seq, node
          using errcode = 'foreign_key_violation';
      end if;
      perform pg_advisory_xact_lock(465557353323);
      select a.seq, a.hash into seq, h from decision_anchors a order by a.seq desc limit 1;
      seq := coalesce(seq, 0) + 1;
      h := coalesce(h, repeat('0', 64));
      hash := encode(sha256(convert_to(h || E'\n' || body_head || seq::text || body_tail, 'UTF8')), 'hex');
      insert into decision_anchors (seq, node_id, chain_seq, chain_hash, recorded_at, prev_hash, hash)
      values (seq, node, at_chain_seq, at_hash, at, h, hash);
    end
    $$`.execute(db);

  const refuse = sql.raw(`begin
        raise exception 'leash: this decision log has a chain per node (migration 0013); upgrade this node to append to it'
          using errcode = 'feature_not_supported';
      end`);
  await sql`
    create or replace function leash_append_decisions(after_seq bigint, after_hash text, batch jsonb, out appended boolean)
    language plpgsql as $$ ${refuse} $$`.execute(db);
  await sql`
    create or replace function leash_chain_decisions(batch jsonb, out first_seq bigint, out first_prev_hash text, out hashes text[])
    language plpgsql as $$ ${refuse} $$`.execute(db);

  // The shared chain closed: its head (the last record, or the last archived) as anchor 1, with
  // the body an anchor's hash covers, {"at","chainHash","chainSeq","nodeId","seq"} (RFC 8785:
  // every value here is ASCII without escapes, so the text below is that canonical form).
  await sql`
    insert into decision_anchors (seq, node_id, chain_seq, chain_hash, recorded_at, prev_hash, hash)
    select 1, '', h.seq, h.hash, h.at, repeat('0', 64),
           encode(sha256(convert_to(repeat('0', 64) || E'\n' || '{"at":"' || to_char(h.at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
             || '","chainHash":"' || h.hash || '","chainSeq":' || h.seq || ',"nodeId":"","seq":1}', 'UTF8')), 'hex')
      from (select head.seq, head.hash, date_trunc('milliseconds', now()) as at
              from (select d.seq, d.hash from decisions d
                    union all select a.last, a.last_hash from audit_archive a where a.chain = 'decisions') head
             order by head.seq desc limit 1) h`.execute(db);

  // Archived ranges name their chain: '' for the shared chain from before, else the node's id.
  await sql`alter table audit_archive add column node_id text not null default ''`.execute(db);
  await sql`alter table audit_archive drop constraint audit_archive_pkey`.execute(db);
  await sql`alter table audit_archive add primary key (chain, node_id, first)`.execute(db);
  await sql`
    create or replace function leash_decisions_append_only() returns trigger language plpgsql as $$
    begin
      if tg_op = 'DELETE' and exists (
        select 1 from audit_archive a where a.chain = 'decisions'
           and ((old.chain_seq is null and a.node_id = '' and old.seq between a.first and a.last)
             or (old.chain_seq is not null and a.node_id = old.node_id and old.chain_seq between a.first and a.last))
      ) then
        return old;
      end if;
      raise exception 'leash: the decisions table is append-only (% refused)', tg_op
        using errcode = 'restrict_violation';
    end
    $$`.execute(db);
}

export async function down(): Promise<void> {
  throw new Error('0013_decision_chains cannot be rolled back: decisions recorded since are in chains of their own');
}
