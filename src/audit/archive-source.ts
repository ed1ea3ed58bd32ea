import type { StoredEvent } from '../store/event-store.ts';
import TinyQueue from 'tinyqueue';
import { archivedNodes, existingManifest, readSegment, segmentsOf, toDecision, toEvent, type ArchivedLine, type ChainName, type Manifest, type Segment } from './archive.ts';
import type { StoredDecision } from './decision-log.ts';
import type { AuditSource } from './source.ts';

// An archive directory read as an audit source (replay, trace): alone, or before what Postgres
// still holds. Each decision chain's segments are in the log's order already; the shared
// chain's and every node's are merged by the log's sequence number, and so are Postgres' rows.

/** The log's number of an archived line (a node chain's line carries it beside its number in the chain). */
const seqOf = (l: ArchivedLine) => l.seq ?? l.key;

async function* pagesOf<T>(dir: string, segments: Segment[], after: number, convert: (l: ArchivedLine) => T, pageSize = 5_000): AsyncIterable<T[]> {
  let page: T[] = [];
  for (const s of segments) {
    // A node chain's segments are read line by line: the manifest's lastSeq is not hashed.
    if (s.node === undefined && s.last <= after) continue;
    for await (const lines of readSegment(dir, s)) {
      for (const l of lines) {
        if (!l) throw new Error(`a line of ${s.file} is not a record as the archiver writes it: run leash audit verify --archive`);
        if (seqOf(l) <= after) continue;
        page.push(convert(l));
      }
      if (page.length >= pageSize) {
        yield page;
        page = [];
      }
    }
  }
  if (page.length > 0) yield page;
}

/** A stream of decisions in the log's order, opened only when the merge reaches `from`, a bound below its first record's number. */
export interface MergeSource {
  from: number;
  open: () => AsyncIterable<StoredDecision[]>;
}

interface Cursor {
  /** Unopened: the source's `from`; opened: the number of its next record. */
  key: number;
  source: MergeSource;
  it: AsyncIterator<StoredDecision[]> | null;
  page: StoredDecision[];
  i: number;
}

/** The cursor's next record in hand (a new page read when the last is used up); false once it has none. */
async function filled(c: Cursor): Promise<boolean> {
  while (c.i >= c.page.length) {
    const next = await c.it!.next();
    if (next.done) return false;
    [c.page, c.i] = [next.value, 0];
  }
  return true;
}

/**
 * Streams of decisions, each in the log's order, as one stream in that order. A source is
 * opened only once every record before its `from` has gone out, so an archive of many chains
 * (a node id per process by default: one per restart) holds open only the segments whose
 * ranges overlap, and picking the next record costs a heap step, not a look at every chain.
 * `from` and the segment addresses it comes from are not hashed: a record that would come out
 * of the log's order stops the stream instead.
 */
export async function* mergedBySeq(sources: MergeSource[], pageSize = 5_000): AsyncIterable<StoredDecision[]> {
  // On a tie an unopened source goes first: its bound is at most its first record's number.
  const queue = new TinyQueue<Cursor>(sources.map((source) => ({ key: source.from, source, it: null, page: [], i: 0 })), (a, b) => a.key - b.key || (a.it ? 1 : 0) - (b.it ? 1 : 0));
  const disordered = (seq: number, after: number) => new Error(`the archive's records are not in the log's order (${seq} after ${after}); run leash audit verify --archive`);
  let out: StoredDecision[] = [];
  let last = 0;
  for (let c = queue.pop(); c; c = queue.pop()) {
    if (c.it === null) {
      c.it = c.source.open()[Symbol.asyncIterator]();
      if (!(await filled(c))) continue;
      if (c.page[c.i]!.seq < c.source.from) throw disordered(c.page[c.i]!.seq, c.source.from);
      c.key = c.page[c.i]!.seq;
      queue.push(c);
      continue;
    }
    // This source's records go out as long as they come before every other source's next.
    for (;;) {
      const d = c.page[c.i++]!;
      if (d.seq <= last) throw disordered(d.seq, last);
      last = d.seq;
      out.push(d);
      if (out.length >= pageSize) {
        yield out;
        out = [];
      }
      if (!(await filled(c))) break;
      c.key = c.page[c.i]!.seq;
      const other = queue.peek();
      if (other && other.key <= c.key) {
        queue.push(c);
        break;
      }
    }
  }
  if (out.length > 0) yield out;
}

