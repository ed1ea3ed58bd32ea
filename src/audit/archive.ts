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
import { decisionBody, type StoredDecision } from './decision-log.ts';
import { chainNodes, readChain, readSharedChain } from './decision-reads.ts';
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
//
// Since migration 0013 each node's decisions are a chain of their own, archived as such: a
// node's segments name it (`node`), number their lines by the record's place in that chain
// (`chainSeq`) and keep the log's sequence number beside it, outside the hashed body.

export type ChainName = 'events' | 'decisions';
export const ARCHIVE_FORMAT = 'leash-audit-archive/1';

export interface Segment {
  chain: ChainName;
  /** The node whose decision chain this is; absent for events and the shared chain from before per-node chains. */
  node?: string;
  /** A node chain's segment: the log's sequence number of its first record (absent in archives written before it was kept). */
  firstSeq?: number;
  /** A node chain's segment: the log's sequence number of its last record. */
  lastSeq?: number;
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
  /** On a node's chain: the log's sequence number (not hashed: an address for reading in order). */
  seq?: number;
  prevHash: string;
  hash: string;
  body: string;
}

const keyName: Record<ChainName, string> = { events: 'position', decisions: 'seq' };
const HASH = 64;

/** How a segment's lines begin: a node chain's with its number in the chain and the log's number. */
const openingOf = (s: Pick<Segment, 'chain' | 'node'>) => (s.node === undefined ? `{"${keyName[s.chain]}":` : '{"chainSeq":');

export function encodeLine(s: Pick<Segment, 'chain' | 'node'>, r: ArchivedLine): string {
  const seq = s.node === undefined ? '' : `,"seq":${r.seq}`;
  return `${openingOf(s)}${r.key}${seq},"prevHash":"${r.prevHash}","hash":"${r.hash}","body":${r.body}}\n`;
}

/** The decimal number in `line` from `at` up to the next comma, and where that comma is; null if none is there. */
function numberAt(line: string, at: number): { value: number; end: number } | null {
  const end = line.indexOf(',', at);
  const digits = line.slice(at, end);
  if (end < 0 || digits.length === 0 || digits.length > 16 || !/^\d+$/.test(digits) || !Number.isSafeInteger(Number(digits))) return null;
  return { value: Number(digits), end };
}

/**
 * A line as the archiver writes it, or null for anything else. Read by position, not by a
 * regular expression (verify reads millions): a hash field that is not hex never matches the
 * hash it is compared with, so it needs no check of its own here.
 */
export function decodeLine(s: Pick<Segment, 'chain' | 'node'>, line: string): ArchivedLine | null {
  const open = openingOf(s);
  if (!line.startsWith(open) || line.charCodeAt(line.length - 1) !== 125 /* } */) return null;
  const key = numberAt(line, open.length);
  if (!key) return null;
  let comma = key.end;
  let seq: number | undefined;
  if (s.node !== undefined) {
    const logSeq = line.startsWith(',"seq":', comma) ? numberAt(line, comma + ',"seq":'.length) : null;
    if (!logSeq) return null;
    seq = logSeq.value;
    comma = logSeq.end;
  }
  const prevAt = comma + ',"prevHash":"'.length;
  const hashAt = prevAt + HASH + '","hash":"'.length;
  const bodyAt = hashAt + HASH + '","body":'.length;
  if (!line.startsWith(',"prevHash":"', comma) || !line.startsWith('","hash":"', prevAt + HASH) || !line.startsWith('","body":', hashAt + HASH)) return null;
  return { key: key.value, ...(seq === undefined ? {} : { seq }), prevHash: line.slice(prevAt, prevAt + HASH), hash: line.slice(hashAt, hashAt + HASH), body: line.slice(bodyAt, -1) };
}

export function toEvent(l: ArchivedLine): StoredEvent {
  const b = JSON.parse(l.body) as Omit<StoredEvent, 'at' | 'prevHash' | 'hash'> & { at: string };
  return { ...b, at: new Date(b.at), prevHash: l.prevHash, hash: l.hash };
}

export function toDecision(l: ArchivedLine): StoredDecision {
  const b = JSON.parse(l.body) as Omit<StoredDecision, 'at' | 'prevHash' | 'hash'> & { at: string };
  return { ...b, ...(l.seq === undefined ? {} : { seq: l.seq }), at: new Date(b.at), prevHash: l.prevHash, hash: l.hash };
}

