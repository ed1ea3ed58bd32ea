import type { Kysely } from 'kysely';
import type { StoredEvent } from '../store/event-store.ts';
import type { Database } from '../store/events.table.ts';
import { eventBody, GENESIS_HASH } from '../store/hash-chain.ts';
import { archivedHead, archivedNodes, existingManifest, lineOfDecision, segmentsOf, type ArchivedLine, type ChainName, type Manifest, type Segment } from './archive.ts';
import { archivePages, checkListing, concat, dbPages, finding, locator, named, walk, type ChainHead, type Finding, type Named, type Walked, type WalkOptions } from './chain-walk.ts';
import { anchorBody, type StoredAnchor } from './decision-log.ts';
import { chainNodes, readAnchors, readChain, readNodeAnchors, readSharedChain } from './decision-reads.ts';
import { maxOf, readEvents } from './source.ts';

// `leash audit verify`: walk every hash chain in Postgres (the events; the decisions' shared
// chain from before per-node chains, then each node's chain; the anchor chain) and name the
// first record that was edited, deleted, inserted or reordered. A chain alone cannot show that
// its tail was cut off. Two things can: the anchor chain, into which every node writes its
// chain's head at a fixed interval (a node's chain must still reach every head it anchored,
// with the same hashes), and an anchor file (the heads a previous verify saw, kept where the
// database's admins cannot write).

export type { ChainHead, ChainName, Finding };


/** The heads a verify saw, as `--anchor` keeps them. */
export interface Anchor {
  events: ChainHead;
  /** The decisions' shared chain from before per-node chains. */
  decisions: ChainHead;
  /** Each node's decision chain (absent in a file written before per-node chains). */
  chains?: Record<string, ChainHead>;
  /** The anchor chain (likewise). */
  anchors?: ChainHead;
}


export interface VerifyResult {
  ok: boolean;
  heads: Required<Anchor>;
  records: { events: number; decisions: number; anchors: number };
  /** Whether the anchor chain was walked: it is kept in the database, so not offline. */
  anchorsChecked: boolean;
  /** The first problem in each chain, if any. */
  findings: Finding[];
}

export interface VerifyOptions {
  anchor?: Anchor | null;
  pageSize?: number;
  /** Called as records are checked: how many so far, out of about how many. */
  progress?: (chain: ChainName | 'anchors', done: number, total: number) => void;
  /** An archive directory (`leash audit archive --dir`): its segments are walked before Postgres. */
  archive?: string;
}

const eventLine = (e: StoredEvent): ArchivedLine => ({ key: e.position, prevHash: e.prevHash, hash: e.hash, body: eventBody(e) });
const anchorLine = (a: StoredAnchor): ArchivedLine => ({ key: a.seq, prevHash: a.prevHash, hash: a.hash, body: anchorBody(a) });

/**
 * The anchor chain's entries for one node's chain, read in that chain's order as the walk of
 * it goes: each must name a record the walk finds there, with its hash.
 */
class NodeAnchors {
  private page: StoredAnchor[] = [];
  private i = 0;
  private done = false;
  private after: { chainSeq: number; seq: number };

  constructor(
    private readonly db: Kysely<Database>,
    private readonly node: string,
    after: number,
    /** The anchor chain's last entry when verify began: a node still running anchors more meanwhile. */
    private readonly upTo: number,
    private readonly pageSize: number,
  ) {
    this.after = { chainSeq: after, seq: 0 };
  }

  /** The next anchor, without taking it. */
  async peek(): Promise<StoredAnchor | undefined> {
    if (this.i >= this.page.length && !this.done) {
      this.page = await readNodeAnchors(this.db, this.node, this.after, this.upTo, this.pageSize);
      this.i = 0;
      this.done = this.page.length < this.pageSize;
      const last = this.page[this.page.length - 1];
      if (last) this.after = { chainSeq: last.chainSeq, seq: last.seq };
    }
    return this.page[this.i];
  }

  /** The last anchor taken. */
  taken: StoredAnchor | undefined;

  take(): void {
    this.taken = this.page[this.i++];
  }
}

