import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync, gzipSync } from 'node:zlib';
import { sql } from 'kysely';
import { describe, expect, it } from 'vitest';
import { archiveAudit, readManifest, type Manifest } from '../../src/audit/archive.ts';
import { ArchiveSource } from '../../src/audit/archive-source.ts';
import { DecisionLog } from '../../src/audit/decision-log.ts';
import { readChain } from '../../src/audit/decision-reads.ts';
import { verifyAudit } from '../../src/audit/verify.ts';
import { connect, type Connection } from '../../src/store/connect.ts';
import { EventStore } from '../../src/store/event-store.ts';
import { migrateToLatest } from '../../src/store/migrate.ts';
import { PostgresSource } from '../../src/audit/source.ts';
import { backends, freshPostgres } from '../support/backends.ts';
import { sharedChainLog } from '../support/shared-chain.ts';
import type { Backend } from '../../src/store/connect.ts';

// SPEC §8 archive: closed ranges to compressed, chained NDJSON segments with a manifest; the
// rows leave Postgres only once the files are written, synced and read back; a crash at any
// step loses nothing and doubles nothing; tampering inside a file is found and named.

const HOUR = 3_600_000;
const old = new Date(Date.now() - 2 * HOUR);
const cutoff = new Date(Date.now() - HOUR);

/** 20 events and 30 decisions an hour old or more, then 10 of each from now. */
async function seeded(backend?: Backend): Promise<{ connection: Connection; url: string | null }> {
  const b = backend ?? (await freshPostgres());
  const connection = await connect(b);
  await migrateToLatest(connection.db);
  const store = new EventStore(connection.db);
  for (let i = 0; i < 30; i++) {
    await store.append({ streamId: `agent/a${i % 5}`, streamType: 'agent', expectedVersion: Math.floor(i / 5), events: [{ type: 'Tested', data: { i } }], at: i < 20 ? old : new Date() });
  }
  const log = new DecisionLog(connection.db);
  for (let i = 1; i <= 40; i++) {
    await log.record({
      id: crypto.randomUUID(), nodeId: 'n1', at: i <= 30 ? old : new Date(), request: { i }, decision: i % 2 === 0, layer: 'all', code: null,
      reasons: ['p'], policyVersion: 1, logPosition: Math.min(30, i), ...(i === 3 ? { shadow: { decision: true, layer: 'all', reasons: ['q'] } } : {}),
    });
  }
  return { connection, url: b.kind === 'postgres' ? b.url : null };
}

const cli = join(import.meta.dirname, '..', '..', 'src', 'cli', 'leash.js');
const decisionSeqs = async (c: Connection) => (await c.db.selectFrom('decisions').select('seq').orderBy('seq').execute()).map((r) => Number(r.seq));
const archiveDir = () => join(mkdtempSync(join(tmpdir(), 'leash-archive-')), 'archive');