/** A stored decision as its chain's archive line has it. */
export function lineOfDecision(d: StoredDecision): ArchivedLine {
  return d.chainSeq === undefined
    ? { key: d.seq, prevHash: d.prevHash, hash: d.hash, body: decisionBody(d) }
    : { key: d.chainSeq, seq: d.seq, prevHash: d.prevHash, hash: d.hash, body: decisionBody(d) };
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
  const bad = parsed.segments.findIndex((x) => !isSegment(x));
  if (bad !== -1) throw new Error(`${file} is not a Leash audit archive manifest: segment ${bad + 1} is not one the archiver lists`);
  return parsed;
}

const SEGMENT_FILE = /^(events|decisions(\.[0-9a-f]{16})?)-\d{12,16}-\d{12,16}\.ndjson\.gz$/;
const HEX64 = /^[0-9a-f]{64}$/;
const count = (v: unknown) => Number.isSafeInteger(v) && (v as number) >= 0;

/** A manifest entry as the archiver writes it: a plain file name in the directory, numbers, hashes, a node's id only on decisions. */
function isSegment(x: unknown): x is Segment {
  const s = x as Partial<Segment> | null;
  return typeof s === 'object' && s !== null && (s.chain === 'events' || s.chain === 'decisions')
    && (s.node === undefined || (s.chain === 'decisions' && typeof s.node === 'string' && s.node !== ''))
    && (s.lastSeq === undefined || count(s.lastSeq))
    && (s.firstSeq === undefined || (count(s.firstSeq) && s.lastSeq !== undefined && s.firstSeq >= 1 && s.firstSeq <= s.lastSeq))
    && typeof s.file === 'string' && SEGMENT_FILE.test(s.file)
    && count(s.first) && count(s.last) && count(s.records) && s.first! >= 1 && s.last! >= s.first!
    && typeof s.prevHash === 'string' && HEX64.test(s.prevHash) && typeof s.lastHash === 'string' && HEX64.test(s.lastHash)
    && typeof s.sha256 === 'string' && HEX64.test(s.sha256);
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

/** One chain's segments in order: the events', the shared decision chain's (no `node`), or a node's. */
export const segmentsOf = (m: Manifest, chain: ChainName, node?: string) =>
  m.segments.filter((s) => s.chain === chain && s.node === node).sort((a, b) => a.first - b.first);

/** The nodes whose decision chains have segments in the manifest. */
export const archivedNodes = (m: Manifest) => [...new Set(m.segments.flatMap((s) => (s.chain === 'decisions' && s.node !== undefined ? [s.node] : [])))].sort();

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
      if (end > start) lines.push(decodeLine(s, text.slice(start, end)));
      start = end + 1;
    }
    rest = text.slice(start);
    if (lines.length > 0) yield lines;
  }
  rest += decoder.end();
  if (rest.length > 0) yield [decodeLine(s, rest)];
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
  /** A node's decision chain; absent for events and the shared decision chain. */
  node?: string;
  read: (after: number, limit: number) => Promise<ArchivedLine[]>;
  /** Last record of the closed range after `after`: everything recorded before `before`, as a prefix. */
  closedEnd: (after: number) => Promise<number>;
  /** Moved (deleted once archived) or copied. */
  move: boolean;
}

/** The first record of a chain recorded at or after `before` (null if none), and the chain's last record. */
async function firstOpen(db: Kysely<Database>, chain: ChainName, node: string | undefined, after: number, before: Date) {
  const q = chain === 'events'
    ? sql<{ k: string | null; max: string | null }>`
      select (select min(position) from events where position > ${after} and recorded_at >= ${before.toISOString()}) as k, (select max(position) from events) as max`
    : node === undefined
      ? sql<{ k: string | null; max: string | null }>`
      select (select min(seq) from decisions where chain_seq is null and seq > ${after} and recorded_at >= ${before.toISOString()}) as k,
             (select max(seq) from decisions where chain_seq is null) as max`
      : sql<{ k: string | null; max: string | null }>`
      select (select min(chain_seq) from decisions where node_id = ${node} and chain_seq > ${after} and recorded_at >= ${before.toISOString()}) as k,
             (select max(chain_seq) from decisions where node_id = ${node} and chain_seq is not null) as max`;
  const r = (await q.execute(db)).rows[0];
  return { open: r?.k === null || r?.k === undefined ? null : Number(r.k), max: Number(r?.max ?? 0) };
}

