import { sql, type Kysely } from 'kysely';
import { eventHash, checkChain, GENESIS_HASH, type LinkCheck } from '../store/hash-chain.ts';
import { toStoredEvent, type StoredEvent } from '../store/event-store.ts';
import type { Database } from '../store/events.table.ts';
import { decisionHash, readDecisions, type StoredDecision } from './decision-log.ts';

// SPEC §8 `leash audit verify`: walk both hash chains in Postgres and name the first record
// that was edited, deleted, inserted or reordered. A chain alone cannot show that its tail was
// cut off; an anchor (the heads a previous verify saw, kept where the database's admins cannot
// write) can: the chains must still reach it, with the same hashes.

export type ChainName = 'events' | 'decisions';

export interface ChainHead {
  at: number;
  hash: string;
}

export interface Anchor {
  events: ChainHead;
  decisions: ChainHead;
}

export interface Finding {
  chain: ChainName;
  /** Position (events) or sequence number (decisions) of the first record that fails. */
  at: number;
  problem: 'edited' | 'deleted' | 'inserted or reordered' | 'truncated';
  detail: string;
}

export interface VerifyResult {
  ok: boolean;
  heads: Anchor;
  records: Record<ChainName, number>;
  /** The first problem in each chain, if any. */
  findings: Finding[];
}

export interface VerifyOptions {
  anchor?: Anchor | null;
  pageSize?: number;
  /** Called as records are checked: how many so far, out of about how many. */
  progress?: (chain: ChainName, done: number, total: number) => void;
}

const label = { events: 'position', decisions: 'decision' } as const;

function describe(chain: ChainName, failed: Extract<LinkCheck, { ok: false }>): Finding {
  const what = `${label[chain]} ${failed.at}`;
  switch (failed.reason) {
    case 'position_gap': {
      const first = failed.after + 1;
      const range = failed.at - 1 > first ? `${label[chain]}s ${first}–${failed.at - 1} are` : `${label[chain]} ${first} is`;
      return { chain, at: first, problem: 'deleted', detail: `${range} missing (deleted)` };
    }
    case 'broken_link':
      return { chain, at: failed.at, problem: 'inserted or reordered', detail: `${what} does not follow the record before it: inserted or moved here, or the one before was rewritten` };
    case 'hash_mismatch':
      return { chain, at: failed.at, problem: 'edited', detail: `${what} no longer matches its hash: its content (or its place) was edited` };
  }
}

async function walk<R extends { prevHash: string; hash: string }>(
  chain: ChainName,
  read: (after: number, limit: number) => Promise<R[]>,
  key: (r: R) => number,
  recompute: (r: R) => string,
  total: number,
  options: VerifyOptions,
): Promise<{ head: ChainHead; records: number; finding: Finding | null }> {
  const pageSize = options.pageSize ?? 10_000;
  const anchor = options.anchor?.[chain];
  let head: ChainHead = { at: 0, hash: GENESIS_HASH };
  let records = 0;
  for (;;) {
    const page = await read(head.at, pageSize);
    const checked = checkChain(page, key, recompute, head);
    if (!checked.ok) return { head, records, finding: describe(chain, checked) };
    // The anchor's record must still be there, unchanged.
    const anchored = anchor && page.find((r) => key(r) === anchor.at);
    if (anchor && anchored && anchored.hash !== anchor.hash) {
      return { head, records, finding: { chain, at: anchor.at, problem: 'edited', detail: `${label[chain]} ${anchor.at} differs from the anchor: the chain was rewritten up to there` } };
    }
    records += page.length;
    head = { at: checked.at, hash: checked.hash };
    options.progress?.(chain, head.at, Math.max(total, head.at));
    if (page.length < pageSize) break;
  }
  if (anchor && head.at < anchor.at) {
    return { head, records, finding: { chain, at: head.at + 1, problem: 'truncated', detail: `the chain ends at ${label[chain]} ${head.at}, but the anchor saw it reach ${anchor.at}: the tail was cut off` } };
  }
  return { head, records, finding: null };
}

/** Every record in both chains, checked from the first. */
export async function verifyAudit(db: Kysely<Database>, options: VerifyOptions = {}): Promise<VerifyResult> {
  const max = async (table: 'events' | 'decisions', column: 'position' | 'seq') =>
    Number((await sql<{ max: string | null }>`select max(${sql.ref(column)}) as max from ${sql.table(table)}`.execute(db)).rows[0]?.max ?? 0);
  const readEvents = async (after: number, limit: number): Promise<StoredEvent[]> =>
    (await db.selectFrom('events').selectAll().where('position', '>', String(after)).orderBy('position').limit(limit).execute()).map(toStoredEvent);

  const events = await walk('events', readEvents, (e) => e.position, (e) => eventHash(e.prevHash, e), await max('events', 'position'), options);
  const decisions = await walk<StoredDecision>('decisions', (after, limit) => readDecisions(db, after, limit), (d) => d.seq, (d) => decisionHash(d.prevHash, d), await max('decisions', 'seq'), options);
  const findings = [events.finding, decisions.finding].filter((f): f is Finding => f !== null);

  // Decisions name the log position they were made at: the event log must reach it.
  if (!events.finding) {
    const beyond = await db.selectFrom('decisions').select(['seq', 'log_position']).where('log_position', '>', String(events.head.at)).orderBy('seq').limit(1).executeTakeFirst();
    if (beyond) {
      findings.unshift({
        chain: 'events', at: events.head.at + 1, problem: 'truncated',
        detail: `decision ${beyond.seq} was made at log position ${beyond.log_position}, but the event log ends at ${events.head.at}: its tail was cut off`,
      });
    }
  }
  return { ok: findings.length === 0, heads: { events: events.head, decisions: decisions.head }, records: { events: events.records, decisions: decisions.records }, findings };
}
