import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Kysely } from 'kysely';
import type { StoredEvent } from '../store/event-store.ts';
import type { Database } from '../store/events.table.ts';
import { chainHash, checkChain, eventBody, GENESIS_HASH, type LinkCheck } from '../store/hash-chain.ts';
import { archivedHead, existingManifest, readSegment, segmentsOf, type ArchivedLine, type ChainName, type Segment } from './archive.ts';
import { decisionBody, readDecisions, type StoredDecision } from './decision-log.ts';
import { maxOf, paged, readEvents } from './source.ts';

// SPEC §8 `leash audit verify`: walk both hash chains in Postgres and name the first record
// that was edited, deleted, inserted or reordered. A chain alone cannot show that its tail was
// cut off; an anchor (the heads a previous verify saw, kept where the database's admins cannot
// write) can: the chains must still reach it, with the same hashes.

export type { ChainName };

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
  /** An archive directory (`leash audit archive --dir`): its segments are walked before Postgres. */
  archive?: string;
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

/** A chain's records as pages; a record is its number, its link, its hash and its hashed body. */
type Pages = AsyncIterable<ArchivedLine[]>;

/** A line of an archive file that the archiver would not have written. */
class MalformedLine extends Error {
  constructor(readonly file: string) {
    super(`a line of ${file} is not a record as the archiver writes it`);
  }
}

/** Every record of the listed segments, in order, as pages. */
async function* archivePages(dir: string, segments: Segment[]): Pages {
  for (const s of segments) {
    for await (const lines of readSegment(dir, s)) {
      const bad = lines.indexOf(null);
      if (bad === -1) {
        yield lines as ArchivedLine[];
        continue;
      }
      // The records before it are checked first, so the finding names the right place.
      if (bad > 0) yield lines.slice(0, bad) as ArchivedLine[];
      throw new MalformedLine(s.file);
    }
  }
}

async function* concat(...parts: (() => Pages)[]): Pages {
  for (const part of parts) yield* part();
}

const lineOf = {
  events: (e: StoredEvent): ArchivedLine => ({ key: e.position, prevHash: e.prevHash, hash: e.hash, body: eventBody(e) }),
  decisions: (d: StoredDecision): ArchivedLine => ({ key: d.seq, prevHash: d.prevHash, hash: d.hash, body: decisionBody(d) }),
};

function dbPages(db: Kysely<Database>, chain: ChainName, after: number, pageSize: number): Pages {
  return chain === 'events'
    ? paged(async (a, n) => (await readEvents(db, a, n)).map(lineOf.events), (l) => l.key, after, pageSize)
    : paged(async (a, n) => (await readDecisions(db, a, n)).map(lineOf.decisions), (l) => l.key, after, pageSize);
}

interface Walked {
  head: ChainHead;
  records: number;
  finding: Finding | null;
}

async function walk(chain: ChainName, pages: Pages, start: ChainHead, total: number, options: VerifyOptions, where: (at: number) => string): Promise<Walked> {
  const anchor = options.anchor?.[chain];
  let head = start;
  let records = 0;
  const found = (finding: Finding): Walked => ({ head, records, finding: { ...finding, detail: `${where(finding.at)}: ${finding.detail}` } });
  try {
    for await (const page of pages) {
      const checked = checkChain(page, (r) => r.key, (r) => chainHash(r.prevHash, r.body), head);
      if (!checked.ok) {
        // A record ahead of its turn while the one due comes later in the page: moved, not deleted.
        const moved = checked.reason === 'position_gap' && checked.at > checked.after && page.some((r) => r.key === checked.after + 1);
        if (moved) return found({ chain, at: checked.at, problem: 'inserted or reordered', detail: `${label[chain]} ${checked.at} comes before ${label[chain]} ${checked.after + 1}: records were moved` });
        return found(describe(chain, checked));
      }
      // The anchor's record must still be there, unchanged.
      const anchored = anchor && page.find((r) => r.key === anchor.at);
      if (anchor && anchored && anchored.hash !== anchor.hash) {
        return found({ chain, at: anchor.at, problem: 'edited', detail: `${label[chain]} ${anchor.at} differs from the anchor: the chain was rewritten up to there` });
      }
      records += page.length;
      head = { at: checked.at, hash: checked.hash };
      options.progress?.(chain, head.at, Math.max(total, head.at));
    }
  } catch (err) {
    if (!(err instanceof MalformedLine)) throw err;
    return { head, records, finding: { chain, at: head.at + 1, problem: 'edited', detail: `${err.message}: the record after ${label[chain]} ${head.at} was edited (in ${err.file})` } };
  }
  if (anchor && head.at < anchor.at) {
    return { head, records, finding: { chain, at: head.at + 1, problem: 'truncated', detail: `the chain ends at ${label[chain]} ${head.at}, but the anchor saw it reach ${anchor.at}: the tail was cut off` } };
  }
  return { head, records, finding: null };
}