async function specs(db: Kysely<Database>, before: Date): Promise<ChainSpec[]> {
  // A decision chain's newest record always stays: the next append chains onto it.
  const decisions = (node?: string): ChainSpec => ({
    chain: 'decisions', ...(node === undefined ? {} : { node }), move: true,
    read: async (after, limit) => (node === undefined ? await readSharedChain(db, after, limit) : await readChain(db, node, after, limit)).map(lineOfDecision),
    closedEnd: async (after) => {
      const { open, max } = await firstOpen(db, 'decisions', node, after, before);
      return Math.min(open === null ? max : open - 1, max - 1);
    },
  });
  return [
    {
      chain: 'events', move: false,
      read: async (after, limit) => (await readEvents(db, after, limit)).map((e) => ({ key: e.position, prevHash: e.prevHash, hash: e.hash, body: eventBody(e) })),
      closedEnd: async (after) => {
        const { open, max } = await firstOpen(db, 'events', undefined, after, before);
        return open === null ? max : open - 1;
      },
    },
    decisions(),
    ...(await chainNodes(db)).map((node) => decisions(node)),
  ];
}

/** Where Postgres says a chain's archive ends: its last recorded range (a decision chain: the shared one, or a node's). */
export async function archivedHead(db: Kysely<Database>, chain: ChainName, node?: string): Promise<{ at: number; hash: string }> {
  // A database not yet migrated to 0004 has archived nothing.
  const table = await sql<{ t: string | null }>`select to_regclass('audit_archive')::text as t`.execute(db);
  if (!table.rows[0]?.t) return { at: 0, hash: GENESIS_HASH };
  const row = await db.selectFrom('audit_archive').select(['last', 'last_hash']).where('chain', '=', chain).where('node_id', '=', node ?? '')
    .orderBy('last', 'desc').limit(1).executeTakeFirst();
  return row ? { at: Number(row.last), hash: row.last_hash } : { at: 0, hash: GENESIS_HASH };
}

/** A segment's file name; a node's chain is named by a digest of the node's id, which may hold any character. */
const fileName = (spec: Pick<Segment, 'chain' | 'node'>, first: number, last: number) => {
  const chain = spec.node === undefined ? spec.chain : `${spec.chain}.${createHash('sha256').update(spec.node).digest('hex').slice(0, 16)}`;
  return `${chain}-${String(first).padStart(12, '0')}-${String(last).padStart(12, '0')}.ndjson.gz`;
};

/** Writes records first..last to a segment, checking the chain as it goes; synced and renamed into place. */
async function writeSegment(dir: string, spec: ChainSpec, start: { at: number; hash: string }, last: number, onRecords: (n: number) => void): Promise<Segment> {
  const file = fileName(spec, start.at + 1, last);
  let firstSeq: number | undefined;
  let lastSeq: number | undefined;
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
        firstSeq ??= r.seq;
        lastSeq = r.seq;
        text += encodeLine(spec, r);
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
  return {
    chain: spec.chain, ...(spec.node === undefined ? {} : { node: spec.node, firstSeq: firstSeq!, lastSeq: lastSeq! }),
    file, first: start.at + 1, last, records: last - start.at, prevHash: start.hash, lastHash: hash, sha256: digest.digest('hex'),
  };
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

  for (const spec of await specs(db, before)) {
    let start = await archivedHead(db, spec.chain, spec.node);
    // Listed past what Postgres records: an interrupted run. Finish it if the file is whole
    // and matches the rows still in Postgres; otherwise drop the listing and write it again.
    const pending = segmentsOf(manifest, spec.chain, spec.node).filter((s) => s.last > start.at);
    for (const s of pending) {
      const dbLast = (await spec.read(s.last - 1, 1))[0];
      const intact = s.first === start.at + 1 && (await segmentIntact(dir, s, start)) && dbLast?.key === s.last && dbLast.hash === s.lastHash;
      if (!intact) {
        manifest = { ...manifest, segments: manifest.segments.filter((x) => x !== s && !(x.chain === s.chain && x.node === s.node && x.first > s.first)) };
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
      chain: s.chain, node_id: s.node ?? '', first: s.first, last: s.last, prev_hash: s.prevHash, last_hash: s.lastHash, records: s.records, file: s.file, sha256: s.sha256,
    }).execute();
    if (!spec.move) return;
    const range = trx.deleteFrom('decisions');
    await (spec.node === undefined
      ? range.where('chain_seq', 'is', null).where('seq', '>=', String(s.first)).where('seq', '<=', String(s.last))
      : range.where('node_id', '=', spec.node).where('chain_seq', '>=', String(s.first)).where('chain_seq', '<=', String(s.last))).execute();
  });
}

/** What an interrupted run may have left: temporary files, and segments written but never listed. */
function removeStrayFiles(dir: string, manifest: Manifest): void {
  const listed = new Set(manifest.segments.map((s) => s.file));
  for (const f of readdirSync(dir)) {
    if (f.endsWith('.tmp') || (SEGMENT_FILE.test(f) && !listed.has(f))) rmSync(join(dir, f), { force: true });
  }
}
