import { sql, type Kysely } from 'kysely';

// Frozen: never import application code from a migration.
//
// The deployment's id: one random value per database, made when the database is. Its nodes
// broadcast under it (leash.<id>.events, …), so two deployments sharing a NATS server never take
// each other's events, heartbeats or confirmations for their own.

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    create table deployment (
      one         boolean     primary key default true check (one),
      id          text        not null check (id ~ '^[0-9a-f]{32}$'),
      created_at  timestamptz not null default now()
    )`.execute(db);
  await sql`insert into deployment (id) values (replace(gen_random_uuid()::text, '-', ''))`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop table deployment`.execute(db);
}
