import { createHash } from 'node:crypto';
import { sql, type Kysely, type Selectable, type Transaction } from 'kysely';
import { canonicalJson } from '../canonical-json.ts';
import type { Database, DecisionsTable } from '../store/events.table.ts';
import { GroupCommitter } from '../store/group-commit.ts';
import { GENESIS_HASH } from '../store/hash-chain.ts';

/** One decision as recorded. `request` never holds a raw token (see `redactRequest`). */
export interface DecisionRecord {
  id: string;
  nodeId: string;
  at: Date;
  request: unknown;
  decision: boolean;
  layer: string;
  code: string | null;
  reasons: string[];
  policyVersion: number;
  logPosition: number;
}

export interface StoredDecision extends DecisionRecord {
  seq: number;
  prevHash: string;
  hash: string;
}

const DECISION_LOCK = 0x6c65617369; // distinct from the event log's lock

export function decisionHash(prevHash: string, d: Omit<StoredDecision, 'hash' | 'prevHash'>): string {
  const body = canonicalJson({
    seq: d.seq, id: d.id, nodeId: d.nodeId, at: d.at.toISOString(), request: d.request, decision: d.decision,
    layer: d.layer, code: d.code, reasons: d.reasons, policyVersion: d.policyVersion, logPosition: d.logPosition,
  });
  return createHash('sha256').update(prevHash).update('\n').update(body).digest('hex');
}

/**
 * The decision log: append-only, hash-chained, group-committed. `record` resolves only once
 * the decision is durable, so a caller that awaits it never lets an allow out first.
 */
export class DecisionLog {
  private readonly committer: GroupCommitter<DecisionRecord, StoredDecision>;

  constructor(readonly db: Kysely<Database>) {
    this.committer = new GroupCommitter<DecisionRecord, StoredDecision>((batch) => this.db.transaction().execute((trx) => appendDecisions(trx, batch)), 512);
  }

  record(decision: DecisionRecord): Promise<StoredDecision> {
    return this.committer.submit(decision);
  }
}

async function appendDecisions(trx: Transaction<Database>, batch: DecisionRecord[]): Promise<StoredDecision[]> {
  await sql`select pg_advisory_xact_lock(${DECISION_LOCK})`.execute(trx);
  const head = await trx.selectFrom('decisions').select(['seq', 'hash']).orderBy('seq', 'desc').limit(1).executeTakeFirst();
  let seq = head ? Number(head.seq) : 0;
  let prevHash = head?.hash ?? GENESIS_HASH;
  const stored = batch.map((d): StoredDecision => {
    const row = { ...d, seq: ++seq, prevHash };
    prevHash = decisionHash(row.prevHash, row);
    return { ...row, hash: prevHash };
  });
  for (let i = 0; i < stored.length; i += 1000) {
    await trx
      .insertInto('decisions')
      .values(
        stored.slice(i, i + 1000).map((d) => ({
          seq: d.seq, id: d.id, node_id: d.nodeId, recorded_at: d.at, request: JSON.stringify(d.request), decision: d.decision,
          layer: d.layer, code: d.code, reasons: JSON.stringify(d.reasons), policy_version: d.policyVersion,
          log_position: d.logPosition, prev_hash: d.prevHash, hash: d.hash,
        })),
      )
      .execute();
  }
  return stored;
}

export async function readDecisions(db: Kysely<Database>, afterSeq: number, limit: number): Promise<StoredDecision[]> {
  const rows = await db.selectFrom('decisions').selectAll().where('seq', '>', String(afterSeq)).orderBy('seq').limit(limit).execute();
  return rows.map(toStoredDecision);
}

function toStoredDecision(r: Selectable<DecisionsTable>): StoredDecision {
  return {
    seq: Number(r.seq), id: r.id, nodeId: r.node_id, at: r.recorded_at instanceof Date ? r.recorded_at : new Date(r.recorded_at),
    request: r.request, decision: r.decision, layer: r.layer, code: r.code, reasons: r.reasons as string[],
    policyVersion: r.policy_version, logPosition: Number(r.log_position), prevHash: r.prev_hash, hash: r.hash,
  };
}

/** Consecutive decisions link and hash correctly (edits, deletions and reorderings show). */
export function verifyDecisionChain(decisions: StoredDecision[], start = { seq: 0, hash: GENESIS_HASH }): { ok: true } | { ok: false; seq: number } {
  let { seq, hash } = start;
  for (const d of decisions) {
    if (d.seq !== seq + 1 || d.prevHash !== hash || decisionHash(d.prevHash, d) !== d.hash) return { ok: false, seq: d.seq };
    seq = d.seq;
    hash = d.hash;
  }
  return { ok: true };
}
