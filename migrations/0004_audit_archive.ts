import { sql, type Kysely } from 'kysely';

// Frozen: never import application code from a migration.

export async function up(db: Kysely<unknown>): Promise<void> {
  // SPEC §8 archive: each range moved (decisions) or copied (events) to a file, with the hashes
  // it starts from and ends at. Appended in the same transaction that deletes the range.
  await sql`
    create table audit_archive (
      chain        text        not null check (chain in ('events', 'decisions')),
      first        bigint      not null,
      last         bigint      not null,
      prev_hash    text        not null,
      last_hash    text        not null,
      records      integer     not null,
      file         text        not null,
      sha256       text        not null,
      archived_at  timestamptz not null default now(),
      primary key (chain, first),
      check (last >= first)
    )`.execute(db);
  await sql`
    create function leash_audit_archive_append_only() returns trigger language plpgsql as $$
    begin
      raise exception 'leash: the audit_archive table is append-only (% refused)', tg_op
        using errcode = 'restrict_violation';
    end
    $$`.execute(db);
  await sql`
    create trigger audit_archive_append_only before update or delete on audit_archive
    for each row execute function leash_audit_archive_append_only()`.execute(db);
  // Decisions stay append-only, except that a range recorded as archived may be deleted.
  await sql`
    create or replace function leash_decisions_append_only() returns trigger language plpgsql as $$
    begin
      if tg_op = 'DELETE' and exists (
        select 1 from audit_archive a where a.chain = 'decisions' and old.seq between a.first and a.last
      ) then
        return old;
      end if;
      raise exception 'leash: the decisions table is append-only (% refused)', tg_op
        using errcode = 'restrict_violation';
    end
    $$`.execute(db);
}

export async function down(): Promise<void> {
  throw new Error('0004_audit_archive cannot be rolled back: archived ranges are gone from the hot tables');
}
