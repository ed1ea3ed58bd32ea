import { sql, type Kysely } from 'kysely';
import { canonicalJson } from '../canonical-json.ts';
import { runStatement } from '../store/connect.ts';
import type { Database } from '../store/events.table.ts';
import { GroupCommitter } from '../store/group-commit.ts';
import { chainHash } from '../store/hash-chain.ts';
import { readChainHead } from './decision-reads.ts';

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
  /** The log's reading order, across every node's chain (assigned by the database as it writes). */
  seq: number;
  /** The record's number in its node's chain; absent on the shared chain from before migration 0013. */
  chainSeq?: number;
  prevHash: string;
  hash: string;
}

export function decisionHash(prevHash: string, d: Omit<StoredDecision, 'hash' | 'prevHash'>): string {
  return chainHash(prevHash, decisionBody(d));
}

/**
 * The canonical form of a decision that its hash covers. On a node's chain (since migration
 * 0013) that is the record's number in the chain, not the log's `seq`, which the database
 * assigns as it writes; on the shared chain from before, its `seq`.
 */
export function decisionBody(d: Omit<StoredDecision, 'hash' | 'prevHash'>): string {
  return canonicalJson({
    ...(d.chainSeq === undefined ? { seq: d.seq } : { chainSeq: d.chainSeq }),
    id: d.id, nodeId: d.nodeId, at: d.at.toISOString(), request: d.request, decision: d.decision,
    layer: d.layer, code: d.code, reasons: d.reasons, policyVersion: d.policyVersion, logPosition: d.logPosition,
    // Only when present, so records from before the field existed keep their hashes.
    ...(d.shadow ? { shadow: d.shadow } : {}),
  });
}

/** A chain's last record: its number in the chain and its hash. */
export interface ChainHead {
  at: number;
  hash: string;
}

/** How often a node writes its chain's head into the shared anchor chain, by default. */
export const ANCHOR_EVERY_MS = 1_000;

/** Refusals in a row (another process writing the same node's chain) before a batch fails. */
const ATTEMPTS = 8;

/**
 * The decision log: append-only, hash-chained, group-committed. `record` resolves only once
 * the decision is durable, so a caller that awaits it never lets an allow out first.
 *
 * Each node writes a chain of its own, named by its id, and chains every batch itself onto the
 * head it knows: one round trip, no lock shared with other nodes. Every `anchorEveryMs` it
 * writes that head into the shared anchor chain, which is what lets verify prove that no
 * node's records were cut off (up to its last anchor) and how far each chain had come when.
 */
export class DecisionLog {
  private readonly committer: GroupCommitter<DecisionRecord, StoredDecision>;
  /** Each chain's last record this log wrote; absent until it has read or written it, or after a failure. */
  private readonly heads = new Map<string, ChainHead>();
  /** Each chain's newest record this log wrote (kept through failures: it is what the next anchor names). */
  private readonly written = new Map<string, ChainHead>();
  /** Each chain's record last anchored by this log. */
  private readonly anchored = new Map<string, number>();
  private timer: NodeJS.Timeout | null = null;
  private anchoring: Promise<void> | null = null;

  constructor(readonly db: Kysely<Database>, private readonly options: { anchorEveryMs?: number } = {}) {
    this.committer = new GroupCommitter<DecisionRecord, StoredDecision>((batch) => this.append(batch), 512);
  }

  /** Told how long each record took to be durable, or to fail (the metrics). */
  timed: ((seconds: number) => void) | null = null;
  /** Told when a head could not be anchored (it is tried again at the next interval). */
  anchorFailed: ((err: unknown) => void) | null = null;

  record(decision: DecisionRecord): Promise<StoredDecision> {
    const timed = this.timed;
    if (timed) {
      const started = performance.now();
      return this.committer.submit(decision).finally(() => timed((performance.now() - started) / 1000));
    }
    return this.committer.submit(decision);
  }

  /** Every chain head this log wrote and has not anchored yet, anchored now. */
  anchor(): Promise<void> {
    this.anchoring ??= this.anchorHeads().finally(() => (this.anchoring = null));
    return this.anchoring;
  }