async function* filtered(pages: AsyncIterable<StoredDecision[]>, keep: (d: StoredDecision) => boolean): AsyncIterable<StoredDecision[]> {
  for await (const page of pages) {
    const kept = page.filter(keep);
    if (kept.length > 0) yield kept;
  }
}

/** The records in an archive directory, alone (`--archive-only`) or before what Postgres holds after them. */
export class ArchiveSource implements AuditSource {
  readonly describe: string;
  private readonly manifest: Manifest;

  constructor(
    private readonly dir: string,
    private readonly then: AuditSource | null,
  ) {
    this.manifest = existingManifest(dir);
    this.describe = then ? `${dir} and ${then.describe}` : dir;
  }

  /** Where a chain's archive ends: its number in the chain (for a decision chain, the shared one without `node`). */
  private lastOf(chain: ChainName, node?: string): number {
    return segmentsOf(this.manifest, chain, node).at(-1)?.last ?? 0;
  }

  private get decisionSegments(): Segment[] {
    return this.manifest.segments.filter((s) => s.chain === 'decisions');
  }

  async *events(after = 0): AsyncIterable<StoredEvent[]> {
    yield* pagesOf(this.dir, segmentsOf(this.manifest, 'events'), after, toEvent);
    if (this.then) yield* this.then.events(Math.max(after, this.lastOf('events')));
  }

  /**
   * Every chain's archived decisions and then Postgres' rows, merged by the log's number. A row
   * Postgres still holds of a range already archived (a run interrupted before it removed
   * them) is read from the archive only.
   */
  decisions(after = 0): AsyncIterable<StoredDecision[]> {
    const chains = [undefined, ...archivedNodes(this.manifest)];
    // Each segment is a source of its own, opened when the merge reaches it.
    const archived = chains.flatMap((node) => segmentsOf(this.manifest, 'decisions', node).map((s, i, all): MergeSource => ({
      from: Math.max(after + 1, node === undefined ? s.first : s.firstSeq ?? (i > 0 ? (all[i - 1]!.lastSeq ?? 0) + 1 : 0)),
      open: () => pagesOf(this.dir, [s], after, toDecision),
    })));
    if (!this.then) return mergedBySeq(archived);
    const ends = new Map(chains.map((node) => [node, this.lastOf('decisions', node)]));
    const hot = filtered(this.then.decisions(after), (d) => (d.chainSeq === undefined ? d.seq > ends.get(undefined)! : d.chainSeq > (ends.get(d.nodeId) ?? 0)));
    return mergedBySeq([...archived, { from: 0, open: () => hot }]);
  }

  async heads(): Promise<{ events: number; decisions: number }> {
    const then = this.then ? await this.then.heads() : { events: 0, decisions: 0 };
    const archived = Math.max(0, ...this.decisionSegments.map((s) => s.lastSeq ?? s.last));
    return { events: Math.max(then.events, this.lastOf('events')), decisions: Math.max(then.decisions, archived) };
  }

  async decision(id: string): Promise<StoredDecision | undefined> {
    const hot = await this.then?.decision(id);
    if (hot) return hot;
    for await (const page of pagesOf(this.dir, this.decisionSegments, 0, (l) => l)) {
      // Cheap test on the raw text first; only a line that mentions the id is parsed.
      for (const line of page) {
        if (!line.body.includes(`"id":"${id}"`)) continue;
        const d = toDecision(line);
        if (d.id === id) return d;
      }
    }
    return undefined;
  }
}