/**
 * A decision chain's checks on each page: every anchor of it names a record found with its
 * hash, and on a node's chain its log numbers rise along it (they are not hashed there, so
 * renumbering shows only here).
 */
function decisionChecks(n: Named, anchors: NodeAnchors | null): WalkOptions['check'] {
  let lastSeq = 0;
  return async (page, head) => {
    for (const r of n.node === undefined ? [] : page) {
      if (r.seq === undefined || r.seq <= lastSeq) {
        return finding(n, { at: r.key, problem: 'inserted or reordered', detail: `${n.one(r.key)} has the log's number ${r.seq ?? 'none'}, not after the record before it (${lastSeq}): records were renumbered` });
      }
      lastSeq = r.seq;
    }
    const last = page[page.length - 1]!.key;
    for (let a = await anchors?.peek(); anchors && a && a.chainSeq <= last; anchors.take(), a = await anchors.peek()) {
      const hash = a.chainSeq === head.at ? head.hash : page.find((r) => r.key === a!.chainSeq)?.hash;
      if (hash !== undefined && hash !== a.chainHash) {
        return finding(n, { at: a.chainSeq, problem: 'edited', detail: `${n.one(a.chainSeq)} is not the record anchor ${a.seq} saw there (${a.at.toISOString()}): the chain was rewritten up to there` });
      }
    }
    return null;
  };
}

/**
 * Findings about a chain's tail against the anchor chain: it must reach the last head anchored;
 * the shared chain from before per-node chains, closed when they came, must end there.
 */
async function anchoredBeyond(n: Named, anchors: NodeAnchors | null, head: ChainHead): Promise<Finding | null> {
  for (let a = await anchors?.peek(); anchors && a; anchors.take(), a = await anchors.peek()) {
    if (a.chainSeq > head.at) {
      return finding(n, { at: head.at + 1, problem: 'truncated', detail: `the chain ends at ${n.one(head.at)}, but anchor ${a.seq} saw it reach ${a.chainSeq} at ${a.at.toISOString()}: the tail was cut off` });
    }
    // An anchor of the head itself (the walk found no record after it).
    if (a.chainSeq === head.at && a.chainHash !== head.hash) {
      return finding(n, { at: a.chainSeq, problem: 'edited', detail: `${n.one(a.chainSeq)} is not the record anchor ${a.seq} saw there: the chain was rewritten up to there` });
    }
  }
  const last = anchors?.taken;
  if (n.node === undefined && last && head.at > last.chainSeq) {
    return finding(n, { at: last.chainSeq + 1, problem: 'inserted or reordered', detail: `the shared chain was closed at ${n.one(last.chainSeq)} when per-node chains came (anchor ${last.seq}), but goes on to ${head.at}: records were added after it` });
  }
  return null;
}

/**
 * What Postgres records as archived of a chain, against the archive given (every range listed
 * there, with the hash it ends at) or, without one, against itself: ranges one after another
 * from the first record, and the chain's newest record left in the database (the archiver
 * always keeps it). A range recorded by hand would let its records be deleted unseen.
 */
async function checkArchivedRanges(db: Kysely<Database>, n: Named, segments: Segment[] | null, head: ChainHead): Promise<Finding | null> {
  const ranges = await db.selectFrom('audit_archive').select(['first', 'last', 'last_hash']).where('chain', '=', 'decisions').where('node_id', '=', n.node ?? '').orderBy('first').execute();
  let at = 0;
  for (const r of ranges.map((x) => ({ first: Number(x.first), last: Number(x.last), lastHash: x.last_hash }))) {
    if (segments && !segments.some((s) => s.first === r.first && s.last === r.last && s.lastHash === r.lastHash)) {
      return finding(n, { at: r.first, problem: 'deleted', detail: `the database records ${n.range(r.first, r.last).replace(/ are$/, '')} as archived, but this archive has no such segment: segments are missing, or the range was recorded by hand` });
    }
    if (r.first !== at + 1) {
      return finding(n, { at: at + 1, problem: 'deleted', detail: `the database records ${n.range(r.first, r.last).replace(/ are$/, '')} as archived, but no archived range ends at ${r.first - 1}: the record of what was archived was written by hand` });
    }
    at = r.last;
  }
  if (at > 0 && head.at <= at) {
    return finding(n, { at, problem: 'deleted', detail: `the database holds none of the chain after its archived range (up to ${at}), but the archiver always keeps a chain's newest record: the range was recorded by hand, or the records after it deleted` });
  }
  return null;
}

