import { sql, type Kysely } from 'kysely';

// Frozen: never import application code from a migration.

export async function up(db: Kysely<unknown>): Promise<void> {
  // 0004 refused UPDATE and DELETE on audit_archive but not TRUNCATE: the record of what was
  // archived is append-only in every way, as the two logs are.
  await sql`
    create trigger audit_archive_no_truncate before truncate on audit_archive
    for each statement execute function leash_audit_archive_append_only()`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop trigger audit_archive_no_truncate on audit_archive`.execute(db);
}
