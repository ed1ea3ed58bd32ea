import { sql, type Kysely, type Selectable } from 'kysely';
import { canonicalJson } from '../canonical-json.ts';
import { runStatement } from '../store/connect.ts';
import type { Database, DecisionsTable } from '../store/events.table.ts';
import { GroupCommitter } from '../store/group-commit.ts';
import { chainHash, checkChain, GENESIS_HASH } from '../store/hash-chain.ts';

/**
 * A request as the decision log keeps it (never a raw token: see the AuthZEN routes). An item
 * of a batch decided with the batch's shared context names, in `contextOf`, the decision that
 * holds that context instead of holding it again; the hash chain covers both.
 */
export interface RecordedRequest {
  subject: unknown;
  action: unknown;
  resource: unknown;
  context?: Record<string, unknown>;
  contextOf?: string;
  /** The approval a gated decision asked for (`request`, `pending`) or spent (`use`). */
  approval?: { id: string; outcome: string };
}

/** One decision as recorded. `request` never holds a raw token (see `RecordedRequest`). */
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

// The log's append lock, 0x6c65617369 (distinct from the event log's), is taken inside the
// database: leash_chain_decisions (migration 0007) and leash_append_decisions (0006).

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

/** Batches in a row with no other writer's between them before a node chains its own. */
const ALONE_AFTER = 3;

/**
 * The decision log: append-only, hash-chained, group-committed. `record` resolves only once
 * the decision is durable, so a caller that awaits it never lets an allow out first.
 */
export class DecisionLog {
  private readonly committer: GroupCommitter<DecisionRecord, StoredDecision>;
  /** The last record this node wrote; null until it has written one, or after a failure. */
  private last: { seq: number; hash: string } | null = null;
  /** This node's last batches in a row that no other writer's came between (see `append`). */
  private alone = 0;

  constructor(readonly db: Kysely<Database>) {
    this.committer = new GroupCommitter<DecisionRecord, StoredDecision>((batch) => this.append(batch), 512);
  }

  /** Told how long each record took to be durable, or to fail (the metrics). */
  timed: ((seconds: number) => void) | null = null;

  record(decision: DecisionRecord): Promise<StoredDecision> {
    const timed = this.timed;
    if (timed) {
      const started = performance.now();
      return this.committer.submit(decision).finally(() => timed((performance.now() - started) / 1000));
    }
    return this.committer.submit(decision);
  }

  /**
   * One round trip either way. While this node is the log's only writer it knows the head,
   * chains the batch itself and appends it with `leash_append_decisions`, which refuses it
   * (writing nothing) if the head has moved after all. Otherwise, as when other nodes are
   * deciding too, `leash_chain_decisions` chains the batch onto the head in the database
   * (more work for the database, none of it wasted). A node takes itself to be the only
   * writer once its last few batches followed each other directly, and not after a refusal.
   */
  private async append(batch: DecisionRecord[]): Promise<StoredDecision[]> {
    try {
      if (this.alone >= ALONE_AFTER && this.last) {
        const stored = chain(batch, this.last);
        if (await appendAfter(this.db, this.last, stored)) return this.wrote(stored, this.alone);
      }
      const stored = await appendChainedInDatabase(this.db, batch);
      return this.wrote(stored, stored[0]!.prevHash === this.last?.hash ? Math.min(this.alone + 1, ALONE_AFTER) : 0);
    } catch (err) {
      this.last = null;
      this.alone = 0;
      throw err;
    }
  }

  private wrote(stored: StoredDecision[], alone: number): StoredDecision[] {
    this.last = stored[stored.length - 1]!;
    this.alone = alone;
    return stored;
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

/** A record's columns as the append functions take them (JSON null arrives as SQL null). */
const columns = (d: DecisionRecord) => ({
  id: d.id, node_id: d.nodeId, recorded_at: d.at.toISOString(), request: d.request, decision: d.decision, layer: d.layer,
  code: d.code, reasons: d.reasons, policy_version: d.policyVersion, log_position: d.logPosition, shadow: d.shadow ?? null,
});

const APPEND_DECISIONS = { name: 'leash_append_decisions', text: 'select appended from leash_append_decisions($1, $2, $3::jsonb)' };

/**
 * Appends `stored` if the log's head is still `head` (migration 0006); false, with nothing
 * written, if another node appended meanwhile. The rows go as one JSON array.
 */
async function appendAfter(db: Kysely<Database>, head: { seq: number; hash: string }, stored: StoredDecision[]): Promise<boolean> {
  const rows = stored.map((d) => ({ ...columns(d), seq: d.seq, prev_hash: d.prevHash, hash: d.hash }));
  const [result] = await runStatement<{ appended: boolean }>(db, APPEND_DECISIONS, [String(head.seq), head.hash, JSON.stringify(rows)]);
  return result?.appended === true;
}

const CHAIN_DECISIONS = { name: 'leash_chain_decisions', text: 'select first_seq, first_prev_hash, hashes from leash_chain_decisions($1::jsonb)' };

/**
 * Appends a batch onto whatever the head is: `leash_chain_decisions` (migration 0007) takes
 * the log's append lock, reads the head and links each record onto it, hashing the canonical
 * body this side wrote with the sequence number put in. Never refused for a moved head.
 */
async function appendChainedInDatabase(db: Kysely<Database>, batch: DecisionRecord[]): Promise<StoredDecision[]> {
  const rows = batch.map((d) => ({ ...columns(d), ...bodyAroundSeq(d) }));
  const [chained] = await runStatement<{ first_seq: string; first_prev_hash: string; hashes: string[] }>(db, CHAIN_DECISIONS, [JSON.stringify(rows)]);
  if (!chained || chained.hashes.length !== batch.length) throw new Error('the decision log did not chain the batch it was given');
  let prevHash = chained.first_prev_hash;
  return batch.map((d, i): StoredDecision => {
    const stored = { ...d, seq: Number(chained.first_seq) + i, prevHash, hash: chained.hashes[i]! };
    prevHash = stored.hash;
    return stored;
  });
}

/**
 * A record's canonical body (`decisionBody`) cut where its sequence number goes, for the
 * database to put the number in. The top-level "seq" is the last one in the text: the only
 * member after it is the shadow, whose keys are fixed, and a string's own quotes are escaped.
 */
export function bodyAroundSeq(d: DecisionRecord): { body_head: string; body_tail: string } {
  const body = decisionBody({ ...d, seq: 0 });
  const cut = body.lastIndexOf('"seq":0') + '"seq":'.length;
  return { body_head: body.slice(0, cut), body_tail: body.slice(cut + 1) };
}

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