describe.each(backends)('audit archive on $name', ({ fresh }) => {
  it('moves closed decision ranges (copies events) to segments that verify offline and chain onto Postgres', async () => {
    const { connection } = await seeded(await fresh());
    const dir = archiveDir();
    const result = await archiveAudit(connection.db, { dir, before: cutoff, segmentSize: 12 });
    expect(result.records).toEqual({ events: 20, decisions: 30 });
    expect(result.written.map((s) => `${s.chain} ${s.first}-${s.last}`)).toEqual(['events 1-12', 'events 13-20', 'decisions 1-12', 'decisions 13-24', 'decisions 25-30']);
    expect(await decisionSeqs(connection)).toEqual(Array.from({ length: 10 }, (_, i) => 31 + i));
    expect(readdirSync(dir).sort()).toEqual([...result.written.map((s) => s.file), 'manifest.json'].sort());

    // Postgres alone verifies from where its archive ends; with the archive, all 40; the archive alone, offline.
    expect(await verifyAudit(connection.db)).toMatchObject({ ok: true, records: { events: 30, decisions: 10 } });
    expect(await verifyAudit(connection.db, { archive: dir })).toMatchObject({ ok: true, records: { events: 30, decisions: 40 }, heads: { chains: { n1: { at: 40 } } } });
    expect(await verifyAudit(null, { archive: dir })).toMatchObject({ ok: true, records: { events: 20, decisions: 30 } });

    // Rows not archived stay append-only; the record of archived ranges cannot be rewritten
    // (it is what lets archived rows go); new decisions chain on; a second run continues where the first ended.
    await expect(sql`delete from decisions where seq = 35`.execute(connection.db)).rejects.toThrow(/append-only/);
    for (const statement of [sql`update audit_archive set last = 40`, sql`delete from audit_archive`, sql`truncate audit_archive`]) {
      await expect(statement.execute(connection.db)).rejects.toThrow(/audit_archive table is append-only/);
    }
    expect(await connection.db.selectFrom('audit_archive').select('first').execute()).toHaveLength(5);
    await new DecisionLog(connection.db).record({ id: crypto.randomUUID(), nodeId: 'n2', at: new Date(), request: {}, decision: true, layer: 'all', code: null, reasons: [], policyVersion: 1, logPosition: 30 });
    const second = await archiveAudit(connection.db, { dir, before: new Date(Date.now() + 1000), segmentSize: 100 });
    expect(second.written.map((s) => `${s.chain} ${s.node} ${s.first}-${s.last}`)).toEqual(['events undefined 21-30', 'decisions n1 31-39']);
    expect(await decisionSeqs(connection)).toEqual([40, 41]); // each chain's newest always stays: the next append chains onto it
    expect(await verifyAudit(connection.db, { archive: dir })).toMatchObject({ ok: true, records: { decisions: 41 } });
    // One archiver per directory; a lock left by a process that is gone is taken over.
    writeFileSync(join(dir, 'archive.lock'), `${process.pid}\n`);
    await expect(archiveAudit(connection.db, { dir, before: new Date(), segmentSize: 100 })).rejects.toThrow(/another archive run \(pid \d+\) is working/);
    writeFileSync(join(dir, 'archive.lock'), '999999999\n');
    // Each chain continues where its archive ends.
    await new DecisionLog(connection.db).record({ id: crypto.randomUUID(), nodeId: 'n1', at: new Date(), request: {}, decision: true, layer: 'all', code: null, reasons: [], policyVersion: 1, logPosition: 30 });
    expect((await readChain(connection.db, 'n1', 0, 10)).map((d) => d.chainSeq)).toEqual([40, 41]);
    expect(await verifyAudit(connection.db, { archive: dir })).toMatchObject({ ok: true, records: { decisions: 42 } });
    expect((await archiveAudit(connection.db, { dir, before: new Date(Date.now() + 1000), segmentSize: 100 })).written.map((s) => `${s.node} ${s.first}-${s.last}`)).toEqual(['n1 40-40']);
    // Nothing left to do: a third run writes nothing.
    expect((await archiveAudit(connection.db, { dir, before: new Date(), segmentSize: 100 })).written).toEqual([]);
    expect(existsSync(join(dir, 'archive.lock'))).toBe(false);
    await connection.db.destroy();
  });
});

/** Rewrites the lines of one segment file (decompressed), as someone with file access could. */
function tamperSegment(dir: string, file: string, edit: (lines: string[]) => string[]): void {
  const path = join(dir, file);
  const lines = gunzipSync(readFileSync(path)).toString('utf8').split('\n').filter(Boolean);
  writeFileSync(path, gzipSync(`${edit(lines).join('\n')}\n`));
}

