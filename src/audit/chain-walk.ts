import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { chainHash, checkChain, GENESIS_HASH, type LinkCheck } from '../store/hash-chain.ts';
import { readSegment, type ArchivedLine, type ChainName, type Segment } from './archive.ts';
import { paged } from './source.ts';

// Walking one hash chain, a page of records at a time, from Postgres or archive segments or
// both, and naming the first record that breaks it: what verify does for every chain.

export interface ChainHead {
  at: number;
  hash: string;
}

export interface Finding {
  chain: ChainName | 'anchors';
  /** The node whose decision chain it is; absent for the events, the shared chain and the anchors. */
  node?: string;
  /** Position (events), sequence number (the shared chain, the anchors) or number in the node's chain of the first record that fails. */
  at: number;
  problem: 'edited' | 'deleted' | 'inserted or reordered' | 'truncated';
  detail: string;
}

/** One chain, as findings name it and its records. */
export interface Named {
  chain: ChainName | 'anchors';
  node?: string;
  /** A record of it ("decision 5", "record 5 of node "a"'s chain"), and a range of them. */
  one: (at: number) => string;
  range: (first: number, last: number) => string;
}

export const named = (chain: ChainName | 'anchors', node?: string): Named => {
  if (node !== undefined) {
    const of = `of node ${JSON.stringify(node)}'s decision chain`;
    return { chain, node, one: (at) => `record ${at} ${of}`, range: (a, b) => `records ${a}–${b} ${of} are` };
  }
  const noun = { events: 'position', decisions: 'decision', anchors: 'anchor' }[chain];
  return { chain, one: (at) => `${noun} ${at}`, range: (a, b) => `${noun}s ${a}–${b} are` };
};

export const finding = (n: Named, f: Omit<Finding, 'chain' | 'node'>): Finding => ({ chain: n.chain, ...(n.node === undefined ? {} : { node: n.node }), ...f });

function describe(n: Named, failed: Extract<LinkCheck, { ok: false }>): Finding {
  switch (failed.reason) {
    case 'position_gap': {
      const first = failed.after + 1;
      const range = failed.at - 1 > first ? n.range(first, failed.at - 1) : `${n.one(first)} is`;
      return finding(n, { at: first, problem: 'deleted', detail: `${range} missing (deleted)` });
    }
    case 'broken_link':
      return finding(n, { at: failed.at, problem: 'inserted or reordered', detail: `${n.one(failed.at)} does not follow the record before it: inserted or moved here, or the one before was rewritten` });
    case 'hash_mismatch':
      return finding(n, { at: failed.at, problem: 'edited', detail: `${n.one(failed.at)} no longer matches its hash: its content (or its place) was edited` });
  }
}

/** A chain's records as pages; a record is its number, its link, its hash and its hashed body. */
export type Pages = AsyncIterable<ArchivedLine[]>;

/** A line of an archive file that the archiver would not have written. */
class MalformedLine extends Error {
  constructor(readonly file: string) {
    super(`a line of ${file} is not a record as the archiver writes it`);
  }
}

/** Every record of the listed segments, in order, as pages. */
export async function* archivePages(dir: string, segments: Segment[]): Pages {
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

export async function* concat(...parts: (() => Pages)[]): Pages {
  for (const part of parts) yield* part();
}

/** A chain's records in Postgres after `after`, as pages of lines. */
export function dbPages(read: (after: number, limit: number) => Promise<ArchivedLine[]>, after: number, pageSize: number): Pages {
  return paged(read, (l) => l.key, after, pageSize);
}

export interface Walked {
  head: ChainHead;
  records: number;
  finding: Finding | null;
}

export interface WalkOptions {
  /** Where an anchor file saw this chain's head. */
  external: ChainHead | undefined;
  /** A check of each page once it links (a node chain's anchors and log numbers). */
  check?: (page: ArchivedLine[], head: ChainHead) => Promise<Finding | null>;
  progress: (records: number, at: number) => void;
  where: (at: number) => string;
}

export async function walk(n: Named, pages: Pages, start: ChainHead, o: WalkOptions): Promise<Walked> {
  const anchor = o.external;
  let head = start;
  let records = 0;
  const found = (f: Finding): Walked => ({ head, records, finding: { ...f, detail: `${o.where(f.at)}: ${f.detail}` } });
  try {
    for await (const page of pages) {
      const checked = checkChain(page, (r) => r.key, (r) => chainHash(r.prevHash, r.body), head);
      if (!checked.ok) {
        // A record ahead of its turn while the one due comes later in the page: moved, not deleted.
        const moved = checked.reason === 'position_gap' && checked.at > checked.after && page.some((r) => r.key === checked.after + 1);
        if (moved) return found(finding(n, { at: checked.at, problem: 'inserted or reordered', detail: `${n.one(checked.at)} comes before ${n.one(checked.after + 1)}: records were moved` }));
        return found(describe(n, checked));
      }
      // The anchor's record must still be there, unchanged.
      const anchored = anchor && page.find((r) => r.key === anchor.at);
      if (anchor && anchored && anchored.hash !== anchor.hash) {
        return found(finding(n, { at: anchor.at, problem: 'edited', detail: `${n.one(anchor.at)} differs from the anchor: the chain was rewritten up to there` }));
      }
      const problem = await o.check?.(page, head);
      if (problem) return found(problem);
      records += page.length;
      head = { at: checked.at, hash: checked.hash };
      o.progress(page.length, head.at);
    }
  } catch (err) {
    if (!(err instanceof MalformedLine)) throw err;
    return { head, records, finding: finding(n, { at: head.at + 1, problem: 'edited', detail: `${err.message}: the record after ${n.one(head.at)} was edited (in ${err.file})` }) };
  }
  if (anchor && head.at < anchor.at) {
    return { head, records, finding: finding(n, { at: head.at + 1, problem: 'truncated', detail: `the chain ends at ${n.one(head.at)}, but the anchor saw it reach ${anchor.at}: the tail was cut off` }) };
  }
  return { head, records, finding: null };
}

/** Where a record lives: the segment file listing it, else the database. */
export function locator(segments: Segment[]): (at: number) => string {
  return (at) => {
    const s = segments.find((x) => at >= x.first && at <= x.last);
    return s ? `in ${s.file}` : 'in the database';
  };
}

/** Each segment as the manifest lists it: chained onto the one before, ending where it says, the file unchanged. */
export function checkListing(dir: string, n: Named, segments: Segment[]): Finding | null {
  let prev: ChainHead = { at: 0, hash: GENESIS_HASH };
  for (const s of segments) {
    if (s.first !== prev.at + 1 || s.prevHash !== prev.hash) {
      return finding(n, { at: s.first, problem: 'inserted or reordered', detail: `the manifest lists ${s.file} as starting at ${s.first} from a hash the segment before does not end with` });
    }
    const digest = createHash('sha256').update(readFileSync(join(dir, s.file))).digest('hex');
    if (digest !== s.sha256) return finding(n, { at: s.first, problem: 'edited', detail: `${s.file} is not the file the archiver wrote (its sha-256 differs from the manifest)` });
    prev = { at: s.last, hash: s.lastHash };
  }
  return null;
}
