import { sql, type Kysely, type Selectable, type Transaction } from 'kysely';
import { canonicalJson } from '../canonical-json.ts';
import { runStatement } from '../store/connect.ts';
import type { Database, DecisionsTable } from '../store/events.table.ts';
import { GroupCommitter } from '../store/group-commit.ts';
import { chainHash, checkChain, GENESIS_HASH } from '../store/hash-chain.ts';

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
  /** A quarantined agent's would-be decision (the caller got deny); absent otherwise. */
  shadow?: { decision: boolean; layer: string; reasons: string[]; code?: string } | null;
}

export interface StoredDecision extends DecisionRecord {
  seq: number;
  prevHash: string;
  hash: string;
}

const DECISION_LOCK = 0x6c65617369; // distinct from the event log's lock; leash_append_decisions (migration 0006) takes it too

export function decisionHash(prevHash: string, d: Omit<StoredDecision, 'hash' | 'prevHash'>): string {
  return chainHash(prevHash, decisionBody(d));
}

/** The canonical form of a decision that its hash covers. */
export function decisionBody(d: Omit<StoredDecision, 'hash' | 'prevHash'>): string {
  return canonicalJson({
    seq: d.seq, id: d.id, nodeId: d.nodeId, at: d.at.toISOString(), request: d.request, decision: d.decision,
    layer: d.layer, code: d.code, reasons: d.reasons, policyVersion: d.policyVersion, logPosition: d.logPosition,
    // Only when present, so records from before the field existed keep their hashes.
    ...(d.shadow ? { shadow: d.shadow } : {}),
  });
}

/**
 * The decision log: append-only, hash-chained, group-committed. `record` resolves only once
 * the decision is durable, so a caller that awaits it never lets an allow out first.
 */
export class DecisionLog {
  private readonly committer: GroupCommitter<DecisionRecord, StoredDecision>;
  /** The chain's head as this node last wrote or read it; null until known. */
  private head: { seq: number; hash: string } | null = null;

  constructor(readonly db: Kysely<Database>) {
    this.committer = new GroupCommitter<DecisionRecord, StoredDecision>((batch) => this.append(batch), 512);
  }

  /**
   * One round trip when this node's view of the head is current: the batch is chained onto
   * it and appended by `leash_append_decisions`, which takes the lock and refuses it (writing
   * nothing) if the head has moved. Then, or when the head is unknown, the locked way: lock,
   * read the head, chain, append, commit.
   */
  private async append(batch: DecisionRecord[]): Promise<StoredDecision[]> {
    try {
      let stored = this.head ? chain(batch, this.head) : null;
      if (!stored || !(await appendAfter(this.db, this.head!, stored))) {
        stored = await this.db.transaction().execute((trx) => appendDecisions(trx, batch));
      }
      this.head = stored[stored.length - 1]!;
      return stored;
    } catch (err) {
      this.head = null;
      throw err;
    }
  }

  record(decision: DecisionRecord): Promise<StoredDecision> {
    return this.committer.submit(decision);
  }
}

/** The batch chained onto `head`: consecutive sequence numbers, each hash over the one before. */
function chain(batch: DecisionRecord[], head: { seq: number; hash: string }): StoredDecision[] {
  let seq = head.seq;
  let prevHash = head.hash;
  return batch.map((d): StoredDecision => {
    const row = { ...d, seq: ++seq, prevHash };
    prevHash = decisionHash(row.prevHash, row);
    return { ...row, hash: prevHash };
  });
}

const APPEND_DECISIONS = { name: 'leash_append_decisions', text: 'select appended from leash_append_decisions($1, $2, $3::jsonb)' };

/**
 * Appends `stored` if the log's head is still `head` (migration 0006); false, with nothing
 * written, if another node appended meanwhile. The rows go as one JSON array.
 */
async function appendAfter(db: Kysely<Database> | Transaction<Database>, head: { seq: number; hash: string }, stored: StoredDecision[]): Promise<boolean> {
  const rows = stored.map((d) => ({
    seq: d.seq, id: d.id, node_id: d.nodeId, recorded_at: d.at.toISOString(), request: d.request, decision: d.decision, layer: d.layer,
    code: d.code, reasons: d.reasons, policy_version: d.policyVersion, log_position: d.logPosition, prev_hash: d.prevHash, hash: d.hash,
    shadow: d.shadow ?? null, // JSON null arrives as SQL null
  }));
  const [result] = await runStatement<{ appended: boolean }>(db, APPEND_DECISIONS, [String(head.seq), head.hash, JSON.stringify(rows)]);
  return result?.appended === true;
}

/** The locked way: holding the lock, the head read is the real one, so the append cannot be refused. */
async function appendDecisions(trx: Transaction<Database>, batch: DecisionRecord[]): Promise<StoredDecision[]> {
  await sql`select pg_advisory_xact_lock(${DECISION_LOCK})`.execute(trx);
  const row = await trx.selectFrom('decisions').select(['seq', 'hash']).orderBy('seq', 'desc').limit(1).executeTakeFirst();
  const head = { seq: row ? Number(row.seq) : 0, hash: row?.hash ?? GENESIS_HASH };
  const stored = chain(batch, head);
  if (!(await appendAfter(trx, head, stored))) throw new Error('the decision log moved while its append lock was held'); // cannot happen
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
    ...(r.shadow ? { shadow: r.shadow as StoredDecision['shadow'] } : {}),
  };
}

/** Consecutive decisions link and hash correctly (edits, deletions and reorderings show). */
export function verifyDecisionChain(decisions: StoredDecision[], start = { seq: 0, hash: GENESIS_HASH }): { ok: true } | { ok: false; seq: number } {
  const c = checkChain(decisions, (d) => d.seq, (d) => decisionHash(d.prevHash, d), { at: start.seq, hash: start.hash });
  return c.ok ? { ok: true } : { ok: false, seq: c.at };
}