describe('tampering inside archive files', () => {
  const swap = (lines: string[], a: number, b: number) => lines.map((l, i) => (i === a ? lines[b]! : i === b ? lines[a]! : l));
  it.each([
    ['an edited record', 'decisions 13', (ls: string[]) => ls.map((l, i) => (i === 3 ? l.replace('"decision":true', '"decision":false') : l)), { chain: 'decisions', at: 16, problem: 'edited' }],
    ['a deleted record', 'decisions 13', (ls: string[]) => ls.filter((_, i) => i !== 2), { chain: 'decisions', at: 15, problem: 'deleted' }],
    ['two records swapped', 'decisions 1', (ls: string[]) => swap(ls, 4, 7), { chain: 'decisions', at: 8, problem: 'inserted or reordered' }],
    ['the tail of the last segment cut off', 'decisions 25', (ls: string[]) => ls.slice(0, 3), { chain: 'decisions', at: 28 }],
    ['a line garbled', 'decisions 1', (ls: string[]) => ls.map((l, i) => (i === 5 ? `${l.slice(0, 40)}` : l)), { chain: 'decisions', at: 6, problem: 'edited' }],
    ['a log number changed (it is outside the hash)', 'decisions 1', (ls: string[]) => ls.map((l, i) => (i === 5 ? l.replace(/"seq":\d+/, '"seq":2') : l)), { chain: 'decisions', node: 'n1', at: 6, problem: 'inserted or reordered' }],
    ['an edited event copy', 'events 1', (ls: string[]) => ls.map((l, i) => (i === 9 ? l.replace('"i":', '"j":') : l)), { chain: 'events', at: 10, problem: 'edited' }],
  ])('finds %s and names the record and its file', async (_name, segment, edit, finding) => {
    const { connection } = await seeded();
    const dir = archiveDir();
    await archiveAudit(connection.db, { dir, before: cutoff, segmentSize: 12 });
    const file = readManifest(dir).segments.find((s) => `${s.chain} ${s.first}` === segment)!.file;
    tamperSegment(dir, file, edit);
    for (const db of [connection.db, null]) {
      const result = await verifyAudit(db, { archive: dir });
      expect(result.ok).toBe(false);
      expect(result.findings[0]).toMatchObject(finding);
      expect(result.findings[0]!.detail).toContain(`in ${file}`);
    }
    await connection.db.destroy();
  });

  it('finds the last segment cut off offline against the manifest, and a manifest that lost a segment against Postgres', async () => {
    const { connection } = await seeded();
    const dir = archiveDir();
    await archiveAudit(connection.db, { dir, before: cutoff, segmentSize: 12 });
    const manifest = readManifest(dir);
    const last = manifest.segments.at(-1)!;
    tamperSegment(dir, last.file, (ls) => ls.slice(0, 2));
    expect((await verifyAudit(null, { archive: dir })).findings[0]).toMatchObject({ chain: 'decisions', at: 27, problem: 'truncated' });

    const shortened: Manifest = { ...manifest, segments: manifest.segments.slice(0, -1) };
    writeFileSync(join(dir, 'manifest.json'), JSON.stringify(shortened));
    expect((await verifyAudit(connection.db, { archive: dir })).findings[0]).toMatchObject({ chain: 'decisions', at: 25, problem: 'deleted' });
    await connection.db.destroy();
  });
});

describe('reading an archive that is not there', () => {
  it('verify, replay and trace refuse a directory without an archive, or with a manifest that is not one, and say which', async () => {
    const empty = mkdtempSync(join(tmpdir(), 'leash-no-archive-'));
    await expect(verifyAudit(null, { archive: empty })).rejects.toThrow(`${empty} holds no Leash audit archive`);
    expect(() => new ArchiveSource(empty, null)).toThrow(`${empty} holds no Leash audit archive`);
    const offline = await promisify(execFile)(process.execPath, [cli, 'audit', 'verify', '--archive', empty, '--archive-only']).catch((e: { code: number; stderr: string }) => e);
    expect(offline).toMatchObject({ code: 1, stderr: expect.stringContaining('holds no Leash audit archive') });
    writeFileSync(join(empty, 'manifest.json'), '{"format": ');
    await expect(verifyAudit(null, { archive: empty })).rejects.toThrow('manifest.json is not a Leash audit archive manifest');
    // Entries the archiver would not write: a path out of the directory, a node's id that is not
    // one, numbers that are not counts, hashes that are not sha-256.
    const segment = { chain: 'decisions', node: 'n1', lastSeq: 12, file: `decisions.${'a'.repeat(16)}-000000000001-000000000012.ndjson.gz`, first: 1, last: 12, records: 12, prevHash: '0'.repeat(64), lastHash: 'b'.repeat(64), sha256: 'c'.repeat(64) };
    const entries = [{ file: '../../etc/passwd' }, { node: 123 }, { node: '' }, { chain: 'events', node: 'n1' }, { first: '1' }, { first: 0 }, { last: 2 ** 60 }, { lastSeq: -1 }, { firstSeq: 13 }, { firstSeq: 0 }, { firstSeq: '1' }, { lastHash: 'b'.repeat(63) }, { sha256: 'C'.repeat(64) }];
    for (const edit of entries) {
      writeFileSync(join(empty, 'manifest.json'), JSON.stringify({ format: 'leash-audit-archive/1', segments: [{ ...segment, ...edit }] }));
      await expect(verifyAudit(null, { archive: empty }), JSON.stringify(edit)).rejects.toThrow('segment 1 is not one the archiver lists');
      expect(() => new ArchiveSource(empty, null)).toThrow('segment 1 is not one the archiver lists');
    }
    writeFileSync(join(empty, 'manifest.json'), JSON.stringify({ format: 'leash-audit-archive/1', segments: [segment] }));
    expect(() => new ArchiveSource(empty, null)).not.toThrow();
  });
});