interface Walker {
  db: Kysely<Database> | null;
  options: VerifyOptions;
  pageSize: number;
  manifest: Manifest | null;
  done: (chain: ChainName | 'anchors', records: number) => void;
  total: Record<ChainName | 'anchors', number>;
}

/**
 * A decision chain (the shared one, `node` absent, or a node's), whose archived records are
 * moved out of Postgres: its segments first, then Postgres after them; without an archive,
 * Postgres from where its archived ranges end.
 */
async function walkDecisionChain(w: Walker, node: string | undefined, external: ChainHead | undefined): Promise<Walked> {
  const { db, options, manifest } = w;
  const n = named('decisions', node);
  const segments = manifest ? segmentsOf(manifest, 'decisions', node) : [];
  const archived = segments.at(-1);
  const start: ChainHead = db && !archived ? await archivedHead(db, 'decisions', node) : { at: 0, hash: GENESIS_HASH };
  const read = (after: number, limit: number) => (node === undefined ? readSharedChain(db!, after, limit) : readChain(db!, node, after, limit)).then((ds) => ds.map(lineOfDecision));
  const parts = [...(archived ? [() => archivePages(options.archive!, segments)] : []), ...(db ? [() => dbPages(read, archived?.last ?? start.at, w.pageSize)] : [])];
  // The anchors are in Postgres (never archived): offline, a chain is walked without them.
  const anchors = db ? new NodeAnchors(db, node ?? '', start.at - 1, w.total.anchors, w.pageSize) : null;
  const walked = await walk(n, concat(...parts), start, {
    external, where: locator(segments), progress: (records) => w.done('decisions', records), check: decisionChecks(n, anchors),
  });
  walked.finding ??= await anchoredBeyond(n, anchors, walked.head);
  if (db) walked.finding ??= await checkArchivedRanges(db, n, manifest ? segments : null, walked.head);
  if (!walked.finding && archived && walked.head.at < archived.last) {
    walked.finding = finding(n, { at: walked.head.at + 1, problem: 'truncated', detail: `in ${archived.file}: the chain ends at ${n.one(walked.head.at)}, but the manifest lists records up to ${archived.last}: the tail was cut off` });
  }
  if (manifest && !walked.finding) walked.finding = checkListing(options.archive!, n, segments);
  return walked;
}

/** The events: never removed, so Postgres is walked whole; an archive's copy must agree with it. */
async function walkEvents(w: Walker): Promise<Walked> {
  const { db, options, manifest } = w;
  const n = named('events');
  const segments = manifest ? segmentsOf(manifest, 'events') : [];
  const archived = segments.at(-1);
  const progress = (records: number) => w.done('events', records);
  const genesis = { at: 0, hash: GENESIS_HASH };
  if (!db) {
    const walked = await walk(n, archivePages(options.archive!, segments), genesis, { external: options.anchor?.events, where: locator(segments), progress });
    if (!walked.finding && archived && walked.head.at < archived.last) {
      walked.finding = finding(n, { at: walked.head.at + 1, problem: 'truncated', detail: `in ${archived.file}: the chain ends at ${n.one(walked.head.at)}, but the manifest lists records up to ${archived.last}: the tail was cut off` });
    }
    walked.finding ??= manifest ? checkListing(options.archive!, n, segments) : null;
    return walked;
  }
  const walked = await walk(n, dbPages(async (a, k) => (await readEvents(db, a, k)).map(eventLine), 0, w.pageSize), genesis, { external: options.anchor?.events, where: () => 'in the database', progress });
  if (archived && !walked.finding) {
    const copy = await walk(n, archivePages(options.archive!, segments), genesis, { external: undefined, where: locator(segments), progress: () => {} });
    const dbAt = (await readEvents(db, archived.last - 1, 1))[0];
    if (copy.finding) walked.finding = copy.finding;
    else if (copy.head.at !== archived.last || dbAt?.hash !== copy.head.hash) {
      walked.finding = finding(n, { at: Math.min(copy.head.at, archived.last), problem: copy.head.at < archived.last ? 'truncated' : 'edited', detail: `the archived events end at position ${copy.head.at} (listed: ${archived.last}) with a hash the database does not have there` });
    }
  }
  walked.finding ??= manifest ? checkListing(options.archive!, n, segments) : null;
  return walked;
}