  /** Stops the interval and anchors what is left (a node that stops leaves its tail anchored). */
  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    // An anchoring under way may have read the heads before the last batch: once more after it.
    await this.anchoring?.catch(() => {});
    await this.anchor();
  }

  private async anchorHeads(): Promise<void> {
    for (const [node, head] of this.written) {
      if ((this.anchored.get(node) ?? 0) >= head.at) continue;
      await appendAnchor(this.db, node, head);
      this.anchored.set(node, head.at);
    }
  }

  private async append(batch: DecisionRecord[]): Promise<StoredDecision[]> {
    const node = batch[0]!.nodeId;
    if (batch.every((d) => d.nodeId === node)) return this.appendToChain(node, batch);
    // Records of several nodes (tests, tools): each to its own chain, in the order given.
    const stored = new Map<DecisionRecord, StoredDecision>();
    for (const id of new Set(batch.map((d) => d.nodeId))) {
      const records = batch.filter((d) => d.nodeId === id);
      (await this.appendToChain(id, records)).forEach((s, i) => stored.set(records[i]!, s));
    }
    return batch.map((d) => stored.get(d)!);
  }

  /**
   * One round trip: the batch chained onto the head this log knows, appended with
   * `leash_append_chain`, which refuses it (writing nothing) if the chain's head is elsewhere.
   * It is then read again: another process is writing with the same node id.
   */
  private async appendToChain(node: string, batch: DecisionRecord[]): Promise<StoredDecision[]> {
    try {
      let head = this.heads.get(node) ?? (await this.readHead(node));
      for (let attempt = 1; ; attempt++) {
        const stored = chain(batch, head);
        const seqs = await appendAfter(this.db, node, head, stored);
        if (seqs) {
          stored.forEach((d, i) => (d.seq = seqs[i]!));
          const last = stored[stored.length - 1]!;
          this.heads.set(node, { at: last.chainSeq!, hash: last.hash });
          this.written.set(node, { at: last.chainSeq!, hash: last.hash });
          this.timer ??= setInterval(() => void this.anchor().catch((err) => this.anchorFailed?.(err)), this.options.anchorEveryMs ?? ANCHOR_EVERY_MS).unref();
          return stored;
        }
        if (attempt === ATTEMPTS) throw new Error(`another process keeps writing the decision chain of node ${JSON.stringify(node)}: two nodes with one node id?`);
        head = await this.readHead(node);
      }
    } catch (err) {
      this.heads.delete(node);
      throw err;
    }
  }

  /**
   * The chain's head as the database has it. Behind a record this log wrote, it means records
   * were removed: writing on would put new ones in their place, so nothing is written.
   */
  private async readHead(node: string): Promise<ChainHead> {
    if (node === '') throw new Error('a decision chain needs a node id');
    const head = await readChainHead(this.db, node);
    const mine = this.written.get(node);
    if (mine && head.at < mine.at) {
      throw new Error(`node ${JSON.stringify(node)}'s decision chain ends at record ${head.at} in the database, but this node wrote record ${mine.at}: records were removed; nothing more is recorded until an operator looks (leash audit verify)`);
    }
    return head;
  }
}

/** The batch chained onto `head`: consecutive numbers in the chain, each hash over the one before. */
function chain(batch: DecisionRecord[], head: ChainHead): StoredDecision[] {
  let at = head.at;
  let prevHash = head.hash;
  return batch.map((d): StoredDecision => {
    const row = { ...d, seq: 0, chainSeq: ++at, prevHash };
    prevHash = decisionHash(row.prevHash, row);
    return { ...row, hash: prevHash };
  });
}

const APPEND_CHAIN = { name: 'leash_append_chain', text: 'select appended, seqs from leash_append_chain($1, $2, $3, $4::jsonb)' };

/**
 * Appends `stored` to `node`'s chain if its head is still `head` (migration 0013): the log's
 * sequence numbers it was given, in order; null, with nothing written, if the head moved.
 * The rows go as one JSON array (JSON null arrives as SQL null).
 */
async function appendAfter(db: Kysely<Database>, node: string, head: ChainHead, stored: StoredDecision[]): Promise<number[] | null> {
  const rows = stored.map((d) => ({
    id: d.id, chain_seq: d.chainSeq, recorded_at: d.at.toISOString(), request: d.request, decision: d.decision, layer: d.layer,
    code: d.code, reasons: d.reasons, policy_version: d.policyVersion, log_position: d.logPosition, shadow: d.shadow ?? null,
    prev_hash: d.prevHash, hash: d.hash,
  }));
  const [result] = await runStatement<{ appended: boolean; seqs: string[] | null }>(db, APPEND_CHAIN, [node, String(head.at), head.hash, JSON.stringify(rows)]);
  if (result?.appended !== true) return null;
  if (result.seqs?.length !== stored.length) throw new Error('the decision log did not number the batch it was given');
  return result.seqs.map(Number);
}

/** An anchor's canonical body, which its hash covers (after the anchor chain's previous hash). */
export function anchorBody(a: StoredAnchor | Omit<StoredAnchor, 'prevHash' | 'hash'>): string {
  return canonicalJson({ at: a.at.toISOString(), chainHash: a.chainHash, chainSeq: a.chainSeq, nodeId: a.nodeId, seq: a.seq });
}

/** One entry of the shared anchor chain: a node's chain head as it stood at `at`. */
export interface StoredAnchor {
  seq: number;
  nodeId: string;
  chainSeq: number;
  chainHash: string;
  at: Date;
  prevHash: string;
  hash: string;
}

/**
 * `head` of `node`'s chain into the shared anchor chain. Only the database knows the anchor
 * chain's head, so it puts the anchor's number into the body, which is sent cut there ("seq"
 * is the body's last member, so the cut is its last occurrence).
 */
async function appendAnchor(db: Kysely<Database>, node: string, head: ChainHead): Promise<void> {
  const at = new Date();
  const body = anchorBody({ seq: 0, nodeId: node, chainSeq: head.at, chainHash: head.hash, at });
  const cut = body.lastIndexOf('"seq":0') + '"seq":'.length;
  await sql`select seq from leash_append_anchor(${node}, ${String(head.at)}, ${head.hash}, ${at.toISOString()}, ${body.slice(0, cut)}, ${body.slice(cut + 1)})`.execute(db);
}