describe('archive crash safety (the archiver killed at each step, then run again)', () => {
  const run = (url: string, dir: string, failpoint?: string) =>
    promisify(execFile)(process.execPath, [cli, 'audit', 'archive', '--database-url', url, '--dir', dir, '--before', cutoff.toISOString(), '--segment-size', '12'], {
      env: { ...process.env, ...(failpoint ? { LEASH_ARCHIVE_FAILPOINT: failpoint } : {}) },
    }).then((r) => ({ code: 0, signal: null, ...r }), (e: { code: number | null; signal: string | null; stdout: string; stderr: string }) => e);

  it.each(['before-write:events', 'after-write:decisions', 'before-delete:decisions'])('killed at %s: the rerun completes, nothing lost or doubled, the chain intact', async (failpoint) => {
    const { connection, url } = await seeded();
    const dir = archiveDir();
    const killed = await run(url!, dir, failpoint);
    expect(killed.signal).toBe('SIGKILL');
    // Nothing left the database that is not listed in a verified segment.
    const listed = existsSync(join(dir, 'manifest.json')) ? readManifest(dir).segments.filter((s) => s.chain === 'decisions').reduce((n, s) => n + s.records, 0) : 0;
    expect((await decisionSeqs(connection)).length + listed).toBeGreaterThanOrEqual(40);

    const rerun = await run(url!, dir);
    expect(rerun.code, rerun.stderr).toBe(0);
    if (failpoint.startsWith('before-delete')) expect(rerun.stdout).toMatch(/finished an interrupted run: decisions\.[0-9a-f]{16}-000000000001-000000000012\.ndjson\.gz/);
    const manifest = readManifest(dir);
    const ranges = manifest.segments.filter((s) => s.chain === 'decisions').map((s) => `${s.first}-${s.last}`);
    expect(ranges).toEqual(['1-12', '13-24', '25-30']); // each range once
    expect(await decisionSeqs(connection)).toEqual(Array.from({ length: 10 }, (_, i) => 31 + i));
    expect(readdirSync(dir).filter((f) => !manifest.segments.some((s) => s.file === f) && f !== 'manifest.json')).toEqual([]); // no strays
    expect(await verifyAudit(connection.db, { archive: dir })).toMatchObject({ ok: true, records: { events: 30, decisions: 40 } });
    await connection.db.destroy();
  });
});

describe('an archive of many short-lived nodes (a node id per process: a chain per restart)', () => {
  it("reads 150 chains back in the log's order, verifies them, and replays across archive and Postgres", async () => {
    const connection = await connect(await freshPostgres());
    try {
      await migrateToLatest(connection.db);
      // Node k started after node k-1 stopped, as restarts do; each decided 3 times.
      for (let k = 0; k < 150; k++) {
        const log = new DecisionLog(connection.db);
        for (let i = 0; i < 3; i++) {
          await log.record({ id: crypto.randomUUID(), nodeId: `host-${k}`, at: old, request: { k, i }, decision: true, layer: 'all', code: null, reasons: [], policyVersion: 1, logPosition: 0 });
        }
        await log.close();
      }
      const before = (await connection.db.selectFrom('decisions').select(['seq', 'id']).orderBy('seq').execute()).map((r) => [Number(r.seq), r.id]);
      const dir = archiveDir();
      const result = await archiveAudit(connection.db, { dir, before: cutoff, segmentSize: 100 });
      expect(result.written).toHaveLength(150); // each chain's newest record stays in Postgres
      expect(await verifyAudit(connection.db, { archive: dir })).toMatchObject({ ok: true, records: { decisions: 450 } });
      const read = async (source: ArchiveSource) => {
        const out: [number, string][] = [];
        for await (const page of source.decisions()) out.push(...page.map((d): [number, string] => [d.seq, d.id]));
        return out;
      };
      expect(await read(new ArchiveSource(dir, new PostgresSource(connection.db, 7)))).toEqual(before);
      expect(await read(new ArchiveSource(dir, null))).toEqual(before.filter((_, i) => i % 3 !== 2));
    } finally {
      await connection.db.destroy();
    }
  });
});