/** Where a record lives: the segment file listing it, else the database. */
function locator(segments: Segment[]): (at: number) => string {
  return (at) => {
    const s = segments.find((x) => at >= x.first && at <= x.last);
    return s ? `in ${s.file}` : 'in the database';
  };
}

/** Each segment as the manifest lists it: chained onto the one before, ending where it says, the file unchanged. */
async function checkListing(dir: string, chain: ChainName, segments: Segment[]): Promise<Finding | null> {
  let prev: ChainHead = { at: 0, hash: GENESIS_HASH };
  for (const s of segments) {
    if (s.first !== prev.at + 1 || s.prevHash !== prev.hash) {
      return { chain, at: s.first, problem: 'inserted or reordered', detail: `the manifest lists ${s.file} as starting at ${s.first} from a hash the segment before does not end with` };
    }
    const digest = createHash('sha256').update(readFileSync(join(dir, s.file))).digest('hex');
    if (digest !== s.sha256) return { chain, at: s.first, problem: 'edited', detail: `${s.file} is not the file the archiver wrote (its sha-256 differs from the manifest)` };
    prev = { at: s.last, hash: s.lastHash };
  }
  return null;
}

/**
 * Every record in both chains, checked from the first: with an archive directory, its
 * segments first, then what Postgres holds after them; without one, Postgres from where its
 * archived ranges end (events are never removed, so they are walked whole either way).
 */
export async function verifyAudit(db: Kysely<Database> | null, options: VerifyOptions = {}): Promise<VerifyResult> {
  const pageSize = options.pageSize ?? 10_000;
  const manifest = options.archive ? existingManifest(options.archive) : null;
  const results = {} as Record<ChainName, Walked>;
  const findings: Finding[] = [];
  for (const chain of ['events', 'decisions'] as const) {
    const segments = manifest ? segmentsOf(manifest, chain) : [];
    const archived = segments.at(-1);
    const where = locator(segments);
    const total = Math.max(db ? await maxOf(db, chain) : 0, archived?.last ?? 0);
    let walked: Walked;
    if (chain === 'events' && db) {
      // The copy in the archive and the log in Postgres are both walked; they must agree.
      walked = await walk(chain, dbPages(db, chain, 0, pageSize), { at: 0, hash: GENESIS_HASH }, total, options, () => 'in the database');
      if (archived && !walked.finding) {
        const copy = await walk(chain, archivePages(options.archive!, segments), { at: 0, hash: GENESIS_HASH }, total, { ...options, anchor: null }, where);
        const dbAt = (await readEvents(db, archived.last - 1, 1))[0];
        if (copy.finding) findings.push(copy.finding);
        else if (copy.head.at !== archived.last || dbAt?.hash !== copy.head.hash) {
          findings.push({ chain, at: Math.min(copy.head.at, archived.last), problem: copy.head.at < archived.last ? 'truncated' : 'edited', detail: `the archived events end at position ${copy.head.at} (listed: ${archived.last}) with a hash the database does not have there` });
        }
      }
    } else {
      const start: ChainHead = db && !archived ? await archivedHead(db, chain) : { at: 0, hash: GENESIS_HASH };
      const parts = [...(archived ? [() => archivePages(options.archive!, segments)] : []), ...(db ? [() => dbPages(db, chain, archived?.last ?? start.at, pageSize)] : [])];
      walked = await walk(chain, concat(...parts), start, total, options, where);
      if (!walked.finding && archived && walked.head.at < archived.last) {
        walked.finding = { chain, at: walked.head.at + 1, problem: 'truncated', detail: `in ${archived.file}: the chain ends at ${label[chain]} ${walked.head.at}, but the manifest lists records up to ${archived.last}: the tail was cut off` };
      }
      if (!walked.finding && db && archived) {
        // Postgres' own record of what was archived must not reach past the archive given.
        const dbArchived = await archivedHead(db, chain);
        if (dbArchived.at > archived.last) {
          walked.finding = { chain, at: archived.last + 1, problem: 'deleted', detail: `the database records ${label[chain]}s up to ${dbArchived.at} as archived, but this archive ends at ${archived.last}: segments are missing` };
        }
      }
    }
    if (walked.finding) findings.push(walked.finding);
    if (manifest && !walked.finding) {
      const listing = await checkListing(options.archive!, chain, segments);
      if (listing) findings.push(listing);
    }
    results[chain] = walked;
  }

  // Decisions name the log position they were made at: the event log must reach it.
  if (db && !results.events.finding) {
    const beyond = await db.selectFrom('decisions').select(['seq', 'log_position']).where('log_position', '>', String(results.events.head.at)).orderBy('seq').limit(1).executeTakeFirst();
    if (beyond) {
      findings.unshift({
        chain: 'events', at: results.events.head.at + 1, problem: 'truncated',
        detail: `decision ${beyond.seq} was made at log position ${beyond.log_position}, but the event log ends at ${results.events.head.at}: its tail was cut off`,
      });
    }
  }
  return {
    ok: findings.length === 0,
    heads: { events: results.events.head, decisions: results.decisions.head },
    records: { events: results.events.records, decisions: results.decisions.records },
    findings,
  };
}
