import { createHash } from 'node:crypto';
import { closeSync, createReadStream, createWriteStream, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { createGunzip, createGzip } from 'node:zlib';
import { sql, type Kysely } from 'kysely';
import type { StoredEvent } from '../store/event-store.ts';
import type { Database } from '../store/events.table.ts';
import { chainHash, eventBody, GENESIS_HASH } from '../store/hash-chain.ts';
import { decisionBody, readDecisions, type StoredDecision } from './decision-log.ts';
import { readEvents, type AuditSource } from './source.ts';

// SPEC §8 archive. Closed ranges of the logs go to compressed NDJSON segments, one record per
// line with its chain link and the exact canonical body its hash covers, so a segment verifies
// offline (sha-256 per line, no JSON re-serialising) and chains onto what stays in Postgres.
// A manifest lists every segment with its first/last record and the hashes it starts from and
// ends at. Decisions are moved (deleted from Postgres once the file is written, synced, read
// back and listed); events are copied, since every node folds the registry from them.
//
// Crash safety: a segment is written to a temporary name, synced and renamed; the manifest is
// rewritten the same way; only then does one transaction record the range in `audit_archive`
// and delete its rows (the table's trigger allows deleting recorded ranges only). A crash
// before the rename leaves a stray temporary file, overwritten next time; after the manifest
// but before the transaction, the next run finds the listed segment, checks it against the
// rows still in Postgres, and finishes the transaction. Nothing is lost or doubled.

export type ChainName = 'events' | 'decisions';
export const ARCHIVE_FORMAT = 'leash-audit-archive/1';

export interface Segment {
  chain: ChainName;
  file: string;
  first: number;
  last: number;
  records: number;
  /** The hash the segment's first record links to, and its last record's hash. */
  prevHash: string;
  lastHash: string;
  /** sha-256 of the compressed file. */
  sha256: string;
}

export interface Manifest {
  format: typeof ARCHIVE_FORMAT;
  segments: Segment[];
}

/** One archived line: its number in the chain, its link, its hash and its hashed body (raw text). */
export interface ArchivedLine {
  key: number;
  prevHash: string;
  hash: string;
  body: string;
}

const keyName: Record<ChainName, string> = { events: 'position', decisions: 'seq' };
const HASH = 64;

export function encodeLine(chain: ChainName, r: ArchivedLine): string {
  return `{"${keyName[chain]}":${r.key},"prevHash":"${r.prevHash}","hash":"${r.hash}","body":${r.body}}\n`;
}

/**
 * A line as the archiver writes it, or null for anything else. Read by position, not by a
 * regular expression (verify reads millions): a hash field that is not hex never matches the
 * hash it is compared with, so it needs no check of its own here.
 */
export function decodeLine(chain: ChainName, line: string): ArchivedLine | null {
  const open = `{"${keyName[chain]}":`;
  if (!line.startsWith(open) || line.charCodeAt(line.length - 1) !== 125 /* } */) return null;
  const comma = line.indexOf(',', open.length);
  const digits = line.slice(open.length, comma);
  if (comma < 0 || digits.length === 0 || digits.length > 16 || !/^\d+$/.test(digits)) return null;
  const prevAt = comma + ',"prevHash":"'.length;
  const hashAt = prevAt + HASH + '","hash":"'.length;
  const bodyAt = hashAt + HASH + '","body":'.length;
  if (!line.startsWith(',"prevHash":"', comma) || !line.startsWith('","hash":"', prevAt + HASH) || !line.startsWith('","body":', hashAt + HASH)) return null;
  return { key: Number(digits), prevHash: line.slice(prevAt, prevAt + HASH), hash: line.slice(hashAt, hashAt + HASH), body: line.slice(bodyAt, -1) };
}

export function toEvent(l: ArchivedLine): StoredEvent {
  const b = JSON.parse(l.body) as Omit<StoredEvent, 'at' | 'prevHash' | 'hash'> & { at: string };
  return { ...b, at: new Date(b.at), prevHash: l.prevHash, hash: l.hash };
}

export function toDecision(l: ArchivedLine): StoredDecision {
  const b = JSON.parse(l.body) as Omit<StoredDecision, 'at' | 'prevHash' | 'hash'> & { at: string };
  return { ...b, at: new Date(b.at), prevHash: l.prevHash, hash: l.hash };
}

// ---- manifest ---------------------------------------------------------------------------

export function readManifest(dir: string): Manifest {
  const file = join(dir, 'manifest.json');
  if (!existsSync(file)) return { format: ARCHIVE_FORMAT, segments: [] };
  let parsed: Manifest | undefined;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8')) as Manifest;
  } catch {
    // reported below
  }
  if (parsed?.format !== ARCHIVE_FORMAT || !Array.isArray(parsed.segments)) throw new Error(`${file} is not a Leash audit archive manifest (${ARCHIVE_FORMAT})`);
  return parsed;
}