describe('an archive of a log from before per-node chains and of two nodes after it', () => {
  it("archives the shared chain and each node's chain apart; verify walks them all; reading merges them back in the log's order", async () => {
    const connection = await connect(await freshPostgres());
    try {
      const decision = (nodeId: string, i: number, at: Date) => ({ id: crypto.randomUUID(), nodeId, at, request: { i }, decision: i % 2 === 0, layer: 'all', code: null, reasons: [], policyVersion: 1, logPosition: 0 });
      await sharedChainLog(connection.db, [1, 2, 3, 4, 5].map((i) => decision('old', i, old)));
      await migrateToLatest(connection.db);
      const a = new DecisionLog(connection.db);
      const b = new DecisionLog(connection.db);
      for (let i = 1; i <= 12; i++) await Promise.all([a.record(decision('a', i, i <= 10 ? old : new Date())), b.record(decision('b', i, i <= 10 ? old : new Date()))]);
      await Promise.all([a.close(), b.close()]);
      const before = (await connection.db.selectFrom('decisions').select(['seq', 'id']).orderBy('seq').execute()).map((r) => [Number(r.seq), r.id]);
      expect(before).toHaveLength(29);

      const dir = archiveDir();
      const result = await archiveAudit(connection.db, { dir, before: cutoff, segmentSize: 4 });
      // Each chain's records before the cutoff, its newest always kept.
      expect(result.written.map((s) => `${s.node ?? 'shared'} ${s.first}-${s.last}`)).toEqual(['shared 1-4', 'a 1-4', 'a 5-8', 'a 9-10', 'b 1-4', 'b 5-8', 'b 9-10']);
      expect(result.records).toEqual({ events: 0, decisions: 24 });
      expect(await decisionSeqs(connection)).toHaveLength(5);
      expect(await verifyAudit(connection.db)).toMatchObject({ ok: true, records: { decisions: 5, anchors: 3 } }); // the shared chain's closing anchor, and each node's as it stopped
      expect(await verifyAudit(connection.db, { archive: dir })).toMatchObject({ ok: true, records: { decisions: 29 }, heads: { decisions: { at: 5 }, chains: { a: { at: 12 }, b: { at: 12 } } } });
      expect(await verifyAudit(null, { archive: dir })).toMatchObject({ ok: true, records: { decisions: 24 } });

      // Every decision once, in the log's order, whether it now lives in a file or in Postgres.
      const read = async (source: ArchiveSource) => {
        const out: [number, string][] = [];
        for await (const page of source.decisions()) out.push(...page.map((d): [number, string] => [d.seq, d.id]));
        return out;
      };
      expect(await read(new ArchiveSource(dir, new PostgresSource(connection.db, 3)))).toEqual(before);
      const archivedOnly = await read(new ArchiveSource(dir, null));
      expect(archivedOnly).toEqual(before.filter(([seq]) => archivedOnly.some(([s]) => s === seq)));
      expect(archivedOnly).toHaveLength(24);
      // An archive written before segments kept their first record's number reads the same.
      const manifest = readManifest(dir);
      expect(manifest.segments.filter((s) => s.node !== undefined).every((s) => s.firstSeq !== undefined && s.firstSeq <= s.lastSeq!)).toBe(true);
      const older = archiveDir();
      cpSync(dir, older, { recursive: true });
      writeFileSync(join(older, 'manifest.json'), JSON.stringify({ ...manifest, segments: manifest.segments.map(({ firstSeq: _, ...s }) => s) }));
      expect(await read(new ArchiveSource(older, new PostgresSource(connection.db, 3)))).toEqual(before);
      // A first record's number raised in the manifest (it is not hashed): the read stops, never out of order.
      const raised = archiveDir();
      cpSync(dir, raised, { recursive: true });
      const a5 = manifest.segments.find((s) => s.node === 'a' && s.first === 5)!;
      writeFileSync(join(raised, 'manifest.json'), JSON.stringify({ ...manifest, segments: manifest.segments.map((s) => (s === a5 ? { ...s, firstSeq: a5.lastSeq } : s)) }));
      await expect(read(new ArchiveSource(raised, null))).rejects.toThrow("the archive's records are not in the log's order");

      const eleventh = before[10]!;
      expect((await new ArchiveSource(dir, null).decision(eleventh[1] as string))?.seq).toBe(eleventh[0]);

      // A record of b's archived chain edited: found, and named by node and file.
      const bFile = readManifest(dir).segments.find((s) => s.node === 'b' && s.first === 5)!;
      tamperSegment(dir, bFile.file, (ls) => ls.map((l, i) => (i === 1 ? l.replace(/"decision":(true|false)/, (_, v: string) => `"decision":${v === 'true' ? 'false' : 'true'}`) : l)));
      const tampered = await verifyAudit(connection.db, { archive: dir });
      expect(tampered.findings).toEqual([expect.objectContaining({ chain: 'decisions', node: 'b', at: 6, problem: 'edited', detail: expect.stringContaining(`in ${bFile.file}`) })]);
    } finally {
      await connection.db.destroy();
    }
  });
});
