import type { Kysely, Transaction } from 'kysely';
import { runStatement } from './connect.ts';
import type { Database } from './events.table.ts';
import { GroupCommitter } from './group-commit.ts';

// The cluster-wide memory of client assertions already used (migration 0008).

type Db = Kysely<Database> | Transaction<Database>;

interface Claim {
  agentId: string;
  jti: string;
  expiresAt: Date;
  now: Date;
}

/**
 * One statement for a batch of claims, whatever its size (so it is prepared once per
 * connection): the pairs as arrays, each row inserted, or taken over if its assertion has
 * expired, or left alone; the rows it wrote come back.
 */
const CLAIM_BATCH = {
  name: 'leash_claim_assertion_jtis',
  text: `insert into client_assertion_jtis (agent_id, jti, expires_at)
    select c.agent_id, c.jti, c.expires_at from unnest($1::text[], $2::text[], $3::timestamptz[]) with ordinality as c(agent_id, jti, expires_at, n) order by c.n
    on conflict (agent_id, jti) do update set expires_at = excluded.expires_at
      where client_assertion_jtis.expires_at <= $4::timestamptz
    returning agent_id, jti`,
};

/** Concurrent claims on one connection pool, written together: one statement (one durable commit) per batch. */
const committers = new WeakMap<Db, GroupCommitter<Claim, boolean>>();

/**
 * Records that `agentId` used an assertion with this `jti`, valid until `expiresAt`. True when
 * this call is the first use; false when any node recorded it before and it has not expired.
 * Of concurrent callers with the same pair, exactly one gets true, whichever node they are on.
 * A row that has expired but not been pruned yet is taken over (its assertion could no longer
 * be accepted, so the `jti` is free again). Claims that arrive while one is being written are
 * written together in the next statement (group commit); each caller still returns only once
 * its row is durable.
 */
export function claimAssertionJti(db: Db, agentId: string, jti: string, expiresAt: Date, now: Date): Promise<boolean> {
  if (db.isTransaction) return claimAssertionJtis(db, [{ agentId, jti, expiresAt, now }]).then((r) => r[0]!);
  let committer = committers.get(db);
  if (!committer) {
    committer = new GroupCommitter((batch) => claimAssertionJtis(db, batch), 256);
    committers.set(db, committer);
  }
  return committer.submit({ agentId, jti, expiresAt, now });
}

/**
 * The claims of a batch in one statement, one answer each, in order. A pair that appears twice
 * in the batch is claimed by its first occurrence; the later ones are replays. The rows go in
 * sorted by pair, so two nodes' batches that share pairs take their row locks in the same order
 * and cannot deadlock. An expired row is taken over only if it had expired by the batch's
 * earliest `now`.
 */
async function claimAssertionJtis(db: Db, batch: Claim[]): Promise<boolean[]> {
  const key = (c: Claim) => `${c.agentId}\u0000${c.jti}`;
  const firsts = new Map<string, Claim>();
  let now = batch[0]!.now;
  for (const c of batch) {
    if (!firsts.has(key(c))) firsts.set(key(c), c);
    if (c.now < now) now = c.now;
  }
  const rows = [...firsts.values()].sort((a, b) => (a.agentId < b.agentId ? -1 : a.agentId > b.agentId ? 1 : a.jti < b.jti ? -1 : a.jti > b.jti ? 1 : 0));
  const written = await runStatement<{ agent_id: string; jti: string }>(db, CLAIM_BATCH, [
    rows.map((c) => c.agentId), rows.map((c) => c.jti), rows.map((c) => c.expiresAt.toISOString()), now.toISOString(),
  ]);
  const won = new Set(written.map((r) => `${r.agent_id}\u0000${r.jti}`));
  return batch.map((c) => firsts.get(key(c)) === c && won.has(key(c)));
}

/** Deletes the rows whose assertions can no longer be accepted; returns how many. */
export async function pruneAssertionJtis(db: Db, now: Date): Promise<number> {
  const result = await db.deleteFrom('client_assertion_jtis').where('expires_at', '<=', now).executeTakeFirst();
  return Number(result.numDeletedRows);
}
