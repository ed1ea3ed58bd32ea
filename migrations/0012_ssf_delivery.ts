import { sql, type Kysely } from 'kysely';

// Frozen: never import application code from a migration.
//
// Security events out (Shared Signals): a stream's configuration lives in the event log; what
// delivery has reached does not (it changes with every event sent, and is not audit). Per stream:
//
//   ssf_deliveries        the cursor: every event up to `position` has been delivered (push:
//                         the receiver answered 202; poll: acknowledged), and which node
//                         pushes the stream now (`owner`, until `lease_until`)
//   ssf_acks              poll acknowledgements past the cursor, until the cursor passes them
//   ssf_push_credentials  the Authorization header a push receiver asked for, under a random
//                         id the stream's configuration names: a secret, so never in the log

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    create table ssf_deliveries (
      stream_id    text        primary key,
      position     bigint      not null,
      owner        text,
      lease_until  timestamptz
    )`.execute(db);
  await sql`
    create table ssf_acks (
      stream_id  text   not null,
      position   bigint not null,
      primary key (stream_id, position)
    )`.execute(db);
  await sql`
    create table ssf_push_credentials (
      id                    text primary key,
      stream_id             text not null,
      authorization_header  text not null
    )`.execute(db);
  await sql`create index ssf_push_credentials_stream on ssf_push_credentials (stream_id)`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop table ssf_push_credentials`.execute(db);
  await sql`drop table ssf_acks`.execute(db);
  await sql`drop table ssf_deliveries`.execute(db);
}