/** The manifest of an archive that must be there: what verify, replay and trace read from. */
export function existingManifest(dir: string): Manifest {
  if (!existsSync(join(dir, 'manifest.json'))) throw new Error(`${dir} holds no Leash audit archive (no manifest.json there)`);
  return readManifest(dir);
}

/** Written to a temporary name, synced, renamed over the old one, directory synced. */
function writeDurably(dir: string, name: string, text: string): void {
  const tmp = join(dir, `${name}.tmp`);
  writeFileSync(tmp, text);
  syncFile(tmp);
  renameSync(tmp, join(dir, name));
  syncFile(dir);
}

function syncFile(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

const writeManifest = (dir: string, m: Manifest) => writeDurably(dir, 'manifest.json', `${JSON.stringify(m, null, 2)}\n`);

export const segmentsOf = (m: Manifest, chain: ChainName) => m.segments.filter((s) => s.chain === chain).sort((a, b) => a.first - b.first);

// ---- reading ----------------------------------------------------------------------------

/** The segment's lines, in file order, a decompressed chunk at a time; null for a line the archiver would not have written. */
export async function* readSegment(dir: string, s: Segment): AsyncIterable<(ArchivedLine | null)[]> {
  // Lines split by hand from the decompressed chunks: several times faster than readline.
  const decoder = new StringDecoder('utf8');
  let rest = '';
  for await (const chunk of createReadStream(join(dir, s.file), { highWaterMark: 1 << 20 }).pipe(createGunzip({ chunkSize: 1 << 20 })) as AsyncIterable<Buffer>) {
    const text = rest + decoder.write(chunk);
    const lines: (ArchivedLine | null)[] = [];
    let start = 0;
    for (let end = text.indexOf('\n'); end !== -1; end = text.indexOf('\n', start)) {
      if (end > start) lines.push(decodeLine(s.chain, text.slice(start, end)));
      start = end + 1;
    }
    rest = text.slice(start);
    if (lines.length > 0) yield lines;
  }
  rest += decoder.end();
  if (rest.length > 0) yield [decodeLine(s.chain, rest)];
}

// ---- writing ----------------------------------------------------------------------------

export type ArchiveStep = 'before-write' | 'after-write' | 'before-delete';

export interface ArchiveOptions {
  dir: string;
  before: Date;
  /** Records per segment (default 100,000). */
  segmentSize?: number;
  progress?: (chain: ChainName, done: number, total: number) => void;
  /** Fault injection for crash tests: called at each step. */
  failpoint?: (step: ArchiveStep, chain: ChainName) => void;
}

export interface ArchiveResult {
  written: Segment[];
  /** Segments found listed but not yet recorded in Postgres (a run interrupted), now finished. */
  finished: Segment[];
  records: Record<ChainName, number>;
}

interface ChainSpec {
  chain: ChainName;
  read: (after: number, limit: number) => Promise<{ key: number; prevHash: string; hash: string; body: string }[]>;
  /** Last record of the closed range after `after`: everything recorded before `before`, as a prefix. */
  closedEnd: (after: number) => Promise<number>;
  /** Moved (deleted once archived) or copied. */
  move: boolean;
}

function specs(db: Kysely<Database>, before: Date): ChainSpec[] {
  const firstAtOrAfter = async (table: 'events' | 'decisions', column: 'position' | 'seq', after: number) => {
    const r = await sql<{ k: string | null; max: string | null }>`
      select (select min(${sql.ref(column)}) from ${sql.table(table)} where ${sql.ref(column)} > ${after} and recorded_at >= ${before.toISOString()}) as k,
             (select max(${sql.ref(column)}) from ${sql.table(table)}) as max`.execute(db);
    return { firstOpen: r.rows[0]?.k === null || r.rows[0]?.k === undefined ? null : Number(r.rows[0].k), max: Number(r.rows[0]?.max ?? 0) };
  };
  return [
    {
      chain: 'events', move: false,
      read: async (after, limit) => (await readEvents(db, after, limit)).map((e) => ({ key: e.position, prevHash: e.prevHash, hash: e.hash, body: eventBody(e) })),
      closedEnd: async (after) => {
        const { firstOpen, max } = await firstAtOrAfter('events', 'position', after);
        return firstOpen === null ? max : firstOpen - 1;
      },
    },
    {
      chain: 'decisions', move: true,
      read: async (after, limit) => (await readDecisions(db, after, limit)).map((d) => ({ key: d.seq, prevHash: d.prevHash, hash: d.hash, body: decisionBody(d) })),
      // The newest decision always stays: the next append chains onto it.
      closedEnd: async (after) => {
        const { firstOpen, max } = await firstAtOrAfter('decisions', 'seq', after);
        return Math.min(firstOpen === null ? max : firstOpen - 1, max - 1);
      },
    },
  ];
}

/** Where Postgres says a chain's archive ends: its last recorded range. */
export async function archivedHead(db: Kysely<Database>, chain: ChainName): Promise<{ at: number; hash: string }> {
  // A database not yet migrated to 0004 has archived nothing.
  const table = await sql<{ t: string | null }>`select to_regclass('audit_archive')::text as t`.execute(db);
  if (!table.rows[0]?.t) return { at: 0, hash: GENESIS_HASH };
  const row = await db.selectFrom('audit_archive').select(['last', 'last_hash']).where('chain', '=', chain).orderBy('last', 'desc').limit(1).executeTakeFirst();
  return row ? { at: Number(row.last), hash: row.last_hash } : { at: 0, hash: GENESIS_HASH };
}

const fileName = (chain: ChainName, first: number, last: number) => `${chain}-${String(first).padStart(12, '0')}-${String(last).padStart(12, '0')}.ndjson.gz`;

/** Writes records first..last to a segment, checking the chain as it goes; synced and renamed into place. */
async function writeSegment(dir: string, spec: ChainSpec, start: { at: number; hash: string }, last: number, onRecords: (n: number) => void): Promise<Segment> {
  const file = fileName(spec.chain, start.at + 1, last);
  const tmp = join(dir, `${file}.tmp`);
  let at = start.at;
  let hash = start.hash;
  async function* lines(): AsyncIterable<string> {
    while (at < last) {
      const page = await spec.read(at, Math.min(5_000, last - at));
      if (page.length === 0) throw new Error(`${spec.chain}: record ${at + 1} is missing from the database; run leash audit verify`);
      let text = '';
      for (const r of page) {
        // Only an intact chain is archived: the file must verify on its own later.
        if (r.key !== at + 1 || r.prevHash !== hash || chainHash(r.prevHash, r.body) !== r.hash) {
          throw new Error(`${spec.chain}: the chain breaks at ${r.key} in the database; nothing archived from there (run leash audit verify)`);
        }
        at = r.key;
        hash = r.hash;
        text += encodeLine(spec.chain, r);
      }
      onRecords(page.length);
      yield text;
    }
  }
  const digest = createHash('sha256');
  const out = createWriteStream(tmp);
  await pipeline(Readable.from(lines()), createGzip(), async function* (source) {
    for await (const chunk of source as AsyncIterable<Buffer>) {
      digest.update(chunk);
      yield chunk;
    }
  }, out);
  syncFile(tmp);
  renameSync(tmp, join(dir, file));
  syncFile(dir);
  return { chain: spec.chain, file, first: start.at + 1, last, records: last - start.at, prevHash: start.hash, lastHash: hash, sha256: digest.digest('hex') };
}

/** A listed segment read back: whole, chained from `start`, ending where the listing says. */
async function segmentIntact(dir: string, s: Segment, start: { at: number; hash: string }): Promise<boolean> {
  if (!existsSync(join(dir, s.file)) || s.first !== start.at + 1 || s.prevHash !== start.hash) return false;
  let { at, hash } = start;
  try {
    for await (const lines of readSegment(dir, s)) {
      for (const l of lines) {
        if (!l || l.key !== at + 1 || l.prevHash !== hash || chainHash(l.prevHash, l.body) !== l.hash) return false;
        at = l.key;
        hash = l.hash;
      }
    }
  } catch {
    return false; // not a complete gzip stream
  }
  return at === s.last && hash === s.lastHash;
}

/**
 * One archiver per directory: a lock file holding the owner's pid, created exclusively. A lock
 * left by a process that no longer runs (killed mid-run) is taken over.
 */
function lockDirectory(dir: string): () => void {
  const file = join(dir, 'archive.lock');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(file, `${process.pid}\n`, { flag: 'wx' });
      return () => rmSync(file, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const owner = Number(readFileSync(file, 'utf8').trim());
      if (Number.isInteger(owner) && owner > 0 && isRunning(owner)) {
        throw new Error(`another archive run (pid ${owner}) is working in ${dir}; one at a time`);
      }
      rmSync(file, { force: true });
    }
  }
  throw new Error(`cannot take the lock ${file}`);
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export async function archiveAudit(db: Kysely<Database>, options: ArchiveOptions): Promise<ArchiveResult> {
  mkdirSync(options.dir, { recursive: true });
  const unlock = lockDirectory(options.dir);
  try {
    return await archiveLocked(db, options);
  } finally {
    unlock();
  }
}

async function archiveLocked(db: Kysely<Database>, options: ArchiveOptions): Promise<ArchiveResult> {
  const { dir, before } = options;
  const segmentSize = options.segmentSize ?? 100_000;
  let manifest = readManifest(dir);
  removeStrayFiles(dir, manifest);
  const result: ArchiveResult = { written: [], finished: [], records: { events: 0, decisions: 0 } };

  for (const spec of specs(db, before)) {
    let start = await archivedHead(db, spec.chain);
    // Listed past what Postgres records: an interrupted run. Finish it if the file is whole
    // and matches the rows still in Postgres; otherwise drop the listing and write it again.
    const pending = segmentsOf(manifest, spec.chain).filter((s) => s.last > start.at);
    for (const s of pending) {
      const dbLast = (await spec.read(s.last - 1, 1))[0];
      const intact = s.first === start.at + 1 && (await segmentIntact(dir, s, start)) && dbLast?.key === s.last && dbLast.hash === s.lastHash;
      if (!intact) {
        manifest = { ...manifest, segments: manifest.segments.filter((x) => x !== s && !(x.chain === s.chain && x.first > s.first)) };
        writeManifest(dir, manifest);
        break;
      }
      await record(db, spec, s);
      result.finished.push(s);
      result.records[spec.chain] += s.records;
      start = { at: s.last, hash: s.lastHash };
    }

    const end = await spec.closedEnd(start.at);
    const total = Math.max(0, end - start.at);
    let done = 0;
    while (start.at < end) {
      const last = Math.min(start.at + segmentSize, end);
      options.failpoint?.('before-write', spec.chain);
      const segment = await writeSegment(dir, spec, start, last, (n) => options.progress?.(spec.chain, (done += n), total));
      options.failpoint?.('after-write', spec.chain);
      if (!(await segmentIntact(dir, segment, start))) throw new Error(`${segment.file} did not read back as written; nothing removed from the database`);
      manifest = { ...manifest, segments: [...manifest.segments, segment] };
      writeManifest(dir, manifest);
      options.failpoint?.('before-delete', spec.chain);
      await record(db, spec, segment);
      result.written.push(segment);
      result.records[spec.chain] += segment.records;
      start = { at: segment.last, hash: segment.lastHash };
    }
  }
  return result;
}

/** One transaction: the range recorded as archived, and (decisions) its rows deleted. */
async function record(db: Kysely<Database>, spec: ChainSpec, s: Segment): Promise<void> {
  await db.transaction().execute(async (trx) => {
    await trx.insertInto('audit_archive').values({
      chain: s.chain, first: s.first, last: s.last, prev_hash: s.prevHash, last_hash: s.lastHash, records: s.records, file: s.file, sha256: s.sha256,
    }).execute();
    if (spec.move) await trx.deleteFrom('decisions').where('seq', '>=', String(s.first)).where('seq', '<=', String(s.last)).execute();
  });
}

/** What an interrupted run may have left: temporary files, and segments written but never listed. */
function removeStrayFiles(dir: string, manifest: Manifest): void {
  const listed = new Set(manifest.segments.map((s) => s.file));
  for (const f of readdirSync(dir)) {
    if (f.endsWith('.tmp') || (/^(events|decisions)-\d{12}-\d{12}\.ndjson\.gz$/.test(f) && !listed.has(f))) rmSync(join(dir, f), { force: true });
  }
}

// ---- reading archives as a source (replay, trace) ----------------------------------------

async function* pagesOf<T>(dir: string, segments: Segment[], after: number, convert: (l: ArchivedLine) => T, pageSize = 5_000): AsyncIterable<T[]> {
  let page: T[] = [];
  for (const s of segments) {
    if (s.last <= after) continue;
    for await (const lines of readSegment(dir, s)) {
      for (const l of lines) {
        if (!l) throw new Error(`a line of ${s.file} is not a record as the archiver writes it: run leash audit verify --archive`);
        if (l.key <= after) continue;
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

  private lastOf(chain: ChainName): number {
    return segmentsOf(this.manifest, chain).at(-1)?.last ?? 0;
  }

  async *events(after = 0): AsyncIterable<StoredEvent[]> {
    yield* pagesOf(this.dir, segmentsOf(this.manifest, 'events'), after, toEvent);
    if (this.then) yield* this.then.events(Math.max(after, this.lastOf('events')));
  }

  async *decisions(after = 0): AsyncIterable<StoredDecision[]> {
    yield* pagesOf(this.dir, segmentsOf(this.manifest, 'decisions'), after, toDecision);
    if (this.then) yield* this.then.decisions(Math.max(after, this.lastOf('decisions')));
  }

  async heads(): Promise<{ events: number; decisions: number }> {
    const then = this.then ? await this.then.heads() : { events: 0, decisions: 0 };
    return { events: Math.max(then.events, this.lastOf('events')), decisions: Math.max(then.decisions, this.lastOf('decisions')) };
  }

  async decision(id: string): Promise<StoredDecision | undefined> {
    const hot = await this.then?.decision(id);
    if (hot) return hot;
    for await (const page of pagesOf(this.dir, segmentsOf(this.manifest, 'decisions'), 0, (l) => l)) {
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