/**
 * Every record of every chain, checked from the first: the events, the decisions' shared
 * chain and each node's chain (with an archive directory, its segments first, then what
 * Postgres holds after them), and the anchor chain, which every node's chain must reach.
 */
export async function verifyAudit(db: Kysely<Database> | null, options: VerifyOptions = {}): Promise<VerifyResult> {
  const pageSize = options.pageSize ?? 10_000;
  const manifest = options.archive ? existingManifest(options.archive) : null;
  const archivedLast = (chain: ChainName) => Math.max(0, ...(manifest?.segments.filter((s) => s.chain === chain).map((s) => s.lastSeq ?? s.last) ?? []));
  const total = {
    events: Math.max(db ? await maxOf(db, 'events') : 0, archivedLast('events')),
    decisions: Math.max(db ? await maxOf(db, 'decisions') : 0, archivedLast('decisions')),
    anchors: db ? await maxOf(db, 'decision_anchors') : 0,
  };
  const counted = { events: 0, decisions: 0, anchors: 0 };
  const w: Walker = {
    db, options, pageSize, manifest, total,
    done: (chain, records) => options.progress?.(chain, (counted[chain] += records), Math.max(total[chain], counted[chain])),
  };
  const findings: Finding[] = [];
  const note = (walked: Walked) => walked.finding && findings.push(walked.finding);

  const events = await walkEvents(w);
  note(events);
  const shared = await walkDecisionChain(w, undefined, options.anchor?.decisions);
  note(shared);
  const nodes = [...new Set([...(db ? await chainNodes(db) : []), ...(manifest ? archivedNodes(manifest) : []), ...Object.keys(options.anchor?.chains ?? {})])].sort();
  const chains = new Map<string, ChainHead>();
  let decisions = shared.records;
  for (const node of nodes) {
    const chainsSeen = options.anchor?.chains;
    const walked = await walkDecisionChain(w, node, chainsSeen && Object.hasOwn(chainsSeen, node) ? chainsSeen[node] : undefined);
    note(walked);
    chains.set(node, walked.head);
    decisions += walked.records;
  }
  const anchors = db
    ? await walk(named('anchors'), dbPages(async (a, k) => (await readAnchors(db, a, k)).map(anchorLine), 0, pageSize), { at: 0, hash: GENESIS_HASH }, {
      external: options.anchor?.anchors, where: () => 'in the database', progress: (records) => w.done('anchors', records),
    })
    : { head: options.anchor?.anchors ?? { at: 0, hash: GENESIS_HASH }, records: 0, finding: null };
  note(anchors);

  // Decisions name the log position they were made at: the event log must reach it.
  if (db && !events.finding) {
    const beyond = await db.selectFrom('decisions').select(['seq', 'log_position']).where('log_position', '>', String(events.head.at)).orderBy('seq').limit(1).executeTakeFirst();
    if (beyond) {
      findings.unshift({
        chain: 'events', at: events.head.at + 1, problem: 'truncated',
        detail: `decision ${beyond.seq} was made at log position ${beyond.log_position}, but the event log ends at ${events.head.at}: its tail was cut off`,
      });
    }
  }
  return {
    ok: findings.length === 0,
    // Own properties whatever a node's id is (`__proto__` included).
    heads: { events: events.head, decisions: shared.head, chains: Object.fromEntries(chains), anchors: anchors.head },
    records: { events: events.records, decisions, anchors: anchors.records },
    anchorsChecked: db !== null,
    findings,
  };
}
