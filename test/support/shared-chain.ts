import { sql, type Kysely } from 'kysely';
import { decisionBody, type DecisionRecord } from '../../src/audit/decision-log.ts';
import type { Database } from '../../src/store/events.table.ts';
import { migrateTo } from '../../src/store/migrate.ts';

/**
 * A log as nodes before per-node chains (migration 0013) left it: the schema up to 0012, and
 * `records` appended one at a time as those nodes did, chained in the database onto the one
 * shared chain (leash_chain_decisions, 0007). Bring it up to date with migrateToLatest.
 */
export async function sharedChainLog(db: Kysely<Database>, records: DecisionRecord[]): Promise<void> {
  await migrateTo(db, '0012_ssf_delivery');
  for (const d of records) {
    const body = decisionBody({ ...d, seq: 0 });
    const cut = body.lastIndexOf('"seq":0') + '"seq":'.length;
    const row = {
      id: d.id, node_id: d.nodeId, recorded_at: d.at.toISOString(), request: d.request, decision: d.decision, layer: d.layer, code: d.code,
      reasons: d.reasons, policy_version: d.policyVersion, log_position: d.logPosition, shadow: d.shadow ?? null, body_head: body.slice(0, cut), body_tail: body.slice(cut + 1),
    };
    await sql`select hashes from leash_chain_decisions(${JSON.stringify([row])}::jsonb)`.execute(db);
  }
}
