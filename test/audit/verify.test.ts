import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { sql } from 'kysely';
import { describe, expect, it } from 'vitest';
import { anchorBody, decisionHash, DecisionLog } from '../../src/audit/decision-log.ts';
import { readAnchors, readChain, readSharedChain } from '../../src/audit/decision-reads.ts';
import { chainHash, GENESIS_HASH } from '../../src/store/hash-chain.ts';
import { readEvents } from '../../src/audit/source.ts';
import { verifyAudit, type Anchor } from '../../src/audit/verify.ts';
import { connect, type Connection } from '../../src/store/connect.ts';
import { EventStore } from '../../src/store/event-store.ts';
import { migrateToLatest } from '../../src/store/migrate.ts';
import { freshPostgres } from '../support/backends.ts';
import { sharedChainLog } from '../support/shared-chain.ts';

// SPEC §8 `leash audit verify`: tampering done directly in PostgreSQL, as a superuser would
// (append-only triggers disabled), is found and the first bad record named.

/** 20 events over 5 streams and 12 decisions at log positions up to 20, their head anchored (the node stopped). */
async function seeded(): Promise<{ connection: Connection; url: string }> {
  const backend = await freshPostgres();
  const connection = await connect(backend);
  await migrateToLatest(connection.db);
  const store = new EventStore(connection.db);
  for (let i = 0; i < 20; i++) {
    await store.append({ streamId: `agent/a${i % 5}`, streamType: 'agent', expectedVersion: Math.floor(i / 5), events: [{ type: 'Tested', data: { i } }], at: new Date() });
  }
  const log = new DecisionLog(connection.db);
  for (let i = 1; i <= 12; i++) {
    await log.record({
      id: crypto.randomUUID(), nodeId: 'n1', at: new Date(), request: { i }, decision: i % 2 === 0, layer: 'all', code: null,
      reasons: ['p'], policyVersion: 1, logPosition: Math.min(20, i + 5), ...(i === 3 ? { shadow: { decision: true, layer: 'all', reasons: ['q'] } } : {}),
    });
  }
  await log.close();
  return { connection, url: backend.url };
}

async function tamper(connection: Connection, statements: string[]): Promise<void> {
  await sql.raw('alter table events disable trigger user').execute(connection.db);
  await sql.raw('alter table decisions disable trigger user').execute(connection.db);
  await sql.raw('alter table decision_anchors disable trigger user').execute(connection.db);
  for (const s of statements) await sql.raw(s).execute(connection.db);
}

