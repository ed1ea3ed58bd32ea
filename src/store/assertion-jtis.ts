import { sql, type Kysely, type Transaction } from 'kysely';
import type { Database } from './events.table.ts';

// The cluster-wide memory of client assertions already used (migration 0008).

type Db = Kysely<Database> | Transaction<Database>;

/**
 * Records that `agentId` used an assertion with this `jti`, valid until `expiresAt`. True when
 * this call is the first use; false when any node recorded it before and it has not expired.
 * One statement: of concurrent callers with the same pair, exactly one gets true, whichever
 * node they are on. A row that has expired but not been pruned yet is taken over (its
 * assertion could no longer be accepted, so the `jti` is free again).
 */
export async function claimAssertionJti(db: Db, agentId: string, jti: string, expiresAt: Date, now: Date): Promise<boolean> {
  const { rows } = await sql<{ agent_id: string }>`
    insert into client_assertion_jtis (agent_id, jti, expires_at) values (${agentId}, ${jti}, ${expiresAt})
    on conflict (agent_id, jti) do update set expires_at = excluded.expires_at
      where client_assertion_jtis.expires_at <= ${now}
    returning agent_id`.execute(db);
  return rows.length === 1;
}

/** Deletes the rows whose assertions can no longer be accepted; returns how many. */
export async function pruneAssertionJtis(db: Db, now: Date): Promise<number> {
  const result = await db.deleteFrom('client_assertion_jtis').where('expires_at', '<=', now).executeTakeFirst();
  return Number(result.numDeletedRows);
}
