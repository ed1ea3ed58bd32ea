import { sql, type Kysely } from 'kysely';
import type { Database } from '../store/events.table.ts';

// Where each event stream's delivery stands, shared by every node (migration 0012). The
// cursor only moves forward and only once what it passes was delivered, so a node that stops
// (or dies) in the middle leaves the rest to whoever comes next: at least once, in order.

type Db = Kysely<Database>;

/**
 * The cursor of a deleted stream: past every position, so nothing more is handed out or pushed
 * on it. The row stays: a node whose view has not applied the deletion yet would otherwise
 * create it again at the stream's creation, and push (or hand out) everything since.
 */
const ENDED = Number.MAX_SAFE_INTEGER;

/** The cursor of a stream, created at its first use at the log position the stream was created at. */
export async function cursorOf(db: Db, stream: string, createdAt: number): Promise<number> {
  await db.insertInto('ssf_deliveries').values({ stream_id: stream, position: createdAt }).onConflict((oc) => oc.column('stream_id').doNothing()).execute();
  const row = await db.selectFrom('ssf_deliveries').select('position').where('stream_id', '=', stream).executeTakeFirstOrThrow();
  return Number(row.position);
}

/**
 * Takes (or keeps) the right to push a stream for `leaseMs`: granted when nobody holds it, this
 * node does, or the holder's lease ran out. The cursor when granted; null when another node
 * pushes it. The lease is timed by the database's clock, the one clock every node shares: by
 * their own, a node whose clock ran ahead took every lease as run out, and pushed beside its holder.
 */
export async function takeLease(db: Db, stream: string, createdAt: number, owner: string, leaseMs: number): Promise<number | null> {
  await cursorOf(db, stream, createdAt);
  const row = await db.updateTable('ssf_deliveries')
    .set({ owner, lease_until: sql<Date>`now() + ${Math.round(leaseMs)}::integer * interval '1 millisecond'` })
    .where('stream_id', '=', stream)
    .where('position', '<', String(ENDED))
    .where((eb) => eb.or([eb('owner', '=', owner), eb('owner', 'is', null), eb('lease_until', '<', sql<Date>`now()`)]))
    .returning('position')
    .executeTakeFirst();
  return row ? Number(row.position) : null;
}

/** Gives the stream up (a node shutting down), so the next node need not wait the lease out. */
export async function releaseLease(db: Db, stream: string, owner: string): Promise<void> {
  await db.updateTable('ssf_deliveries').set({ owner: null, lease_until: null }).where('stream_id', '=', stream).where('owner', '=', owner).execute();
}

/** Moves a pushed stream's cursor to `position`; false when this node no longer holds the stream. */
export async function advancePushed(db: Db, stream: string, owner: string, position: number): Promise<boolean> {
  const result = await db.updateTable('ssf_deliveries')
    .set({ position: sql`greatest(position, ${position})` })
    .where('stream_id', '=', stream).where('owner', '=', owner)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) === 1;
}

/** Records a poll receiver's acknowledgements (log positions past the cursor, up to `head`). */
export async function recordAcks(db: Db, stream: string, positions: number[], cursor: number, head: number): Promise<void> {
  const valid = [...new Set(positions)].filter((p) => p > cursor && p <= head);
  if (valid.length === 0) return;
  await db.insertInto('ssf_acks').values(valid.map((position) => ({ stream_id: stream, position })))
    .onConflict((oc) => oc.columns(['stream_id', 'position']).doNothing()).execute();
}

/** The acknowledged positions of a stream past its cursor, up to `upTo`. */
export async function acksOf(db: Db, stream: string, cursor: number, upTo: number): Promise<Set<number>> {
  const rows = await db.selectFrom('ssf_acks').select('position').where('stream_id', '=', stream)
    .where('position', '>', String(cursor)).where('position', '<=', String(upTo)).execute();
  return new Set(rows.map((r) => Number(r.position)));
}

/** Moves a polled stream's cursor to `position` and forgets the acknowledgements it passed. */
export async function advancePolled(db: Db, stream: string, position: number): Promise<void> {
  await db.transaction().execute(async (trx) => {
    await trx.updateTable('ssf_deliveries').set({ position: sql`greatest(position, ${position})` }).where('stream_id', '=', stream).execute();
    await trx.deleteFrom('ssf_acks').where('stream_id', '=', stream).where('position', '<=', String(position)).execute();
  });
}

/** Keeps a push receiver's Authorization header under `id` (which the stream's configuration then names). */
export async function putCredential(db: Db, stream: string, id: string, header: string): Promise<void> {
  await db.insertInto('ssf_push_credentials').values({ id, stream_id: stream, authorization_header: header }).execute();
}

export async function credentialOf(db: Db, id: string): Promise<string | null> {
  const row = await db.selectFrom('ssf_push_credentials').select('authorization_header').where('id', '=', id).executeTakeFirst();
  return row?.authorization_header ?? null;
}

/** Drops a stream's headers other than the one its configuration names now (`keep`; null: none). */
export async function dropOtherCredentials(db: Db, stream: string, keep: string | null): Promise<void> {
  let query = db.deleteFrom('ssf_push_credentials').where('stream_id', '=', stream);
  if (keep !== null) query = query.where('id', '!=', keep);
  await query.execute();
}

/** Everything kept for a deleted stream (its history stays in the log), but for its cursor, moved to the end. */
export async function forgetStream(db: Db, stream: string): Promise<void> {
  await db.transaction().execute(async (trx) => {
    await trx.deleteFrom('ssf_push_credentials').where('stream_id', '=', stream).execute();
    await trx.deleteFrom('ssf_acks').where('stream_id', '=', stream).execute();
    await trx.insertInto('ssf_deliveries').values({ stream_id: stream, position: ENDED })
      .onConflict((oc) => oc.column('stream_id').doUpdateSet({ position: ENDED, owner: null, lease_until: null })).execute();
  });
}

