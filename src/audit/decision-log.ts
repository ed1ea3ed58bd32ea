import { sql, type Kysely, type Selectable, type Transaction } from 'kysely';
import { canonicalJson } from '../canonical-json.ts';
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

const DECISION_LOCK = 0x6c65617369; // distinct from the event log's lock

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
   * it and inserted in one autocommit statement. If another node appended meanwhile, the
   * first sequence number is taken (primary key), nothing is written, and the batch goes the
   * locked way: lock, read the head, chain, insert, commit.
   */
  private async append(batch: DecisionRecord[]): Promise<StoredDecision[]> {
    if (this.head && batch.length <= INSERT_CHUNK) {
      const stored = chain(batch, this.head);
      try {
        await insertDecisions(this.db, stored);
        this.head = stored[stored.length - 1]!;
        return stored;
      } catch (err) {
        this.head = null;
        if ((err as { code?: string }).code !== UNIQUE_VIOLATION) throw err;
      }
    }
    try {
      const stored = await this.db.transaction().execute((trx) => appendDecisions(trx, batch));
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

const UNIQUE_VIOLATION = '23505';
const INSERT_CHUNK = 1000;

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

/**
 * One statement: takes the decision-log lock (held to commit, so locked appends cannot
 * interleave) and inserts the batch. Column arrays keep the statement text the same for any
 * batch size.
 */
async function insertDecisions(db: Kysely<Database>, stored: StoredDecision[]): Promise<void> {
  for (let i = 0; i < stored.length; i += INSERT_CHUNK) {
    const rows = stored.slice(i, i + INSERT_CHUNK);
    const column = <T>(f: (d: StoredDecision) => T) => rows.map(f);
    await sql`
      insert into decisions (seq, id, node_id, recorded_at, request, decision, layer, code, reasons, policy_version, log_position, prev_hash, hash, shadow)
      select t.* from (select pg_advisory_xact_lock(${DECISION_LOCK})) as locked,
        unnest(${column((d) => String(d.seq))}::bigint[], ${column((d) => d.id)}::uuid[], ${column((d) => d.nodeId)}::text[],
               ${column((d) => d.at.toISOString())}::timestamptz[], ${column((d) => JSON.stringify(d.request))}::jsonb[],
               ${column((d) => d.decision)}::boolean[], ${column((d) => d.layer)}::text[], ${column((d) => d.code)}::text[],
               ${column((d) => JSON.stringify(d.reasons))}::jsonb[], ${column((d) => d.policyVersion)}::integer[],
               ${column((d) => String(d.logPosition))}::bigint[], ${column((d) => d.prevHash)}::text[], ${column((d) => d.hash)}::text[],
               ${column((d) => (d.shadow ? JSON.stringify(d.shadow) : null))}::jsonb[])
        as t(seq, id, node_id, recorded_at, request, decision, layer, code, reasons, policy_version, log_position, prev_hash, hash, shadow)`.execute(db);
  }
}

async function appendDecisions(trx: Transaction<Database>, batch: DecisionRecord[]): Promise<StoredDecision[]> {
  await sql`select pg_advisory_xact_lock(${DECISION_LOCK})`.execute(trx);
  const head = await trx.selectFrom('decisions').select(['seq', 'hash']).orderBy('seq', 'desc').limit(1).executeTakeFirst();
  const stored = chain(batch, { seq: head ? Number(head.seq) : 0, hash: head?.hash ?? GENESIS_HASH });
  await insertDecisions(trx, stored);
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