describe('audit verify on PostgreSQL', () => {
  it('an intact log: both chains walked to their heads, progress reported', async () => {
    const { connection } = await seeded();
    const seen: string[] = [];
    const result = await verifyAudit(connection.db, { pageSize: 7, progress: (chain, done, total) => seen.push(`${chain} ${done}/${total}`) });
    expect(result).toMatchObject({ ok: true, findings: [], records: { events: 20, decisions: 12, anchors: 1 }, heads: { events: { at: 20 }, decisions: { at: 0 }, chains: { n1: { at: 12 } }, anchors: { at: 1 } } });
    expect(seen).toEqual(['events 7/20', 'events 14/20', 'events 20/20', 'decisions 7/12', 'decisions 12/12', 'anchors 1/1']);
    await connection.db.destroy();
  });

  it.each([
    ['an edited event', ["update events set data = '{\"i\": 99}' where position = 8"], { chain: 'events', at: 8, problem: 'edited' }],
    ['a deleted event', ['delete from events where position = 8'], { chain: 'events', at: 8, problem: 'deleted' }],
    ['three deleted events', ['delete from events where position between 8 and 10'], { chain: 'events', at: 8, problem: 'deleted', detail: 'in the database: positions 8–10 are missing (deleted)' }],
    ['two events swapped', ['update events set position = -1 where position = 6', 'update events set position = 6 where position = 9', 'update events set position = 9 where position = -1'], { chain: 'events', at: 6, problem: 'inserted or reordered' }],
    ['an event appended by hand', ["insert into events (position, stream_id, stream_type, version, type, data, metadata, recorded_at, prev_hash, hash) select 21, 'agent/x', 'agent', 1, 'Forged', '{}', '{}', now(), hash, repeat('0', 64) from events where position = 20"], { chain: 'events', at: 21, problem: 'edited' }],
    ['an edited decision (allow turned deny)', ['update decisions set decision = not decision where seq = 4'], { chain: 'decisions', node: 'n1', at: 4, problem: 'edited' }],
    ['an edited quarantine shadow', ["update decisions set shadow = '{\"decision\": false, \"layer\": \"all\", \"reasons\": []}' where seq = 3"], { chain: 'decisions', at: 3, problem: 'edited' }],
    ['a deleted decision', ['delete from decisions where seq = 5'], { chain: 'decisions', node: 'n1', at: 5, problem: 'deleted' }],
    ['two decisions swapped', ['update decisions set chain_seq = -1 where chain_seq = 2', 'update decisions set chain_seq = 2 where chain_seq = 7', 'update decisions set chain_seq = 7 where chain_seq = -1'], { chain: 'decisions', node: 'n1', at: 2, problem: 'inserted or reordered' }],
    ['two decisions renumbered in the log (its numbers are outside the hash)', ['update decisions set seq = -1 where seq = 2', 'update decisions set seq = 2 where seq = 7', 'update decisions set seq = 7 where seq = -1'], { chain: 'decisions', node: 'n1', at: 3, problem: 'inserted or reordered', detail: expect.stringContaining('renumbered') }],
    ['the decisions after the last anchored one cut off', ['delete from decisions where seq > 9'], { chain: 'decisions', node: 'n1', at: 10, problem: 'truncated', detail: expect.stringContaining('anchor 1 saw it reach 12') }],
    ['a whole node chain deleted', ['delete from decisions'], { chain: 'decisions', node: 'n1', at: 1, problem: 'truncated' }],
    ['an anchored decision rewritten with a hash that links', ["update decisions set hash = repeat('a', 64) where seq = 12"], { chain: 'decisions', node: 'n1', at: 12, problem: 'edited' }],
    ['an anchor edited', ["update decision_anchors set recorded_at = recorded_at - interval '1 hour'"], { chain: 'anchors', at: 1, problem: 'edited' }],
    ['an anchor moved to a record the chain does not have there', ['update decision_anchors set chain_seq = 11'], { chain: 'decisions', node: 'n1', at: 11, problem: 'edited', detail: expect.stringContaining('not the record anchor 1 saw') }],
    ['the event log\'s tail cut off below what decisions refer to', ['delete from events where position > 15'], { chain: 'events', at: 16, problem: 'truncated' }],
  ])('finds %s and names it', async (_name, statements, finding) => {
    const { connection } = await seeded();
    await tamper(connection, statements);
    const result = await verifyAudit(connection.db, { pageSize: 5 });
    expect(result.ok).toBe(false);
    expect(result.findings[0]).toMatchObject(finding);
    await connection.db.destroy();
  });

  it('a cut-off tail the chains cannot show is found against an anchor from an earlier verify', async () => {
    const { connection } = await seeded();
    // Three more decisions the node has not anchored yet (its interval has not come).
    const log = new DecisionLog(connection.db, { anchorEveryMs: 3_600_000 });
    for (let i = 13; i <= 15; i++) await log.record({ id: crypto.randomUUID(), nodeId: 'n1', at: new Date(), request: { i }, decision: true, layer: 'all', code: null, reasons: [], policyVersion: 1, logPosition: 20 });
    const anchor: Anchor = (await verifyAudit(connection.db)).heads;
    expect(anchor.chains).toMatchObject({ n1: { at: 15 } });
    await tamper(connection, ['delete from decisions where seq > 12', 'delete from events where position > 19']);
    // Without the anchor every chain looks whole: the anchor chain saw n1 reach 12, no further
    // (and decision 12 refers to position 17, still there).
    expect((await verifyAudit(connection.db)).ok).toBe(true);
    const result = await verifyAudit(connection.db, { anchor });
    expect(result.findings).toEqual([
      expect.objectContaining({ chain: 'events', at: 20, problem: 'truncated' }),
      expect.objectContaining({ chain: 'decisions', node: 'n1', at: 13, problem: 'truncated' }),
    ]);
    // An anchor file from before per-node chains (events and the shared chain only) is still read.
    expect((await verifyAudit(connection.db, { anchor: { events: anchor.events, decisions: anchor.decisions } })).findings).toEqual([
      expect.objectContaining({ chain: 'events', at: 20, problem: 'truncated' }),
    ]);
    await connection.db.destroy();
  });

  it("a range recorded as archived by hand (which lets its rows be deleted) is found, with or without the archive", async () => {
    const { connection } = await seeded();
    const [eighth] = await readChain(connection.db, 'n1', 7, 1);
    // No trigger disabled: audit_archive takes inserts, and the trigger lets recorded ranges go.
    await sql`insert into audit_archive (chain, node_id, first, last, prev_hash, last_hash, records, file, sha256)
              values ('decisions', 'n1', 1, 8, ${'0'.repeat(64)}, ${eighth!.hash}, 8, 'x', 'x')`.execute(connection.db);
    await sql`delete from decisions where node_id = 'n1' and chain_seq <= 8`.execute(connection.db);
    // Postgres alone trusts its record of what was archived from 1 to 8, and the rest links on;
    // the archive given must list the range, and an empty one does not.
    expect((await verifyAudit(connection.db)).ok).toBe(true);
    const dir = mkdtempSync(join(tmpdir(), 'leash-archive-'));
    writeFileSync(join(dir, 'manifest.json'), JSON.stringify({ format: 'leash-audit-archive/1', segments: [] }));
    expect((await verifyAudit(connection.db, { archive: dir })).findings).toEqual([
      expect.objectContaining({ chain: 'decisions', node: 'n1', at: 1, problem: 'deleted', detail: expect.stringContaining('this archive has no such segment') }),
    ]);
    // A range after a gap in what was archived.
    const [eleventh] = await readChain(connection.db, 'n1', 10, 1);
    await sql`insert into audit_archive (chain, node_id, first, last, prev_hash, last_hash, records, file, sha256)
              values ('decisions', 'n1', 10, 11, ${'0'.repeat(64)}, ${eleventh!.hash}, 2, 'x', 'x')`.execute(connection.db);
    expect((await verifyAudit(connection.db)).findings).toEqual([expect.objectContaining({ node: 'n1', at: 9, problem: 'deleted', detail: expect.stringContaining('no archived range ends at 9') })]);
    await connection.db.destroy();
  });

  it('the shared chain from before per-node chains is closed by the anchor chain: its tail cut off, or a record added after it, shows', async () => {
    const backend = await freshPostgres();
    const connection = await connect(backend);
    await sharedChainLog(connection.db, [1, 2, 3, 4].map((i) => ({ id: crypto.randomUUID(), nodeId: 'old', at: new Date(), request: { i }, decision: true, layer: 'all', code: null, reasons: [], policyVersion: 1, logPosition: 0 })));
    await migrateToLatest(connection.db);
    const intact = await verifyAudit(connection.db);
    expect(intact).toMatchObject({ ok: true, records: { decisions: 4, anchors: 1 }, heads: { decisions: { at: 4 }, anchors: { at: 1 } } });
    const [closing] = await readAnchors(connection.db, 0, 1);
    expect(closing).toMatchObject({ seq: 1, nodeId: '', chainSeq: 4 });
    expect(closing!.hash).toBe(chainHash(GENESIS_HASH, anchorBody(closing!))); // the migration's SQL writes the canonical body

    const [fourth] = await readSharedChain(connection.db, 3, 1);
    // A fifth "old" decision, chained and hashed correctly onto the fourth, in a number the sequence left free.
    const forged = { ...fourth!, id: crypto.randomUUID(), seq: 5, request: { forged: true } };
    await sql`insert into decisions (seq, id, node_id, recorded_at, request, decision, layer, code, reasons, policy_version, log_position, prev_hash, hash)
              values (5, ${forged.id}, 'old', ${forged.at.toISOString()}, ${JSON.stringify(forged.request)}, true, 'all', null, '[]', 1, 0, ${fourth!.hash}, ${decisionHash(fourth!.hash, forged)})`.execute(connection.db);
    expect((await verifyAudit(connection.db)).findings).toEqual([expect.objectContaining({ chain: 'decisions', at: 5, problem: 'inserted or reordered', detail: expect.stringContaining('was closed at decision 4') })]);
    await tamper(connection, ['delete from decisions where seq >= 4']);
    expect((await verifyAudit(connection.db)).findings).toEqual([expect.objectContaining({ chain: 'decisions', at: 4, problem: 'truncated' })]);
    await connection.db.destroy();
  });

  it('an event inserted in the middle with a hash that verifies is found where the chain breaks after it', async () => {
    const { connection } = await seeded();
    const { eventHash } = await import('../../src/store/hash-chain.ts');
    // Read as verify reads (readAll holds back rows newer than any transaction still running on
    // the server, and the test server runs other files' transactions).
    const seventh = (await readEvents(connection.db, 6, 1))[0]!;
    const forged = { ...seventh, position: 8, streamId: 'agent/forged', version: 1, type: 'Forged', data: {}, prevHash: seventh.hash };
    await tamper(connection, [
      'update events set position = position + 1000 where position > 7',
      'update events set position = position - 999 where position > 1000',
      `insert into events (position, stream_id, stream_type, version, type, data, metadata, recorded_at, prev_hash, hash)
       values (8, 'agent/forged', 'agent', 1, 'Forged', '{}', '{}', '${forged.at.toISOString()}', '${forged.prevHash}', '${eventHash(forged.prevHash, forged)}')`,
    ]);
    const result = await verifyAudit(connection.db);
    expect(result.findings[0]).toMatchObject({ chain: 'events', at: 9, problem: 'inserted or reordered' });
    await connection.db.destroy();
  });

  it('a chain rewritten consistently from some record on still differs from the anchor', async () => {
    const { connection } = await seeded();
    const anchor = (await verifyAudit(connection.db)).heads;
    // Rewrite the last event and recompute its hash the way Leash would: the chain is whole again.
    const { eventHash } = await import('../../src/store/hash-chain.ts');
    const [last] = await new EventStore(connection.db).readStream('agent/a4', 4).then((es) => es.slice(-1));
    const forged = { ...last!, data: { i: 1000 } };
    await tamper(connection, [`update events set data = '{"i": 1000}', hash = '${eventHash(forged.prevHash, forged)}' where position = 20`]);
    expect((await verifyAudit(connection.db)).ok).toBe(true);
    expect((await verifyAudit(connection.db, { anchor })).findings).toEqual([expect.objectContaining({ chain: 'events', at: 20, problem: 'edited' })]);
    await connection.db.destroy();
  });

  it('leash audit verify: exit 0 and a summary when intact (writing the anchor), exit 1 naming the record when not', async () => {
    const { connection, url } = await seeded();
    const cli = join(import.meta.dirname, '..', '..', 'src', 'cli', 'leash.js');
    const anchorFile = join(mkdtempSync(join(tmpdir(), 'leash-anchor-')), 'anchor.json');
    const run = (...args: string[]) =>
      promisify(execFile)(process.execPath, [cli, 'audit', 'verify', '--database-url', url, ...args]).then(
        (r) => ({ code: 0, ...r }),
        (e: { code: number; stdout: string; stderr: string }) => e,
      );
    const ok = await run('--anchor', anchorFile);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toContain('events: 20 records, chain intact, head 20');
    expect(ok.stdout).toContain('decisions: 12 records in 1 node chain, intact');
    expect(ok.stdout).toContain('  node "n1": head 12 ');
    expect(ok.stdout).toContain('anchors: 1 records, chain intact, head 1 ');
    expect(ok.stderr).toContain('events: 20 of 20 (100%)'); // not a terminal: plain progress lines
    expect(JSON.parse(readFileSync(anchorFile, 'utf8'))).toMatchObject({ events: { at: 20 }, decisions: { at: 0 }, chains: { n1: { at: 12 } }, anchors: { at: 1 } });

    // An anchor file that is not one is refused, not silently replaced.
    const junk = join(mkdtempSync(join(tmpdir(), 'leash-anchor-')), 'junk.json');
    writeFileSync(junk, '{"events": {"at": "twenty"}}');
    const refused = await run('--anchor', junk);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('is not an anchor written by leash audit verify');
    expect(readFileSync(junk, 'utf8')).toBe('{"events": {"at": "twenty"}}');
    const good = JSON.parse(readFileSync(anchorFile, 'utf8')) as Anchor;
    for (const bad of [{ ...good, chains: { n1: { at: 'twelve', hash: 'x' } } }, { ...good, chains: [good.events] }, { ...good, chains: null }, { ...good, anchors: 'head' }]) {
      writeFileSync(junk, JSON.stringify(bad));
      const refusedChains = await run('--anchor', junk);
      expect(refusedChains.code).toBe(1);
      expect(refusedChains.stderr).toContain('is not an anchor written by leash audit verify');
    }

    await tamper(connection, ['delete from decisions where seq = 12']);
    const bad = await run('--anchor', anchorFile);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toContain('decisions (node "n1"): truncated at record 12');
    expect(JSON.parse(readFileSync(anchorFile, 'utf8'))).toMatchObject({ chains: { n1: { at: 12 } } }); // a failed verify leaves the anchor alone
    await connection.db.destroy();
  });
});
