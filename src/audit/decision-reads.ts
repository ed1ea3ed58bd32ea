import { sql, type Kysely, type Selectable } from 'kysely';
import type { Database, DecisionAnchorsTable, DecisionsTable } from '../store/events.table.ts';
import { checkChain, GENESIS_HASH } from '../store/hash-chain.ts';
import { decisionHash, type ChainHead, type StoredAnchor, type StoredDecision } from './decision-log.ts';

// Reading the decision log: in the log's order (`seq`, across every chain), one subject's
// decisions, one node's chain in its own order, the shared chain from before migration 0013,
// and the anchor chain.

/** Where a node's chain ends: its newest record, or the last one archived, or the start. */
export async function readChainHead(db: Kysely<Database>, node: string): Promise<ChainHead> {
  const row = await db.selectFrom('decisions').select(['chain_seq', 'hash']).where('node_id', '=', node).where('chain_seq', 'is not', null)
    .orderBy('chain_seq', 'desc').limit(1).executeTakeFirst();
  if (row) return { at: Number(row.chain_seq), hash: row.hash };
  const archived = await db.selectFrom('audit_archive').select(['last', 'last_hash']).where('chain', '=', 'decisions').where('node_id', '=', node)
    .orderBy('last', 'desc').limit(1).executeTakeFirst();
  return archived ? { at: Number(archived.last), hash: archived.last_hash } : { at: 0, hash: GENESIS_HASH };
}

/**
 * Every node that has a chain of its own, in the database or archived, or named by an anchor ('' is the shared chain's).
 * The decisions' and anchors' node ids are found by skipping through their (node_id, chain_seq)
 * indexes, one probe per node: the tables themselves are never read through.
 */
export async function chainNodes(db: Kysely<Database>): Promise<string[]> {
  const rows = await sql<{ node_id: string }>`
    with recursive in_decisions(node_id) as (
      (select node_id from decisions where chain_seq is not null order by node_id limit 1)
      union all
      select (select d.node_id from decisions d where d.chain_seq is not null and d.node_id > n.node_id order by d.node_id limit 1)
      from in_decisions n where n.node_id is not null
    ), in_anchors(node_id) as (
      (select node_id from decision_anchors where node_id > '' order by node_id limit 1)
      union all
      select (select a.node_id from decision_anchors a where a.node_id > n.node_id order by a.node_id limit 1)
      from in_anchors n where n.node_id is not null
    )
    select node_id from in_decisions where node_id is not null
    union select node_id from audit_archive where chain = 'decisions' and node_id <> ''
    union select node_id from in_anchors where node_id is not null
    order by node_id`.execute(db);
  return rows.rows.map((r) => r.node_id);
}

/** A node's chain after its record `after`, in its order. */
export async function readChain(db: Kysely<Database>, node: string, after: number, limit: number): Promise<StoredDecision[]> {
  const rows = await db.selectFrom('decisions').selectAll().where('node_id', '=', node).where('chain_seq', '>', String(after))
    .orderBy('chain_seq').limit(limit).execute();
  return rows.map(toStoredDecision);
}

/** The shared chain from before migration 0013, after sequence number `after`. */
export async function readSharedChain(db: Kysely<Database>, after: number, limit: number): Promise<StoredDecision[]> {
  const rows = await db.selectFrom('decisions').selectAll().where('chain_seq', 'is', null).where('seq', '>', String(after))
    .orderBy('seq').limit(limit).execute();
  return rows.map(toStoredDecision);
}

/** The anchor chain after its entry `after`. */
export async function readAnchors(db: Kysely<Database>, after: number, limit: number): Promise<StoredAnchor[]> {
  return (await db.selectFrom('decision_anchors').selectAll().where('seq', '>', String(after)).orderBy('seq').limit(limit).execute()).map(toAnchor);
}

/**
 * The anchors of one node's chain ('' for the shared chain's) after `after` (a record's number
 * in the chain, an anchor's number) and at most anchor `upTo`, in the chain's order.
 */
export async function readNodeAnchors(db: Kysely<Database>, node: string, after: { chainSeq: number; seq: number }, upTo: number, limit: number): Promise<StoredAnchor[]> {
  return (await db.selectFrom('decision_anchors').selectAll().where('node_id', '=', node).where('seq', '<=', String(upTo))
    .where(sql<boolean>`(chain_seq, seq) > (${String(after.chainSeq)}::bigint, ${String(after.seq)}::bigint)`)
    .orderBy('chain_seq').orderBy('seq').limit(limit).execute()).map(toAnchor);
}

const toAnchor = (r: Selectable<DecisionAnchorsTable>): StoredAnchor => ({
  seq: Number(r.seq), nodeId: r.node_id, chainSeq: Number(r.chain_seq), chainHash: r.chain_hash,
  at: r.recorded_at instanceof Date ? r.recorded_at : new Date(r.recorded_at), prevHash: r.prev_hash, hash: r.hash,
});

export async function readDecisions(db: Kysely<Database>, afterSeq: number, limit: number): Promise<StoredDecision[]> {
  const rows = await db.selectFrom('decisions').selectAll().where('seq', '>', String(afterSeq)).orderBy('seq').limit(limit).execute();
  return rows.map(toStoredDecision);
}

/**
 * One subject's decisions recorded at or after `since`, after sequence number `afterSeq`, in
 * order: the subject is the request's, so this reads through migration 0010's index.
 */
export async function readSubjectDecisions(db: Kysely<Database>, subject: string, since: Date, afterSeq: number, limit: number): Promise<StoredDecision[]> {
  return (await subjectDecisionsQuery(db, subject, since, afterSeq, limit).execute()).map(toStoredDecision);
}

/** The query of `readSubjectDecisions` (tests explain it: it must read through the index). */
export const subjectDecisionsQuery = (db: Kysely<Database>, subject: string, since: Date, afterSeq: number, limit: number) =>
  db.selectFrom('decisions').selectAll()
    .where(sql<string>`request #>> '{subject,id}'`, '=', subject)
    .where('seq', '>', String(afterSeq))
    .where('recorded_at', '>=', since)
    .orderBy('seq').limit(limit);

function toStoredDecision(r: Selectable<DecisionsTable>): StoredDecision {
  return {
    seq: Number(r.seq), ...(r.chain_seq === null ? {} : { chainSeq: Number(r.chain_seq) }), id: r.id, nodeId: r.node_id, at: r.recorded_at instanceof Date ? r.recorded_at : new Date(r.recorded_at),
    request: r.request, decision: r.decision, layer: r.layer, code: r.code, reasons: r.reasons as string[],
    policyVersion: r.policy_version, logPosition: Number(r.log_position), prevHash: r.prev_hash, hash: r.hash,
    ...(r.shadow ? { shadow: r.shadow as StoredDecision['shadow'] } : {}),
  };
}

/**
 * Consecutive decisions of one chain link and hash correctly (edits, deletions and
 * reorderings show): `at` is the first failing record's number in its chain.
 */
export function verifyDecisionChain(decisions: StoredDecision[], start: ChainHead = { at: 0, hash: GENESIS_HASH }): { ok: true } | { ok: false; at: number } {
  const c = checkChain(decisions, (d) => d.chainSeq ?? d.seq, (d) => decisionHash(d.prevHash, d), start);
  return c.ok ? { ok: true } : { ok: false, at: c.at };
}
