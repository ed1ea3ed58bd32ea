// `npm run bench`: event-log append throughput and projection rebuild, on a durable
// PostgreSQL (fsync on) and on PGlite, each next to a baseline measured in the same run.
// Prints a table and rewrites BENCHMARKS.md. Not a test: nothing here asserts a time.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, totalmem, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { sql } from 'kysely';
import pg from 'pg';
import { RegistryView } from '../../src/registry/registry-view.ts';
import { connect, type Backend, type Connection } from '../../src/store/connect.ts';
import { EventStore, insertEvents, readAll, type StoredEvent } from '../../src/store/event-store.ts';
import { Follower } from '../../src/store/follower.ts';
import { eventHash, GENESIS_HASH } from '../../src/store/hash-chain.ts';
import { migrateToLatest } from '../../src/store/migrate.ts';
import { startPostgres } from '../support/servers.ts';
import { AGENTS, DOCUMENTS, makeReplayArchive, makeVerifyArchive } from './audit.ts';
import type { DecisionRow } from './decisions.ts';
import { benchHttp, benchHttpTwoNodes, financeBody, FRESH_TOKEN_BLOCKS, pct, type HttpResult } from './http.ts';
import { benchScale, type ScaleRun } from './scale.ts';
import { benchRevocation } from './revocation.ts';
import { benchTokens } from './tokens.ts';
import { createServer } from 'node:http';
import { fileURLToPath } from 'node:url';
import { benchApprovals } from './approvals.ts';
import { benchSetDelivery } from './ssf.ts';
import { benchContainment, benchHttpPair, benchMonitoringHttp, type MemoryRun, type ObserveRun } from './monitoring.ts';
import { BENCH_ADMIN } from './http.ts';
import { benchStalls, type Probe } from './stalls.ts';
import { benchFanout } from './fanout.ts';
import { benchCommitFloor, benchWriters, WARM_UP_DECISIONS, type WritersRun } from './writers.ts';

const CLIENTS = 32;
const APPEND_SECONDS = Number(process.env.BENCH_APPEND_SECONDS ?? 10);
const REBUILD_EVENTS = Number(process.env.BENCH_REBUILD_EVENTS ?? 1_000_000);
const PGLITE_REBUILD_EVENTS = Number(process.env.BENCH_PGLITE_REBUILD_EVENTS ?? 1_000_000);
const REBUILD_RUNS = 3;
/** Agents on the one node of the scale rows, and the decisions timed at each size. */
const SCALE_AGENTS = Number(process.env.BENCH_SCALE_AGENTS ?? 100_000);
const SCALE_DECISIONS = 2_000;
const HTTP_SECONDS = Number(process.env.BENCH_HTTP_SECONDS ?? 10);
const HTTP_CONNECTIONS = (process.env.BENCH_HTTP_CONNECTIONS ?? '4,8,16').split(',').map(Number);
/** The embedded default beside PostgreSQL (the target is at 16 and 32). */
const EMBEDDED_CONNECTIONS = (process.env.BENCH_EMBEDDED_CONNECTIONS ?? '16,32').split(',').map(Number);
/** Runs (BENCH_HTTP_SECONDS each) on a database just created, and as many on analyzed ones, alternating. */
const FRESH_DATABASE_ROUNDS = Number(process.env.BENCH_FRESH_DATABASE_ROUNDS ?? 4);
const REVOCATION_NODES = Number(process.env.BENCH_REVOCATION_NODES ?? 8);
const REVOCATIONS = Number(process.env.BENCH_REVOCATIONS ?? 1000);
/** Revokes of the same loop before the measured ones, on agents of their own (see "How to read"). */
const REVOCATION_WARM_UP = Number(process.env.BENCH_REVOCATION_WARMUP ?? 1000);
const REPLAY_DECISIONS = Number(process.env.BENCH_REPLAY_DECISIONS ?? 1_000_000);
const RAW_DECISIONS = 20_000;
const VERIFY_RECORDS = Number(process.env.BENCH_VERIFY_RECORDS ?? 10_000_000);
/** POST /oauth/token's connection counts (the target is at 16). */
const TOKEN_CONNECTIONS = (process.env.BENCH_TOKEN_CONNECTIONS ?? '16,8,4').split(',').map(Number);
const TOKEN_AGENTS = Number(process.env.BENCH_TOKEN_AGENTS ?? 32);
const FLOOR_SECONDS = Number(process.env.BENCH_FLOOR_SECONDS ?? 5);
/** Approval round trips measured (after 50 of warm-up), in 10 blocks alternating with the baseline's. */
const APPROVAL_ROUNDS = Number(process.env.BENCH_APPROVAL_ROUNDS ?? 500);
const SET_DELIVERIES = Number(process.env.BENCH_SET_DELIVERIES ?? 300);
/** Agents the monitor's memory is measured at (the target is at 100,000, the most a node keeps). */
const MONITOR_AGENTS = Number(process.env.BENCH_MONITOR_AGENTS ?? 100_000);
/** In-process decisions timed each way, with the detectors and without. */
const MONITOR_DECISIONS = Number(process.env.BENCH_MONITOR_DECISIONS ?? 3000);
/** Blocks each of LEASH_MONITORING=on and =off get over HTTP, alternating, half on each of two pairs of servers (BENCH_HTTP_SECONDS in all, each; even). */
const MONITOR_HTTP_BLOCKS = Number(process.env.BENCH_MONITOR_HTTP_BLOCKS ?? 4);
/** Agents driven to containment (deny_burst) on three nodes. */
const CONTAINMENT_AGENTS = Number(process.env.BENCH_CONTAINMENT_AGENTS ?? 30);
/** Policies in each set published while /healthz is probed, how many versions, and the decisions then replayed. */
const STALL_POLICIES = Number(process.env.BENCH_STALL_POLICIES ?? 3000);
const STALL_PUBLISHES = Number(process.env.BENCH_STALL_PUBLISHES ?? 10);
const STALL_DECISIONS = Number(process.env.BENCH_STALL_DECISIONS ?? 5440);
/** Node counts a revoke is fenced across (8 real nodes, the rest simulated), and revokes at each. */
const FANOUT_SIZES = (process.env.BENCH_FANOUT_SIZES ?? '8,64,256,1000').split(',').map(Number);
const FANOUT_REVOCATIONS = Number(process.env.BENCH_FANOUT_REVOCATIONS ?? 100);
/** `leash serve` processes writing the one decision log, one run per count (the first is the baseline). */
const WRITER_NODES = (process.env.BENCH_WRITER_NODES ?? '1,2,4,8').split(',').map(Number);
const COMMIT_FLOOR_COMMITS = 3_000;
/**
 * Sections to run (comma-separated); unset: all, and BENCHMARKS.md is rewritten. Set: only the
 * rows those sections produce are replaced in BENCHMARKS.md (see updateInPlace).
 */
const ONLY = process.env.BENCH_ONLY?.split(',').map((s) => s.trim()) ?? null;
const runs = (section: string) => ONLY === null || ONLY.includes(section);

interface Row {
  /** Which section made it (set by main). */
  section?: string;
  /** A stable prefix of `what` (no figure that an environment setting changes): how a partial run finds the row it replaces. Default: `what`. */
  key?: string;
  what: string;
  backend: string;
  figure: string;
  median: string;
  p99: string;
  baseline: string;
  target: string;
}
const rows: Row[] = [];

/** Decisions, one policy count per fresh process: no JIT or cedar-wasm state carried over. */
function benchDecisionsInProcesses(): void {
  let smallMedian = NaN; // the 10-policy median, for the scale target
  for (const [count, iterations] of [[10, 3000], [10_000, 200]] as const) {
    const out = execFileSync(process.execPath, ['--import', 'tsx', new URL('./decisions-only.ts', import.meta.url).pathname], {
      env: { ...process.env, BENCH_POLICY_COUNTS: String(count), BENCH_DECISIONS: String(iterations) },
      maxBuffer: 16 * 1024 * 1024,
    }).toString();
    const line = out.split('\n').find((l) => l.startsWith('ROWS '));
    if (!line) throw new Error(`decision benchmark printed no result:\n${out}`);
    for (const r of JSON.parse(line.slice(5)) as DecisionRow[]) {
      // The targets are measured where Cedar runs every time; the other rows show the memory.
      const targeted = r.kind === 'distinct';
      rows.push({
        key: `${r.what} (`,
        what: `${r.what} (${iterations} runs, in-process)`,
        backend: 'cedar-wasm',
        figure:
          count === 10 || !targeted
            ? `${(r.leash.median / r.raw.median).toFixed(1)}× raw`
            : `${(r.leash.median / smallMedian).toFixed(1)}× the 10-policy median (${(r.leash.median / r.raw.median).toPrecision(2)}× raw)`,
        median: `${(r.leash.median / 1000).toFixed(3)} ms`,
        p99: `${(r.leash.p99 / 1000).toFixed(3)} ms`,
        baseline: `raw statefulIsAuthorized, same request${r.kind === 'repeated' ? '' : 's'} and policies: median ${(r.raw.median / 1000).toFixed(3)} ms, p99 ${(r.raw.p99 / 1000).toFixed(3)} ms (with request validation: median ${(r.rawValidated.median / 1000).toFixed(3)} ms, p99 ${(r.rawValidated.p99 / 1000).toFixed(3)} ms)`,
        target: !targeted ? '(reported beside)' : count === 10 ? '≤ 1.5× raw' : '≤ 2× the 10-policy median',
      });
      if (count === 10 && targeted) smallMedian = r.leash.median;
      console.log(rows[rows.length - 1]);
    }
  }
}

const sorted = (xs: number[]) => [...xs].sort((a, b) => a - b);
const ms = (x: number) => `${x.toFixed(2)} ms`;
const fmt = (x: number) => Math.round(x).toLocaleString('en-US');

async function freshDatabase(adminUrl: string): Promise<Extract<Backend, { kind: 'postgres' }>> {
  const name = `bench_${Date.now()}_${Math.floor(Math.random() * 1e6)}`;
  const c = new pg.Client({ connectionString: adminUrl });
  await c.connect();
  await c.query(`create database ${name}`);
  await c.end();
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return { kind: 'postgres', url: url.toString(), poolSize: CLIENTS + 4 };
}

const payload = (i: number) => ({ reason: `benchmark event ${i}`, mode: 'immediate', tokensNotBefore: new Date(0).toISOString() });

/** 32 clients, each appending single events to its own stream with the expected version checked. */
async function appendRun(store: EventStore, seconds: number): Promise<{ perSecond: number; latencies: number[] }> {
  const latencies: number[] = [];
  const deadline = performance.now() + seconds * 1000;
  const run = `${Date.now()}`;
  const client = async (c: number) => {
    let version = 0;
    while (performance.now() < deadline) {
      const t = performance.now();
      const out = await store.append({ streamId: `agent/bench-${run}-${c}`, streamType: 'agent', expectedVersion: version, events: [{ type: 'AgentRevoked', data: payload(version) }], at: new Date(), metadata: { actor: 'bench' } });
      latencies.push(performance.now() - t);
      if (out.kind !== 'appended') throw new Error('unexpected duplicate');
      version = out.version;
    }
  };
  const start = performance.now();
  await Promise.all(Array.from({ length: CLIENTS }, (_, c) => client(c)));
  const elapsed = (performance.now() - start) / 1000;
  return { perSecond: latencies.length / elapsed, latencies: latencies.sort((a, b) => a - b) };
}

/** Baseline: the same 32 clients each doing a plain autocommit INSERT of the same row shape, no lock, no chain, no version check. */
async function rawInsertRun(connection: Connection, seconds: number): Promise<{ perSecond: number; latencies: number[] }> {
  await sql`create table if not exists bench_raw (id bigserial primary key, stream_id text, version int, type text, data jsonb, metadata jsonb, recorded_at timestamptz)`.execute(connection.db);
  const latencies: number[] = [];
  const deadline = performance.now() + seconds * 1000;
  const client = async (c: number) => {
    let version = 0;
    while (performance.now() < deadline) {
      const t = performance.now();
      await sql`insert into bench_raw (stream_id, version, type, data, metadata, recorded_at) values (${`s${c}`}, ${++version}, 'AgentRevoked', ${JSON.stringify(payload(version))}, '{}', now())`.execute(connection.db);
      latencies.push(performance.now() - t);
    }
  };
  const start = performance.now();
  await Promise.all(Array.from({ length: CLIENTS }, (_, c) => client(c)));
  const elapsed = (performance.now() - start) / 1000;
  return { perSecond: latencies.length / elapsed, latencies: latencies.sort((a, b) => a - b) };
}

async function benchAppends(backend: Backend, label: string, target: string): Promise<void> {
  const connection = await connect(backend);
  await migrateToLatest(connection.db);
  const store = new EventStore(connection.db);
  await appendRun(store, 1); // warm-up
  const baseline = await rawInsertRun(connection, APPEND_SECONDS);
  const leash = await appendRun(store, APPEND_SECONDS);
  await connection.db.destroy();
  rows.push({
    what: `append, ${CLIENTS} clients, 1 event each, version checked`,
    backend: label,
    figure: `${fmt(leash.perSecond)} events/s`,
    median: ms(pct(leash.latencies, 50)),
    p99: ms(pct(leash.latencies, 99)),
    baseline: `plain INSERT, same clients: ${fmt(baseline.perSecond)}/s, median ${ms(pct(baseline.latencies, 50))}, p99 ${ms(pct(baseline.latencies, 99))}`,
    target,
  });
  console.log(rows[rows.length - 1]);
}

const httpMs = (x: number) => `${x} ms`;
const line = (r: HttpResult) => `${fmt(r.perSecond)}/s, p50 ${httpMs(Math.round(r.p50 * 10) / 10)}, p99 ${httpMs(r.p99)}`;
/** "; CPU per <what>: server …" from a measured run (nothing when it was not measured). */
const cpuText = (r: HttpResult, what: string, postgres = true) =>
  r.cpu ? `; CPU per ${what}: server ${fmt(r.cpu.server)} µs${postgres ? `, Postgres ${fmt(r.cpu.postgres)} µs` : ''}, autocannon ${fmt(r.cpu.loadGenerator)} µs` : '';
const mustAnswer = (r: Pick<HttpResult, 'non2xx' | 'errors'>) => {
  if (r.non2xx > 0 || r.errors > 0) throw new Error(`HTTP benchmark: ${r.non2xx} non-2xx answers, ${r.errors} errors`);
};

/** AuthZEN decisions over HTTP from autocannon, next to GET /healthz on the same server under the same load. */
async function benchHttpRows(fresh: () => Backend | Promise<Backend>, label: string): Promise<void> {
  for (const connections of label === 'PostgreSQL' ? HTTP_CONNECTIONS : [HTTP_CONNECTIONS[HTTP_CONNECTIONS.length - 1]!]) {
    const backend = await fresh(); // each run seeds its own database
    const run = await benchHttp(backend.kind === 'postgres' ? { url: backend.url } : null, { seconds: HTTP_SECONDS, connections, freshTokens: HTTP_SECONDS * 8000 });
    if (!run.allowed) throw new Error('the HTTP benchmark request was not allowed');
    for (const [kind, r] of [['same token (cached)', run.cached], ['a fresh token on every request', run.fresh!]] as const) {
      mustAnswer(r);
      const fresh = r === run.fresh;
      const postgres = label === 'PostgreSQL';
      rows.push({
        key: `POST /access/v1/evaluation, ${kind}, ${connections} connections,`,
        what: `POST /access/v1/evaluation, ${kind}, ${connections} connections, ${HTTP_SECONDS} s in blocks alternating with the ${fresh ? 'cached' : 'fresh'} token's, decision log durable`,
        backend: label,
        figure: `${fmt(r.perSecond)} decisions/s${fresh ? ` (${((100 * r.perSecond) / run.cached.perSecond).toFixed(0)}% of the cached token's)` : ''}${cpuText(r, 'decision', postgres)}`,
        median: httpMs(Math.round(r.p50 * 10) / 10),
        p99: httpMs(r.p99),
        baseline: fresh
          ? `the same token on every request (cached), same server, in the blocks alternating with it: ${line(run.cached)}${cpuText(run.cached, 'decision', postgres)}`
          : `GET /healthz, same server and load: ${line(run.baseline)}`,
        target: !postgres ? '(reported beside)' : fresh ? (connections >= 8 ? '≥ 75% of the cached token\'s rate' : '(reported beside)') : '≥ 3,000/s with p99 ≤ 5 ms',
      });
      console.log(rows[rows.length - 1]);
    }
  }
}

/**
 * The embedded default as `npm start` runs it (PGlite, on a thread of its own) beside the same
 * node on PostgreSQL, at each connection count, cached token, the finance request with its seven
 * context entities. Each backend gets a database of its own.
 */
async function benchEmbeddedRows(postgres: () => Promise<Backend>, pglite: () => Backend): Promise<void> {
  for (const connections of EMBEDDED_CONNECTIONS) {
    const onPostgres = await benchHttp({ url: ((await postgres()) as { url: string }).url }, { seconds: HTTP_SECONDS, connections, freshTokens: 0, request: financeBody });
    const embedded = await benchHttp(null, { seconds: HTTP_SECONDS, connections, freshTokens: 0, request: financeBody });
    if (!onPostgres.allowed || !embedded.allowed) throw new Error('the embedded benchmark request was not allowed');
    mustAnswer(onPostgres.cached);
    mustAnswer(embedded.cached);
    const e = embedded.cached;
    const p = onPostgres.cached;
    rows.push({
      key: `POST /access/v1/evaluation, the embedded default (PGlite on its own thread), same token (cached), ${connections} connections,`,
      what: `POST /access/v1/evaluation, the embedded default (PGlite on its own thread), same token (cached), ${connections} connections, ${HTTP_SECONDS} s, the finance request (7 context entities), decision log durable`,
      backend: 'PGlite',
      figure: `${fmt(e.perSecond)} decisions/s (${Math.round((e.perSecond / p.perSecond) * 100)}% of PostgreSQL's)${cpuText(e, 'decision', false)}`,
      median: httpMs(e.p50),
      p99: httpMs(e.p99),
      baseline: `the same node on PostgreSQL, same load, same run: ${fmt(p.perSecond)}/s, p50 ${httpMs(p.p50)}, p99 ${httpMs(p.p99)}${cpuText(p, 'decision', true)}`,
      target: '≥ 50% of the baseline\'s rate, p99 ≤ 25 ms',
    });
    console.log(rows[rows.length - 1]);
  }
}

/**
 * A node on a database just created (as CREATE DATABASE leaves it: no statistics until
 * autovacuum's first ANALYZE, a minute or more away) beside the same on a database analyzed
 * right after the seeding, in alternating rounds, each on a database of its own.
 */
async function benchFreshDatabaseRow(postgres: () => Promise<{ url: string }>): Promise<void> {
  const connections = EMBEDDED_CONNECTIONS[EMBEDDED_CONNECTIONS.length - 1]!;
  const runs: { fresh: HttpResult[]; analyzed: HttpResult[] } = { fresh: [], analyzed: [] };
  const onDatabase = async <T>(url: string, f: (c: pg.Client) => Promise<T>): Promise<T> => {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      return await f(client);
    } finally {
      await client.end();
    }
  };
  // What the fresh databases' hot tables were read by, after each run: index scans, or rows read one by one.
  const reads = { indexScans: 0, rowsReadSequentially: 0, analyzedBy: 0 };
  for (let round = 0; round < FRESH_DATABASE_ROUNDS; round++) {
    // A B B A …: neither kind always goes first.
    for (const kind of round % 2 === 0 ? (['fresh', 'analyzed'] as const) : (['analyzed', 'fresh'] as const)) {
      const { url } = await postgres();
      const afterSeed = kind === 'analyzed' ? () => onDatabase(url, async (c) => void (await c.query('analyze'))) : undefined;
      const run = await benchHttp({ url }, { seconds: HTTP_SECONDS, connections, freshTokens: 0, request: financeBody, afterSeed });
      if (!run.allowed) throw new Error('the fresh-database benchmark request was not allowed');
      mustAnswer(run.cached);
      runs[kind].push(run.cached);
      if (kind === 'fresh') {
        const stats = await onDatabase(url, async (c) => (await c.query<{ idx: string; seq: string; analyzed: string }>(
          `select sum(idx_scan) as idx, sum(seq_tup_read) as seq, count(last_autoanalyze) as analyzed from pg_stat_user_tables where relname in ('decisions', 'client_assertion_jtis')`)).rows[0]!);
        reads.indexScans += Number(stats.idx);
        reads.rowsReadSequentially += Number(stats.seq);
        reads.analyzedBy += Number(stats.analyzed);
      }
    }
  }
  const mean = (rs: HttpResult[], f: (r: HttpResult) => number) => rs.reduce((n, r) => n + f(r), 0) / rs.length;
  const [fresh, analyzed] = [runs.fresh, runs.analyzed].map((rs) => ({ perSecond: mean(rs, (r) => r.perSecond), p50: mean(rs, (r) => r.p50), p99: Math.max(...rs.map((r) => r.p99)) }));
  const each = (rs: HttpResult[]) => rs.map((r) => fmt(r.perSecond)).join(', ');
  // Postgres's own CPU per decision says what the plans cost, whatever else the machine was doing.
  const cpu = (rs: HttpResult[]) => `CPU per decision: server ${fmt(mean(rs, (r) => r.cpu?.server ?? 0))} µs, Postgres ${fmt(mean(rs, (r) => r.cpu?.postgres ?? 0))} µs`;
  rows.push({
    key: 'POST /access/v1/evaluation, same token (cached), on a database just created (never analyzed)',
    what: `POST /access/v1/evaluation, same token (cached), on a database just created (never analyzed), ${connections} connections, ${FRESH_DATABASE_ROUNDS} runs of ${HTTP_SECONDS} s alternating with the baseline's, the finance request (7 context entities), decision log durable`,
    backend: 'PostgreSQL',
    figure: `${fmt(fresh!.perSecond)} decisions/s (${Math.round((fresh!.perSecond / analyzed!.perSecond) * 100)}% of the analyzed databases'; runs: ${each(runs.fresh)}); ${cpu(runs.fresh)}; the decision log and jti tables read by ${fmt(reads.indexScans)} index scans and ${fmt(reads.rowsReadSequentially)} rows read sequentially, ${reads.analyzedBy === 0 ? 'never analyzed meanwhile' : `analyzed by autovacuum in ${reads.analyzedBy} of the runs`}`,
    median: httpMs(Math.round(fresh!.p50 * 10) / 10),
    p99: httpMs(fresh!.p99),
    baseline: `the same on databases analyzed after the seeding, a new one each run: ${fmt(analyzed!.perSecond)}/s (runs: ${each(runs.analyzed)}); ${cpu(runs.analyzed)}; p50 ${httpMs(Math.round(analyzed!.p50 * 10) / 10)}, p99 ${httpMs(analyzed!.p99)}`,
    target: 'within 10% of the baseline',
  });
  console.log(rows[rows.length - 1]);
}

/** Two nodes deciding into one decision log, beside one node with all the connections. */
async function benchHttpTwoNodesRow(databaseUrl: string): Promise<void> {
  const connections = HTTP_CONNECTIONS[HTTP_CONNECTIONS.length - 1]!;
  const run = await benchHttpTwoNodes(databaseUrl, { seconds: HTTP_SECONDS, connections });
  for (const r of [...run.nodes, run.oneNode]) mustAnswer(r);
  const [a, b] = run.nodes;
  rows.push({
    key: 'POST /access/v1/evaluation, same token (cached), two `leash serve` nodes on one Postgres',
    what: `POST /access/v1/evaluation, same token (cached), two \`leash serve\` nodes on one Postgres (one decision log), ${connections / 2} connections each, ${HTTP_SECONDS} s`,
    backend: 'PostgreSQL',
    figure: `${fmt(a.perSecond + b.perSecond)} decisions/s (${fmt(a.perSecond)} + ${fmt(b.perSecond)})`,
    median: `${a.p50} / ${b.p50} ms`,
    p99: `${a.p99} / ${b.p99} ms`,
    baseline: `one of the nodes with all ${connections} connections: ${fmt(run.oneNode.perSecond)}/s, p50 ${run.oneNode.p50} ms, p99 ${run.oneNode.p99} ms`,
    target: '(reported beside)',
  });
  console.log(rows[rows.length - 1]);
}

/**
 * One row per node count: all the nodes writing the decision log at once, beside the first
 * count's figure; with the same total of connections split over the nodes, then with as many
 * for each node as the first count has (clients that grow with the nodes).
 */
async function benchWritersRows(adminUrl: string): Promise<void> {
  const connections = HTTP_CONNECTIONS[HTTP_CONNECTIONS.length - 1]!;
  const nodes = (n: number) => `${n} \`leash serve\` node${n === 1 ? '' : 's'}`;
  const cpu = (r: WritersRun) => `CPU per decision: leash ${fmt(r.cpu.leash)} µs (${r.nodes === 1 ? 'the server' : `the ${r.nodes} servers together`}), Postgres ${fmt(r.cpu.postgres)} µs, autocannon ${fmt(r.cpu.loadGenerator)} µs`;
  const database = async () => (await freshDatabase(adminUrl)).url;
  const commits = (r: WritersRun) => `about ${(1 / r.commitsPerDecision).toFixed(1)} decisions per Postgres commit`;
  for (const perNode of [false, true]) {
    const runs = await benchWriters(database, { nodeCounts: WRITER_NODES, seconds: HTTP_SECONDS, connections, perNode });
    for (const r of runs) mustAnswer(r);
    const first = runs[0]!;
    // With the connections split, each node has fewer of them: one node alone with as few, in
    // the same run, tells what that costs apart from the other nodes.
    const few = new Map<number, WritersRun>();
    if (!perNode) {
      for (const n of new Set(runs.filter((r) => r !== first).map((r) => r.connectionsPerNode))) {
        const [alone] = await benchWriters(database, { nodeCounts: [1], seconds: HTTP_SECONDS, connections: n });
        mustAnswer(alone!);
        few.set(n, alone!);
      }
    }
    const split = perNode ? `${connections} connections to each node` : `${connections} connections in all`;
    for (const r of runs) {
      const alone = r === first;
      const fewer = few.get(r.connectionsPerNode);
      rows.push({
        key: `POST /access/v1/evaluation, same token (cached), ${nodes(r.nodes)} writing the decision log on one Postgres (a chain of its own each), ${split}`,
        what: `POST /access/v1/evaluation, same token (cached), ${nodes(r.nodes)} writing the decision log on one Postgres (a chain of its own each), ${split}${perNode ? '' : ` (${r.connectionsPerNode} each)`}, ${HTTP_SECONDS} s after ${fmt(r.warmUpDecisions)} decisions of warm-up on each node, a database of its own for each node count, decision log durable`,
        backend: 'PostgreSQL',
        figure: `${fmt(r.perSecond)} decisions/s${alone ? '' : ` (${Math.round((100 * r.perSecond) / first.perSecond)}% of ${nodes(first.nodes)}'s; ${fmt(r.nodeRange[0])}–${fmt(r.nodeRange[1])}/s a node)`}; ${cpu(r)}; ${commits(r)}; to project: one core of Postgres takes ${fmt(1e6 / r.cpu.postgres)} decisions/s at ${fmt(r.cpu.postgres)} µs each, one core of leash ${fmt(1e6 / r.cpu.leash)} at ${fmt(r.cpu.leash)} µs each`,
        median: httpMs(Math.round(r.p50 * 10) / 10),
        p99: httpMs(r.p99),
        baseline: alone
          ? '(the baseline of the rows below)'
          : `${nodes(first.nodes)} with ${first.connectionsPerNode} connections, same run: ${fmt(first.perSecond)}/s, p50 ${httpMs(Math.round(first.p50 * 10) / 10)}, p99 ${httpMs(first.p99)}; ${cpu(first)}${fewer ? `; 1 node alone with ${fewer.connectionsPerNode} connections, same run: ${fmt(fewer.perSecond)}/s, ${cpu(fewer)}, ${commits(fewer)}` : ''}`,
        target: alone ? '(the baseline)' : `total not below the ${first.nodes}-node figure`,
      });
      console.log(rows[rows.length - 1]);
    }
  }
  const floor = await benchCommitFloor(await database(), COMMIT_FLOOR_COMMITS);
  rows.push({
    what: `one decision per commit: ${fmt(floor.commits)} decisions recorded one after another by one caller (each its own batch, as on a node with one request in flight), after 300 of warm-up, PostgreSQL's CPU per commit`,
    backend: 'PostgreSQL',
    figure: `${fmt(floor.log.postgres)} µs of Postgres CPU per decision (the decision log: chained, appended by leash_append_chain)`,
    median: `${floor.log.p50.toFixed(2)} ms`,
    p99: `${floor.log.p99.toFixed(2)} ms`,
    baseline: `the same rows by a plain one-row INSERT into the decisions table, same client: ${fmt(floor.insert.postgres)} µs, p50 ${floor.insert.p50.toFixed(2)} ms, p99 ${floor.insert.p99.toFixed(2)} ms`,
    target: '(reported beside: the floor under the writers rows)',
  });
  console.log(rows[rows.length - 1]);
}

/**
 * POST /oauth/token on PostgreSQL beside the crypto floor; then decisions with one token Leash
 * issued (cached) beside the agent's own cached token, on the same server in the same run.
 */
async function benchTokenRows(adminUrl: string): Promise<void> {
  const run = await benchTokens((await freshDatabase(adminUrl)).url, { seconds: HTTP_SECONDS, connections: TOKEN_CONNECTIONS, agents: TOKEN_AGENTS, floorSeconds: FLOOR_SECONDS });
  const { floor } = run;
  for (const { connections, result: r, presigned, presignSeconds } of run.runs) {
    rows.push({
      key: `POST /oauth/token, client credentials, ${connections} connections,`,
      what: `POST /oauth/token, client credentials, ${connections} connections, ${HTTP_SECONDS} s: ${run.agents} agents (pinned ES256 keys), a client assertion of its own per request (${fmt(presigned)} signed before the timed window, in ${presignSeconds.toFixed(1)} s, not measured), one leash:cedar detail; jti recorded durably`,
      backend: 'PostgreSQL',
      figure: `${fmt(r.perSecond)} tokens/s; ${r.non2xx} non-2xx, ${r.errors} errors${cpuText(r, 'token')}`,
      median: httpMs(r.p50),
      p99: httpMs(r.p99),
      baseline: `the crypto floor: jose ES256 SignJWT + jwtVerify of access-token claims, in-process, one at a time (${FLOOR_SECONDS} s, server not running): ${fmt(floor.perSecond)}/s, median ${floor.median.toFixed(3)} ms, p99 ${floor.p99.toFixed(3)} ms`,
      target: connections === 16 ? '≥ 1,000 tokens/s with p99 ≤ 20 ms' : '(reported beside)',
    });
    console.log(rows[rows.length - 1]);
  }
  for (const connections of HTTP_CONNECTIONS) {
    const backend = await freshDatabase(adminUrl);
    const http = await benchHttp({ url: backend.url }, { seconds: HTTP_SECONDS, connections, freshTokens: 0, leashToken: true });
    if (!http.allowed) throw new Error('the HTTP benchmark request was not allowed');
    const r = http.leashCached!;
    const g = http.grantCached!;
    for (const x of [r, g, http.cached]) mustAnswer(x);
    // Each beside the agent's own cached token, measured in the same alternating blocks.
    for (const [result, what] of [
      [r, 'a token Leash issued (cached)'],
      [g, 'a token acting for another human under her grant (cached; the grant found and checked on every decision)'],
    ] as const) {
      rows.push({
        key: `POST /access/v1/evaluation, ${what}, ${connections} connections,`,
        what: `POST /access/v1/evaluation, ${what}, ${connections} connections, ${HTTP_SECONDS} s, decision log durable`,
        backend: 'PostgreSQL',
        figure: `${fmt(result.perSecond)} decisions/s (${((100 * result.perSecond) / http.cached.perSecond).toFixed(0)}% of the baseline's)${cpuText(result, 'decision')}`,
        median: httpMs(result.p50),
        p99: httpMs(result.p99),
        baseline: `the agent's self-signed token for its owner (cached), same server, in blocks alternating with it: ${line(http.cached)}${cpuText(http.cached, 'decision')}`,
        target: 'within 10% of the baseline',
      });
      console.log(rows[rows.length - 1]);
    }
  }
}

/** Revokes through the fence on N nodes over NATS, beside N followers polling Postgres every 100 ms. */
async function benchRevocationRow(databaseUrl: string): Promise<void> {
  const run = await benchRevocation(databaseUrl, { nodes: REVOCATION_NODES, revocations: REVOCATIONS, warmUpRevocations: REVOCATION_WARM_UP, pollingRevocations: Math.min(200, REVOCATIONS) });
  const fenced = [...run.fenced].sort((a, b) => a - b);
  const warmUp = [...run.warmUp].sort((a, b) => a - b);
  const polling = [...run.polling].sort((a, b) => a - b);
  const all = run.fenced.length + run.warmUp.length;
  rows.push({
    key: 'revoke → response',
    what: `revoke → response with every node's confirmation (${run.nodes} \`leash serve\` nodes, nats-server, ${fmt(run.fenced.length)} revocations of agents warm on every node, after ${fmt(run.warmUp.length)} of warm-up)`,
    backend: 'PostgreSQL + NATS',
    figure: `${fmt(run.confirmedByAll)} of ${fmt(all)} (warm-up included) confirmed by all ${run.nodes}; ${run.allowsAfter} allows in ${fmt(run.checks)} requests after the response; server side, median: durable append ${ms(pct(sorted(run.timings.commit), 50))}, fence after it ${ms(pct(sorted(run.timings.fence), 50))}; GET /healthz round trip, same client: median ${ms(pct(sorted(run.roundTrip), 50))}${warmUp.length ? `; the warm-up revokes themselves: median ${ms(pct(warmUp, 50))}, p99 ${ms(pct(warmUp, 99))}` : ''}`,
    median: ms(pct(fenced, 50)),
    p99: ms(pct(fenced, 99)),
    baseline: `${run.nodes} nodes polling Postgres every 100 ms, commit → applied on all: median ${ms(pct(polling, 50))}, p99 ${ms(pct(polling, 99))} (${polling.length} revocations)`,
    target: 'p50 ≤ 3 ms, p99 ≤ 10 ms; zero allows after a confirmed revoke',
  });
  console.log(rows[rows.length - 1]);
}

/** One row per node count: a revoke fenced across 8 real nodes and simulated ones beside them. */
async function benchFanoutRows(adminUrl: string): Promise<void> {
  const run = await benchFanout((await freshDatabase(adminUrl)).url, { real: 8, sizes: FANOUT_SIZES, revocations: FANOUT_REVOCATIONS, warmUp: 50, simProcesses: 4 });
  const cpu = (c: { real: number; simulated: number; nats: number }) => `real nodes ${c.real.toFixed(1)}, simulated ${c.simulated.toFixed(1)}, nats-server ${c.nats.toFixed(1)}`;
  for (const r of run) {
    const fenced = sorted(r.fenced);
    const warm = sorted(r.warmUp);
    const missing = [...r.missing].sort((a, b) => b[1] - a[1]);
    rows.push({
      key: `revoke fenced across ${fmt(r.nodes)} nodes`,
      what: `revoke fenced across ${fmt(r.nodes)} nodes (8 \`leash serve\`${r.nodes > 8 ? `, ${fmt(r.nodes - 8)} simulated in 4 processes` : ''}; one nats-server, one Postgres), ${fmt(r.fenced.length)} revokes after 50 of warm-up`,
      backend: 'PostgreSQL + NATS',
      figure: `${r.exact} of ${r.fenced.length} answers counted all ${fmt(r.nodes)} nodes, none missing (${r.miscounted} miscounted; missing named: ${missing.length ? missing.slice(0, 5).map(([n, k]) => `${n} ×${k}`).join(', ') : 'none'}); CPU per revoke above idle, ms: ${cpu(r.cpu)}; idle (the heartbeats), ms of CPU per second: ${cpu(r.idle)}; during the revokes, idle work included: ${r.during.perRevoke.toFixed(1)} ms of CPU per revoke over these processes and the benchmark's, the ${availableParallelism()} cores ${Math.round(100 * r.during.busy)}% busy`,
      median: ms(pct(fenced, 50)),
      p99: ms(pct(fenced, 99)),
      baseline: `the warm-up revokes, same nodes: median ${ms(pct(warm, 50))}, p99 ${ms(pct(warm, 99))}`,
      target: r.nodes === 1000 ? 'p50 ≤ 10 ms, p99 ≤ 25 ms; every confirmation counted' : '(how the fence grows)',
    });
    console.log(rows[rows.length - 1]);
  }
}

/** A realistic log: per agent register, authorize, rotate, suspend, authorize, revoke, authorize, retire. */
function* lifecycleLog(total: number): Generator<StoredEvent[]> {
  let prevHash = GENESIS_HASH;
  let position = 0;
  const at = new Date('2026-11-01T00:00:00.000Z');
  const pins = { issuer: 'https://idp.example', audience: 'leash', algorithms: ['ES256'], clockSkewSeconds: 30, maxTokenLifetimeSeconds: 300, jwks: { keys: [{ kty: 'EC', crv: 'P-256', x: 'f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU', y: 'x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0', alg: 'ES256', kid: 'k1' }] } };
  const kinds: [string, (id: string) => Record<string, unknown>][] = [
    ['AgentRegistered', (id) => ({ id, owner: 'alice', purpose: 'benchmark agent', provenance: { model: 'm', modelVersion: '1', environment: 'production' }, trustScore: 50, groups: [], tags: ['bench'], credentials: pins, ceiling: null })],
    ['AgentAuthorized', () => ({ grants: [{ template: 'reader', values: {} }], tokensNotBefore: at.toISOString() })],
    ['CredentialRotated', () => ({ credentials: pins, tokensNotBefore: at.toISOString() })],
    ['AgentSuspended', () => ({ reason: 'anomaly' })],
    ['AgentAuthorized', () => ({ grants: [], tokensNotBefore: at.toISOString() })],
    ['AgentRevoked', () => ({ mode: 'immediate', reason: 'rotation drill', tokensNotBefore: at.toISOString() })],
    ['AgentAuthorized', () => ({ grants: [], tokensNotBefore: at.toISOString() })],
    ['AgentRetired', () => ({ reason: 'done' })],
  ];
  let batch: StoredEvent[] = [];
  for (let i = 0; i < total; i++) {
    const agent = Math.floor(i / kinds.length);
    const [type, data] = kinds[i % kinds.length]!;
    const id = `agent-${agent}`;
    const e = { position: ++position, streamId: `agent/${id}`, streamType: 'agent', version: (i % kinds.length) + 1, type, data: data(id), metadata: { actor: 'bench' }, at, idempotencyKey: null, prevHash };
    prevHash = eventHash(prevHash, e);
    batch.push({ ...e, hash: prevHash });
    if (batch.length === 5000) {
      yield batch;
      batch = [];
    }
  }
  if (batch.length) yield batch;
}

/** The scale rows: registry memory, cold start and decisions at SCALE_AGENTS beside 1,000 agents. */
function scaleRows(small: ScaleRun, large: ScaleRun): void {
  const n = fmt(large.agents);
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
  const s = (x: number) => (x < 1000 ? `${fmt(x)} ms` : `${(x / 1000).toFixed(1)} s`);
  const µs = (x: number) => `${(x / 1000).toFixed(3)} ms`;
  const common = { section: 'scale', backend: 'PostgreSQL' };
  rows.push({
    ...common,
    key: 'registry memory with',
    what: `registry memory with ${n} agents (each with a ceiling link of its own and two grants), folded from the log: V8 heap in use + array buffers after a forced GC`,
    figure: `${mib(large.registryBytes)} (${fmt(large.registryBytes / large.agents)} B per agent); resident set grew ${mib(large.rssGrowth)}`,
    median: '—', p99: '—',
    baseline: `1,000 agents, same run: ${mib(small.registryBytes)} (${fmt(small.registryBytes / small.agents)} B per agent)`,
    target: '≤ 1.5 GB',
  });
  rows.push({
    ...common,
    key: 'cold start with',
    what: `cold start with ${n} agents: the projection rebuilt from PostgreSQL (${fmt(2 * large.agents + 3)} events), then the policy set compiled`,
    figure: `${s(large.rebuildMs + large.compileMs)} (rebuild ${s(large.rebuildMs)}, compile ${s(large.compileMs)})`,
    median: '—', p99: '—',
    baseline: `1,000 agents, same run: ${s(small.rebuildMs + small.compileMs)} (rebuild ${s(small.rebuildMs)}, compile ${s(small.compileMs)})`,
    target: '≤ 60 s',
  });
  rows.push({
    ...common,
    key: 'agent decision with',
    what: `agent decision with ${n} agents on the node, each having decided once before (its token verified), the agent picked at random each time, a different document each time (Cedar runs every time), in process, ${fmt(SCALE_DECISIONS)} timed after ${fmt(5 * SCALE_DECISIONS)} picked the same way`,
    figure: `${(large.decision.median / small.decision.median).toFixed(1)}× the 1,000-agent median (tokens found verified in ${fmt(large.decision.tokenCacheHits)} of ${fmt(SCALE_DECISIONS)}); ${fmt(large.setsHeld)} sets prepared in cedar-wasm for the policy version (1,000 agents: ${fmt(small.setsHeld)}); the same agents again right after: median ${µs(large.seen.median)}, p99 ${µs(large.seen.p99)} (${(large.seen.median / small.seen.median).toFixed(1)}×); each with a token never seen before: median ${µs(large.fresh.median)}, p99 ${µs(large.fresh.p99)} (${(large.fresh.median / small.fresh.median).toFixed(1)}× the same at 1,000 agents)`,
    median: µs(large.decision.median),
    p99: µs(large.decision.p99),
    baseline: `1,000 agents, the same warm-up and picks, same run: median ${µs(small.decision.median)}, p99 ${µs(small.decision.p99)} (tokens found in ${fmt(small.decision.tokenCacheHits)}); again right after: median ${µs(small.seen.median)}; with new tokens: median ${µs(small.fresh.median)}, p99 ${µs(small.fresh.p99)}`,
    target: '≤ 1.5× the 1,000-agent median',
  });
  const { json, text } = large.prepare;
  rows.push({
    ...common,
    backend: 'cedar-wasm',
    key: 'preparing one agent',
    what: `preparing one agent's own set (the policies that can match it, its ceiling link and two grants) in cedar-wasm from the policies' JSON, as a decision does for an agent that links a forbid template (other agents share sets), ${fmt(SCALE_DECISIONS)} agents, in process`,
    figure: `${(text.median / json.median).toFixed(1)}× faster than from the text`,
    median: µs(json.median),
    p99: µs(json.p99),
    baseline: `the same sets from the policies' text, in alternating blocks of 50: median ${µs(text.median)}, p99 ${µs(text.p99)}`,
    target: '(reported beside)',
  });
  for (const r of rows.slice(-4)) console.log(r);
}

async function benchRebuild(backend: Backend, label: string, total: number, target: string): Promise<void> {
  const connection = await connect(backend);
  await migrateToLatest(connection.db);
  let t = performance.now();
  for (const batch of lifecycleLog(total)) await connection.db.transaction().execute((trx) => insertEvents(trx, batch));
  console.log(`${label}: loaded ${fmt(total)} events in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  if (backend.kind === 'postgres') await sql`vacuum analyze events`.execute(connection.db);

  const store = new EventStore(connection.db);
  const rebuild: number[] = [];
  const reads: number[] = [];
  let agents = 0;
  for (let run = 0; run < REBUILD_RUNS; run++) {
    // Baseline: the same paged reads with no fold.
    t = performance.now();
    let after = 0;
    for (;;) {
      const page = await readAll(connection.db, after, 5000);
      if (page.length === 0) break;
      after = page[page.length - 1]!.position;
    }
    reads.push((performance.now() - t) / 1000);

    t = performance.now();
    const view = new RegistryView();
    const follower = new Follower(store, view);
    await follower.sync();
    rebuild.push((performance.now() - t) / 1000);
    if (view.position !== total) throw new Error(`rebuild reached ${view.position}, not ${total}`);
    agents = view.agents.size;
  }
  await connection.db.destroy();
  rebuild.sort((a, b) => a - b);
  reads.sort((a, b) => a - b);
  rows.push({
    key: 'projection rebuild from',
    what: `projection rebuild from ${fmt(total)} events (${fmt(agents)} agents), ${REBUILD_RUNS} runs`,
    backend: label,
    figure: `${rebuild[1]!.toFixed(1)} s (${fmt(total / rebuild[1]!)} events/s)`,
    median: `${rebuild[1]!.toFixed(1)} s`,
    p99: `max ${rebuild[REBUILD_RUNS - 1]!.toFixed(1)} s`,
    baseline: `same paged reads, no fold: median ${reads[1]!.toFixed(1)} s`,
    target,
  });
  console.log(rows[rows.length - 1]);
}

function machine(): string {
  const cpu = cpus();
  let pgVersion = 'unknown';
  try {
    pgVersion = execFileSync('bash', ['-c', 'ls /usr/lib/postgresql | sort -n | tail -1']).toString().trim();
  } catch {
    // reported as unknown
  }
  return `${cpu.length} cores (${cpu[0]?.model ?? 'unknown cpu'}), ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}, PostgreSQL ${pgVersion} (fsync on, defaults), PGlite 0.4 (on disk)`;
}

/** A measured run over an archive in its own process (audit-run.ts); median of `times` runs by rate. */
type AuditRun = { count: number; seconds: number; perSecond: number; memory?: { asked: number; remembered: number } };
function auditRun(mode: string, dir: string, times: number, ...args: string[]): AuditRun {
  const results = Array.from({ length: times }, () => {
    const out = execFileSync(process.execPath, ['--import', 'tsx', new URL('./audit-run.ts', import.meta.url).pathname, mode, dir, ...args], { maxBuffer: 16 * 1024 * 1024 }).toString();
    const r = JSON.parse(out.trim().split('\n').at(-1)!) as Omit<AuditRun, 'perSecond'>;
    return { ...r, perSecond: r.count / r.seconds };
  });
  return sorted(results.map((r) => r.perSecond)).map((p) => results.find((r) => r.perSecond === p)!)[Math.floor(times / 2)]!;
}

async function benchApprovalRow(databaseUrl: string): Promise<void> {
  const run = await benchApprovals(databaseUrl, { rounds: APPROVAL_ROUNDS });
  const ms = (x: number) => `${x.toFixed(2)} ms`;
  rows.push({
    key: 'approval round trip over HTTP:',
    what: `approval round trip over HTTP: ${fmt(run.rounds)} payments over the limit, one at a time, each asked (APPROVAL_REQUIRED, the approval recorded), approved with the approver's own token (a recorded admin decision; fenced) and asked again (allowed, the approval spent); decision log durable`,
    backend: 'PostgreSQL',
    figure: `${fmt(run.roundTrip.perSecond)} round trips/s`,
    median: ms(run.roundTrip.median),
    p99: ms(run.roundTrip.p99),
    baseline: `three plain decisions in a row (a payment under the limit), same server, in blocks alternating with it: median ${ms(run.baseline.median)}, p99 ${ms(run.baseline.p99)}`,
    target: '≤ 20 ms median',
  });
  console.log(rows[rows.length - 1]);
}

async function benchOperationsRows(adminUrl: string): Promise<void> {
  const run = await benchSetDelivery((await freshDatabase(adminUrl)).url, fileURLToPath(new URL('../../cedar', import.meta.url)), SET_DELIVERIES);
  rows.push({
    key: 'security event delivery (push):',
    what: `security event delivery (push): ${fmt(run.sets)} agents revoked one at a time, each SET pushed to a receiver on loopback; from the commit of the revocation to the receiver holding the SET`,
    backend: 'PostgreSQL',
    figure: `${fmt(run.sets)} SETs`,
    median: ms(run.delivery.median),
    p99: ms(run.delivery.p99),
    baseline: `the outbound POST alone of a body the same size, same receiver, same run: median ${ms(run.baseline.median)}, p99 ${ms(run.baseline.p99)}`,
    target: '≤ 100 ms p99',
  });
  console.log(rows[rows.length - 1]);

  // Metrics kept and a push stream configured (its receiver answers 202), against neither.
  const receiver = createServer((req, res) => req.resume().on('end', () => res.writeHead(202).end()));
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  const endpoint = `http://127.0.0.1:${(receiver.address() as { port: number }).port}/events`;
  try {
    const connections = HTTP_CONNECTIONS[HTTP_CONNECTIONS.length - 1]!;
    const http = await benchHttpPair(async () => (await freshDatabase(adminUrl)).url, {
      seconds: HTTP_SECONDS, connections, blocks: MONITOR_HTTP_BLOCKS,
      env: (mode) => ({ LEASH_METRICS: mode, LEASH_ALLOW_PRIVATE_URLS: '1' }),
      prepare: async (url, mode) => {
        if (mode === 'off') return;
        const res = await fetch(`${url}/ssf/stream`, { method: 'POST', headers: { authorization: `Bearer ${BENCH_ADMIN}`, 'content-type': 'application/json' }, body: JSON.stringify({ delivery: { method: 'urn:ietf:rfc:8935', endpoint_url: endpoint } }) });
        if (res.status !== 201) throw new Error(`creating the push stream: ${res.status} ${await res.text()}`);
      },
    });
    if (!http.allowed) throw new Error('the HTTP benchmark request was not allowed');
    for (const r of [http.on, http.off]) mustAnswer(r);
    rows.push({
      key: 'POST /access/v1/evaluation, same token (cached), LEASH_METRICS=on and one push stream,',
      what: `POST /access/v1/evaluation, same token (cached), LEASH_METRICS=on and one push stream, ${connections} connections, ${http.blocks} blocks of ${http.blockSeconds} s alternating with LEASH_METRICS=off and no stream (two pairs of servers, each started first once), decision log durable`,
      backend: 'PostgreSQL',
      figure: `${fmt(http.on.perSecond)} decisions/s (${((100 * http.on.perSecond) / http.off.perSecond).toFixed(1)}% of the other's)${cpuText(http.on, 'decision')}`,
      median: httpMs(http.on.p50),
      p99: httpMs(http.on.p99),
      baseline: `LEASH_METRICS=off and no stream, a second server on a database of its own, same load, in the blocks alternating with it: ${line(http.off)}${cpuText(http.off, 'decision')}`,
      target: '≥ 95% of the baseline\'s rate',
    });
    console.log(rows[rows.length - 1]);
  } finally {
    await new Promise<void>((resolve) => receiver.close(() => resolve()));
  }
}

async function benchAuditRows(): Promise<void> {
  const root = mkdtempSync(join(tmpdir(), 'leash-bench-audit-'));
  try {
    const replayDir = join(root, 'replay');
    console.log(`audit: making ${fmt(REPLAY_DECISIONS)} recorded decisions (${AGENTS} agents, ${fmt(DOCUMENTS)} documents, two policy versions)…`);
    const made = await makeReplayArchive(replayDir, REPLAY_DECISIONS, (n) => n % 100_000 === 0 && console.log(`  ${fmt(n)}`));
    const replayed = auditRun('replay', replayDir, 1);
    const raw = auditRun('raw', replayDir, 3, String(Math.min(RAW_DECISIONS, REPLAY_DECISIONS)));
    rows.push({
      key: 'replay from archive files:',
      what: `replay from archive files: ${fmt(replayed.count)} decisions (${fmt(made.allowed)} allowed), ${AGENTS} agents, ${fmt(DOCUMENTS)} resources, 2 policy versions, every one re-decided and compared`,
      backend: 'archive (gzip NDJSON)',
      figure: `${fmt(replayed.perSecond)} decisions/s (${replayed.seconds.toFixed(1)} s; ${fmt(replayed.memory?.asked ?? 0)} combined Cedar calls needed, ${((100 * (replayed.memory?.remembered ?? 0)) / Math.max(1, replayed.memory?.asked ?? 0)).toFixed(1)}% answered from memory)`,
      median: '—', p99: '—',
      baseline: `one raw cedar-wasm statefulIsAuthorized per recorded request (no layers, no history): ${fmt(raw.perSecond)} requests/s`,
      target: '≥ 10,000 decisions/s',
    });
    console.log(rows[rows.length - 1]);

    const verifyDir = join(root, 'verify');
    console.log(`audit: making ${fmt(VERIFY_RECORDS)} chained records…`);
    makeVerifyArchive(verifyDir, VERIFY_RECORDS);
    const verified = auditRun('verify', verifyDir, 3);
    const read = auditRun('read', verifyDir, 3);
    rows.push({
      key: 'verify of archive files:',
      what: `verify of archive files: ${fmt(verified.count)} chained decision records (median of 3 runs)`,
      backend: 'archive (gzip NDJSON)',
      figure: `${fmt(verified.perSecond)} records/s (${verified.seconds.toFixed(1)} s)`,
      median: '—', p99: '—',
      baseline: `the same files through the same reader (decompress, split, parse each line's link), nothing checked: ${fmt(read.perSecond)} lines/s`,
      target: '≥ 300,000 records/s',
    });
    console.log(rows[rows.length - 1]);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

/** One in-process monitoring measurement in a fresh process (monitoring-run.ts): its RESULT line. */
function monitoringRun<T>(mode: 'memory' | 'decisions', n: number): T {
  const out = execFileSync(process.execPath, ['--expose-gc', '--import', 'tsx', new URL('./monitoring-run.ts', import.meta.url).pathname, mode, String(n)], { maxBuffer: 16 * 1024 * 1024 }).toString();
  const line = out.split('\n').find((l) => l.startsWith('RESULT '));
  if (!line) throw new Error(`monitoring benchmark (${mode}) printed no result:\n${out}`);
  return JSON.parse(line.slice(7)) as T;
}

/** The detectors' cost: memory per agent, in-process decisions, HTTP throughput, and containment on three nodes. */
async function benchMonitoringRows(adminUrl: string): Promise<void> {
  const memory = monitoringRun<MemoryRun>('memory', MONITOR_AGENTS);
  const bytes = (b: number) => `${fmt(b)} B`;
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
  const monitorBytes = memory.monitor.heap + memory.monitor.arrayBuffers;
  const registryBytes = memory.registry.heap + memory.registry.arrayBuffers;
  rows.push({
    key: 'memory per monitored agent:',
    what: `memory per monitored agent: a Monitor keeping ${fmt(memory.watched)} agents, each fed ${memory.decisionsPerAgent} decisions (4 actions, 20 documents in 4 folders, 4 denied) through monitor.observe; V8 heap used + array buffers after a forced GC`,
    backend: 'in-process',
    figure: `${bytes(monitorBytes / memory.agents)} per agent (${bytes(memory.monitor.heap / memory.agents)} heap + ${bytes(memory.monitor.arrayBuffers / memory.agents)} typed arrays), ${mib(monitorBytes)} in all; resident set grew ${bytes(memory.monitor.rss / memory.agents)} per agent; fed in ${memory.seconds.toFixed(1)} s`,
    median: '—', p99: '—',
    baseline: `the stand-in registry it watches, alone (${fmt(memory.agents)} active records in a Map), same process: ${mib(registryBytes)}, ${bytes(registryBytes / memory.agents)} per agent`,
    target: '≤ 4 KB (4,096 B) per agent at 100,000 agents',
  });
  console.log(rows[rows.length - 1]);

  const described = {
    distinct: 'a different document each time, each in a folder of its own (Cedar runs every time)',
    alike: 'a different document of one folder each time (one remembered answer serves them)',
  };
  const µs = (x: number) => `${(x / 1000).toFixed(3)} ms`;
  for (const r of monitoringRun<ObserveRun[]>('decisions', MONITOR_DECISIONS)) {
    rows.push({
      key: `agent decision with the detectors (monitor.observe after each), cached token, 10 policies, ${described[r.kind]}`,
      what: `agent decision with the detectors (monitor.observe after each), cached token, 10 policies, ${described[r.kind]} (${fmt(MONITOR_DECISIONS)} runs each way, in-process)`,
      backend: 'cedar-wasm',
      figure: `${r.with.median >= r.without.median ? '+' : ''}${((100 * (r.with.median - r.without.median)) / r.without.median).toFixed(1)}% on the median; observe itself: median ${µs(r.observe.median)}, p99 ${µs(r.observe.p99)}`,
      median: µs(r.with.median),
      p99: µs(r.with.p99),
      baseline: `the same decisions without the detectors, in blocks of 50 alternating with them: median ${µs(r.without.median)}, p99 ${µs(r.without.p99)}`,
      target: r.kind === 'distinct' ? '≤ +10% on the median' : '(reported beside)',
    });
    console.log(rows[rows.length - 1]);
  }

  const connections = HTTP_CONNECTIONS[HTTP_CONNECTIONS.length - 1]!;
  const http = await benchMonitoringHttp(async () => (await freshDatabase(adminUrl)).url, { seconds: HTTP_SECONDS, connections, blocks: MONITOR_HTTP_BLOCKS });
  if (!http.allowed) throw new Error('the HTTP benchmark request was not allowed');
  for (const r of [http.on, http.off]) mustAnswer(r);
  // The same design with the detectors on in both servers: how far apart it reads two servers that do not differ.
  const control = await benchMonitoringHttp(async () => (await freshDatabase(adminUrl)).url, { seconds: HTTP_SECONDS, connections, blocks: MONITOR_HTTP_BLOCKS, control: true });
  for (const r of [control.on, control.off]) mustAnswer(r);
  rows.push({
    key: 'POST /access/v1/evaluation, same token (cached), LEASH_MONITORING=on,',
    what: `POST /access/v1/evaluation, same token (cached), LEASH_MONITORING=on, ${connections} connections, ${http.blocks} blocks of ${http.blockSeconds} s alternating with =off (two pairs of servers, each setting started first once), decision log durable`,
    backend: 'PostgreSQL',
    figure: `${fmt(http.on.perSecond)} decisions/s (${((100 * http.on.perSecond) / http.off.perSecond).toFixed(1)}% of =off's)${cpuText(http.on, 'decision')}`,
    median: httpMs(http.on.p50),
    p99: httpMs(http.on.p99),
    baseline: `LEASH_MONITORING=off (no detector runs), a second server on a database of its own, same load, in the blocks alternating with it: ${line(http.off)}${cpuText(http.off, 'decision')}; control, the same with both servers =on: ${fmt(control.on.perSecond)}/s vs ${fmt(control.off.perSecond)}/s (${((100 * control.on.perSecond) / control.off.perSecond).toFixed(1)}%)${control.on.cpu && control.off.cpu ? `, server CPU per decision ${fmt(control.on.cpu.server)} vs ${fmt(control.off.cpu.server)} µs` : ''}`,
    target: '≥ 95% of the baseline\'s rate',
  });
  console.log(rows[rows.length - 1]);

  const c = await benchContainment((await freshDatabase(adminUrl)).url, { agents: CONTAINMENT_AGENTS });
  const contained = sorted(c.containment);
  const plain = sorted(c.plainDeny);
  const before = sorted(c.before);
  rows.push({
    key: 'detection → containment:',
    what: `detection → containment: the 20th deny in 60 s of each of ${fmt(c.agents)} agents (deny_burst, default: suspend), its 19 before spread over ${c.nodes} \`leash serve\` nodes (one Postgres, nats-server); the 20th answers once the suspension is fenced on every node`,
    backend: 'PostgreSQL + NATS',
    figure: `${c.contained} of ${c.agents} contained at their 20th deny (refused AGENT_NOT_ACTIVE by all ${c.nodes} nodes right after); ${c.nodesRefusing} of ${c.agents * c.nodes} nodes refusing; the 19 denies before, back to back: median ${ms(pct(before, 50))}, p99 ${ms(pct(before, 99))}`,
    median: ms(pct(contained, 50)),
    p99: ms(pct(contained, 99)),
    baseline: `a plain deny (another agent, below the threshold) on the same node after the same 100 ms pause: median ${ms(pct(plain, 50))}, p99 ${ms(pct(plain, 99))}`,
    target: 'median ≤ 50 ms, p99 ≤ 200 ms',
  });
  console.log(rows[rows.length - 1]);
}

/** GET /healthz, one at a time, while a heavy call runs: what it costs everyone else. */
async function benchStallRows(adminUrl: string): Promise<void> {
  const run = await benchStalls((await freshDatabase(adminUrl)).url, { policies: STALL_POLICIES, publishes: STALL_PUBLISHES, decisions: STALL_DECISIONS });
  const probeText = (p: Probe) => {
    const s = sorted(p.latencies);
    return { median: ms(pct(s, 50)), p99: ms(pct(s, 99)), max: ms(s[s.length - 1] ?? NaN), n: s.length };
  };
  const idle = probeText(run.idle);
  const baseline = `the same probe, same server, nothing else running: median ${idle.median}, p99 ${idle.p99}, max ${idle.max} (${fmt(idle.n)} probes)`;
  const target = '/healthz p99 < 50 ms';
  // Keyed by the call alone: the counts in the text follow the environment's settings.
  const during = (what: string, p: Probe, figure: string) => {
    const t = probeText(p);
    rows.push({ key: `GET /healthz one at a time while ${what.split(' ').slice(0, 2).join(' ')}`, what: `GET /healthz one at a time while ${what}`, backend: 'PostgreSQL', figure: `${figure}; /healthz max ${t.max} (${fmt(t.n)} probes)`, median: t.median, p99: t.p99, baseline, target });
    console.log(rows[rows.length - 1]);
  };
  const put = sorted(run.publish.putMs);
  const first = sorted(run.publish.firstDecisionMs);
  const mb = (xs: number[]) => xs.map((x) => Math.round(x)).join(' → ');
  during(`PUT /v1/policy-set publishes ${fmt(run.policies)}-policy sets, ${run.publish.putMs.length} versions one after another, each decided on right after`,
    run.publish, `PUT median ${ms(pct(put, 50))} (max ${ms(put[put.length - 1]!)}), the first decision after it median ${ms(pct(first, 50))} (max ${ms(first[first.length - 1]!)}); server memory after seeding, then after each version: RSS ${mb(run.rssMb)} MB, V8 heap in use ${mb(run.heapMb)} MB`);
  during(`POST /v1/audit/replay replays the decision log (${fmt(run.replay.decisions)} decisions over ${run.publish.putMs.length + 1} policy versions, ${run.replay.calls} call${run.replay.calls === 1 ? '' : 's'})`,
    run.replay, `${ms(run.replay.ms)} in all (${fmt(run.replay.decisions / (run.replay.ms / 1000))} decisions/s, the superseded versions compiled on first use)`);
  during(`POST /v1/audit/what-if decides the same log against a new ${fmt(run.policies)}-policy candidate`,
    run.whatIf, `${ms(run.whatIf.ms)} in all (${fmt(run.whatIf.decisions / (run.whatIf.ms / 1000))} decisions/s)`);
}

async function main(): Promise<void> {
  const started = new Date();
  const server = await startPostgres({ durable: true });
  const pgliteDirs: string[] = [];
  const pglite = (): Backend => {
    const dir = mkdtempSync(join(tmpdir(), 'leash-bench-'));
    pgliteDirs.push(dir);
    return { kind: 'pglite', dataDir: dir };
  };
  /** The sections that ran to the end, and those that failed (their rows dropped, the others kept). */
  const done: string[] = [];
  const failed: string[] = [];
  /** Runs a section if selected, and marks the rows it made as its own. A section that fails costs only its own rows. */
  const section = async (name: string, body: () => void | Promise<void>) => {
    if (!runs(name)) return;
    const from = rows.length;
    try {
      await body();
      checkKeys(name, rows.slice(from));
      for (const r of rows.slice(from)) r.section = name;
      done.push(name);
    } catch (err) {
      console.error(`section ${name} failed; its rows are left as they were:`, err);
      rows.splice(from);
      failed.push(name);
    }
  };
  const checkKeys = (name: string, made: Row[]) => {
    for (const r of made) {
      r.section = name;
      // A key that is not the start of its own text would never find the row it wrote, so each run would add another.
      if (r.key !== undefined && !r.what.startsWith(r.key)) throw new Error(`section ${name}: the row key ${JSON.stringify(r.key)} does not begin its measurement ${JSON.stringify(r.what)}`);
      // Nor may it begin another row's: a partial run would write one over the other.
      const other = rows.find((q) => q !== r && q.backend === r.backend && q.what.startsWith(r.key ?? r.what));
      if (other) throw new Error(`section ${name}: the row key ${JSON.stringify(r.key ?? r.what)} also begins ${JSON.stringify(other.what)}`);
    }
  };
  try {
    await section('decisions', benchDecisionsInProcesses);
    await section('http', async () => {
      await benchHttpRows(() => freshDatabase(server.url), 'PostgreSQL');
      await benchHttpTwoNodesRow((await freshDatabase(server.url)).url);
      await benchHttpRows(pglite, 'PGlite');
    });
    await section('writers', () => benchWritersRows(server.url));
    await section('embedded', () => benchEmbeddedRows(() => freshDatabase(server.url), pglite));
    // A server of its own: the databases earlier sections left on the shared one (autovacuum
    // working through them) weighed on one kind of run more than the other in a full run.
    await section('fresh-database', async () => {
      const own = await startPostgres({ durable: true });
      try {
        await benchFreshDatabaseRow(() => freshDatabase(own.url));
      } finally {
        await own.stop();
      }
    });
    await section('stalls', () => benchStallRows(server.url));
    await section('tokens', () => benchTokenRows(server.url));
    await section('revocation', async () => benchRevocationRow((await freshDatabase(server.url)).url));
    await section('fanout', () => benchFanoutRows(server.url));
    await section('approvals', async () => benchApprovalRow((await freshDatabase(server.url)).url));
    await section('monitoring', () => benchMonitoringRows(server.url));
    await section('operations', () => benchOperationsRows(server.url));
    await section('audit', benchAuditRows);
    await section('appends', async () => {
      await benchAppends(await freshDatabase(server.url), 'PostgreSQL', '≥ 2,000 events/s');
      await benchAppends(pglite(), 'PGlite', '(reported beside)');
    });
    await section('scale', async () => {
      const small = await benchScale(1_000, (await freshDatabase(server.url)).url, SCALE_DECISIONS, console.log);
      const large = await benchScale(SCALE_AGENTS, (await freshDatabase(server.url)).url, SCALE_DECISIONS, console.log);
      scaleRows(small, large);
    });
    await section('rebuild', async () => {
      await benchRebuild(await freshDatabase(server.url), 'PostgreSQL', REBUILD_EVENTS, '≤ 20 s');
      await benchRebuild(pglite(), 'PGlite', PGLITE_REBUILD_EVENTS, '(reported beside)');
    });
  } finally {
    await server.stop();
    for (const d of pgliteDirs) rmSync(d, { recursive: true, force: true });
  }

  const table = [TABLE_HEADER, ...rows.map(tableLine)].join('\n');
  console.log(`\n${table}\n`);
  const file = new URL('../../BENCHMARKS.md', import.meta.url);
  const day = started.toISOString().slice(0, 10);
  if (failed.length > 0) process.exitCode = 1;
  if (ONLY !== null || failed.length > 0) {
    if (done.length === 0) return console.error(`every section failed (${failed.join(', ')}): BENCHMARKS.md is unchanged`);
    writeFileSync(file, updateInPlace(readFileSync(file, 'utf8'), done, day));
    return console.log(`BENCH_ONLY=${done.join(',')}: replaced ${rows.length} rows of BENCHMARKS.md (and their sections' "How to read it" entries)${failed.length ? `; failed, left as they were: ${failed.join(', ')}` : ''}`);
  }
  writeFileSync(
    file,
    `# Benchmarks

Written by \`npm run bench\` (test/bench/run.ts) on ${day}.
Machine: ${machine()}.

${table}

${howToRead()}`,
  );
}

const TABLE_HEADER = '| measurement | backend | result | median | p99 | baseline (same run) | target |\n|---|---|---|---|---|---|---|';
const tableLine = (r: Row) => `| ${r.what} | ${r.backend} | ${r.figure} | ${r.median} | ${r.p99} | ${r.baseline} | ${r.target} |`;

/** The entries of "How to read it" that explain each section's rows, by their bold names. */
const EXPLAINED: Record<string, string[]> = {
  decisions: ['agent decision'], http: ['HTTP', 'two nodes'], writers: ['writers', 'one decision per commit'], embedded: ['embedded default'], 'fresh-database': ['fresh database'], stalls: ['event loop'], tokens: ['tokens'], approvals: ['approval round trip'], operations: ['security event delivery', 'metrics and a push stream over HTTP'], monitoring: ['monitor memory', 'detectors in process', 'detectors over HTTP', 'containment'], revocation: ['revoke'], fanout: ['fan-out'], audit: ['replay', 'verify'], appends: ['append'], rebuild: ['projection rebuild'], scale: ['scale'],
};

/** A markdown list's entries: each from its `- ` line up to the next one (or the end). */
function entries(lines: string[]): { name: string | null; start: number; end: number }[] {
  const out: { name: string | null; start: number; end: number }[] = [];
  lines.forEach((l, i) => {
    if (!l.startsWith('- ')) return;
    if (out.length) out[out.length - 1]!.end = i;
    out.push({ name: /^- \*\*(.+?)\*\*/.exec(l)?.[1] ?? null, start: i, end: lines.length });
  });
  const last = out[out.length - 1];
  if (last) while (last.end > last.start + 1 && lines[last.end - 1]!.trim() === '') last.end--;
  return out;
}

/**
 * BENCHMARKS.md after a partial run (BENCH_ONLY): each row this run made replaces the row whose
 * measurement starts with its key on the same backend, or, new, goes after its section's last
 * row (else at the table's end); every other row stays as it was. The selected sections' "How
 * to read it" entries are replaced (or added before the last entry), and a line under the
 * header says which rows were re-measured when.
 */
function updateInPlace(text: string, sections: string[], day: string): string {
  const lines = text.split('\n');
  const headerAt = lines.findIndex((l) => l.startsWith('| measurement |'));
  if (headerAt < 0) throw new Error('BENCHMARKS.md has no results table to update');
  let endAt = headerAt;
  while (lines[endAt + 1]?.startsWith('|')) endAt++;
  const table = lines.slice(headerAt + 2, endAt + 1);
  const cells = (l: string) => l.split(' | ');
  const lastOf = new Map<string, number>();
  for (const r of rows) {
    const key = r.key ?? r.what;
    const matches = (l: string) => l.slice(2).startsWith(key) && cells(l)[1] === r.backend;
    const at = table.findIndex(matches);
    if (at >= 0) {
      table[at] = tableLine(r);
      // Older copies of the same row (left by a run whose key did not match) go.
      for (let i = table.length - 1; i > at; i--) if (matches(table[i]!)) {
        table.splice(i, 1);
        for (const [s, j] of lastOf) if (j > i) lastOf.set(s, j - 1);
      }
      lastOf.set(r.section!, at);
    } else {
      const after = lastOf.get(r.section!) ?? table.length - 1;
      table.splice(after + 1, 0, tableLine(r));
      for (const [s, i] of lastOf) if (i > after) lastOf.set(s, i + 1);
      lastOf.set(r.section!, after + 1);
    }
  }
  const before = lines.slice(0, headerAt);
  const after = lines.slice(endAt + 1);

  // The header: one line per selection, replaced by the next run of the same selection.
  const selection = sections.join(',');
  const mark = `Re-measured with \`BENCH_ONLY=${selection}\``;
  const names = [...new Set(rows.map((r) => r.key ?? r.what))].map((k) => `"${k.replace(/[,:( ]+$/, '')}"`).join('; ');
  const machineNow = machine();
  const note = `${mark} on ${day}: the ${rows.length} row${rows.length === 1 ? '' : 's'} ${names}${before.some((l) => l === `Machine: ${machineNow}.`) ? '' : ` (on ${machineNow})`}; every other row is from the run the lines above name.`;
  const noteAt = before.findIndex((l) => l.startsWith(`${mark} on `));
  if (noteAt >= 0) before[noteAt] = note;
  else {
    const machineAt = before.findIndex((l) => l.startsWith('Machine: '));
    before.splice(machineAt + 1, 0, '', note);
  }

  // How to read it: the selected sections' entries as this code writes them.
  const fresh = howToRead().split('\n');
  const freshEntries = entries(fresh);
  for (const name of sections.flatMap((s) => EXPLAINED[s] ?? [])) {
    const made = freshEntries.find((e) => e.name === name);
    if (!made) continue;
    const replacement = fresh.slice(made.start, made.end);
    const old = entries(after);
    const found = old.find((e) => e.name === name);
    if (found) after.splice(found.start, found.end - found.start, ...replacement);
    else {
      const last = old[old.length - 1];
      after.splice(last ? last.start : after.length, 0, ...replacement);
    }
  }
  return [...before, TABLE_HEADER, ...table, ...after].join('\n');
}

function howToRead(): string {
  return `How to read it:
- **append**: ${CLIENTS} concurrent clients for ${APPEND_SECONDS} s, each appending one lifecycle event at a time
  to its own agent stream with the expected version checked; latency is per append, from
  call to durable commit. Leash's appends are group-committed under one advisory lock (gap-free
  positions, one hash chain); the baseline is a plain autocommit INSERT of the same row shape
  with none of that, from the same clients, on the same server. What bounds Leash here: a node
  has one batch in flight, and the batch holds the append lock through its durable commit, so
  throughput is batch size over that commit time; the baseline's concurrent commits share
  PostgreSQL's own WAL flushes instead. A node that knows the log's head appends a batch in one
  statement (lock, version check and insert), so a batch costs one round trip and one commit.
- **scale**: one node's registry with 1,000 and with ${fmt(SCALE_AGENTS)} agents, each with a
  ceiling link of its own (a folder of its own) and two grants (two more folders), in process.
  Memory: V8 heap in use plus array buffers after a forced GC, before and after the registry is
  rebuilt. Cold start: the log (two events per agent) written to an empty PostgreSQL database,
  then read back into a new registry view (the projection rebuild) and the policy set compiled
  (its schema prepared afresh). Decisions: the agent's own token, all five layers, a different
  document each time (Cedar runs every time). First every agent decides once, 64 at a time in
  a random order (a node that has served them: each token verified once in its lifetime);
  then ${fmt(SCALE_DECISIONS)} decisions for agents picked at random are timed after ${fmt(5 * SCALE_DECISIONS)}
  untimed ones picked the same way (the node's bounded caches in the state such traffic leaves
  them), then the same agents again (each having just decided), then the same agents each with
  a token never seen before. The baseline is the same for 1,000 agents in the same run.
  Preparing: an agent's own set (the policies, its ceiling link and two grants), as a decision
  prepares one for an agent that links a forbid template (the others share sets), given to
  cedar-wasm as the policies' JSON beside the same sets given as text, in alternating blocks
  of 50.
- **projection rebuild**: a node starting cold folds the whole log into its registry view
  (keyset pages of 5,000 with the late-commit guard). The log is 8 lifecycle events per agent.
  Median and max of ${REBUILD_RUNS} runs; the baseline is the same reads without the fold.
- **agent decision**: all five layers (token from the verified-token cache, details, ceiling
  with its template link, agent, human) for one request, in process, against one raw
  cedar-wasm \`statefulIsAuthorized\` call on the same request and the same ordinary policies,
  in alternating blocks of 50. Leash decides the ceiling, agent and human layers in one Cedar
  call on the agent's own policy set, sliced to the policies whose principal scope can match
  the agent or its human (src/authz/combined.ts). Each policy count runs in its own process.
  The targets are measured with a different document in every request, each in a folder of
  its own, so no two requests look alike and Cedar runs every time. Two more rows show Leash's
  memory of Cedar answers: documents of one folder (no policy names them, so one remembered
  answer serves them all) and the same request repeated (token and lifecycle checks still run).
- **HTTP**: \`leash serve\` runs in its own process (one Node process, as \`npm start\` runs it)
  and autocannon in the benchmark's, on the same machine, with N keep-alive connections each
  sending the next request when the last is answered. Every decision is recorded in the
  decision log (group-committed, durable) before it is answered. "Fresh token" signs a
  different ES256 token for every request, so each is verified from scratch; it runs in
  ${FRESH_TOKEN_BLOCKS} blocks alternating with the cached token's, each block with tokens never sent
  before, and autocannon builds every request of both as it sends it, so that what the load
  generator spends per request, on the same 2 cores, is the same for both and the difference is
  the server's. Its baseline is that cached run; the cached row's is GET /healthz on the same
  server under the same load: what the HTTP stack alone sustains.
  autocannon reports latency in whole milliseconds. "CPU per decision" is each side's CPU time
  (user + system, from /proc) over the run divided by the decisions answered: the server process
  (all its threads: WebCrypto verifies ES256 on libuv's pool), the PostgreSQL processes, and
  the benchmark's own process (autocannon). Postgres counts the benchmark's own server only
  (its postmaster and the backends it forked), not another one that shares the machine. Their sum against the 2 cores' 2,000,000 µs a second
  is the most this machine can answer, before any waiting.
- **two nodes**: two \`leash serve\` processes on the same PostgreSQL, each with half the
  connections, every decision of both recorded in the one hash-chained decision log; the
  baseline is one of them with all the connections while the other idles. Both share the same
  2 cores, so this shows what a second writer costs the log, not what a second machine adds. A
  node that writes alone chains its batches itself; with another writer, each batch is chained
  onto the head inside Postgres (one round trip either way, never a refused append).
- **writers**: the decision log with many writers. For each of ${WRITER_NODES.join(', ')} nodes, that many
  \`leash serve\` processes on the same PostgreSQL server, all on one database, a new database
  for each node count (so every count starts from an empty log). The first node is seeded and
  the others start after it; every node must allow the benchmark request before the load. The
  HTTP rows' cached-token decision comes from autocannon (in the benchmark's process), first with
  the same total of ${HTTP_CONNECTIONS[HTTP_CONNECTIONS.length - 1]} connections split evenly over the nodes, then with ${HTTP_CONNECTIONS[HTTP_CONNECTIONS.length - 1]} to each node
  (clients that grow with the nodes, as when nodes are added for more of them); all of them loaded at once after
  a warm-up in which every node answers ${fmt(WARM_UP_DECISIONS)} decisions (a node's code is optimised by the
  decisions it has run, not by the time it ran). With the connections split, each split row's baseline also
  gives one node alone with as few connections as each node had, in the same run: what so few
  requests in flight cost a node by itself, apart from the other nodes. Every
  decision of every node is recorded durably in the decision log before it is answered, each
  node group-committing its own batches into a hash chain of its own. The figure is the nodes' sum (with the least and
  the most one node answered), p50 the nodes' mean, p99 the worst node's; each row is compared
  with the first node count's total in the same run. All of it shares the 2 cores, so adding
  nodes here cannot add much: the question is whether the total holds. CPU per decision is as
  for the HTTP rows, leash being the nodes' processes together; Postgres' backends are sampled
  every 0.5 s, so one that a node's pool closes meanwhile (idle for 10 s) still counts up to its
  last sample. Decisions per commit come from PostgreSQL's count of committed transactions (all
  of the database's, flushed to its statistics about once a second, so approximate): the fewer
  connections a node has, the fewer decisions wait together for its next batch, and at one per
  commit each decision pays a commit and a round trip of its own. To project onto a bigger machine: a core of PostgreSQL
  takes about one million divided by its µs per decision, and a core of leash nodes one million
  divided by theirs, as long as nothing the nodes share in the log makes them wait for each
  other.
- **one decision per commit**: the floor under the writers rows. One caller records
  ${fmt(COMMIT_FLOOR_COMMITS)} decisions through the decision log one after another, so every one is a batch and
  a durable commit of its own, as on a node with one request in flight; the baseline inserts the
  same rows into the same table with a plain one-row INSERT (no function, no chain). The figure is
  the PostgreSQL processes' CPU per commit; the latencies are the caller's, per record.
- **embedded default**: \`leash serve\` as \`npm start\` runs it, on PGlite (PostgreSQL compiled to
  WebAssembly) in a data directory of its own, beside the same node on the PostgreSQL server,
  one after the other at each connection count, same load as **HTTP** with a request that
  carries seven context entities (the document, its folder chain up to the company's, and three
  more documents and folders beside it). PGlite runs on a thread of its own
  (src/store/pglite-thread.ts): the HTTP thread only sends it statements and takes their answers,
  and decisions that arrive while a batch is being written go in the next one. Its CPU is in
  the server's figure (one process); the PostgreSQL baseline's is split between the two.
- **event loop**: a node has one thread for HTTP and decisions, so a call that holds it holds
  every other caller. This process asks \`GET /healthz\` one request at a time, 2 ms apart,
  while the server publishes ${STALL_POLICIES.toLocaleString('en-US')}-policy sets one after another (each a set of its own,
  each followed by a decision), then while it replays its whole decision log over HTTP (the
  benchmark's own decisions, made under the last version, and one after each publish, under
  the earlier ones), then while it decides the log against another large candidate set; the
  baseline is the same probe with nothing else running. A set is parsed and validated on a
  thread of its own (src/authz/policy-compiler.ts), read back in parts, and prepared on the
  HTTP thread in slices by principal on first use (src/authz/slices.ts); replay and what-if
  give other callers a turn every 2 ms. A replay's time goes mostly to checking the
  superseded versions it meets (off the thread, one after another). Memory is the server's
  resident set and its V8 heap in use after each version: a superseded version's prepared
  slices are given back to cedar-wasm's slots (src/authz/preparsed-slots.ts).
- **fan-out**: a revoke fenced across many nodes. Eight \`leash serve\` processes and, beside
  them, simulated nodes (test/bench/fanout-sim.ts), 250 to a process, each with a NATS
  connection of its own: they apply each committed batch that continues their fold (reading a
  gap from the log), confirm it to the committing node, and send heartbeats every second with a
  staleness bound of 3 s, as a node so configured would; they decide nothing, and the ones in a
  process share the parsing of a batch they each receive. Revokes go one at a time through each
  real node in turn; every answer must count all the nodes running and name none missing. The
  CPU columns take what the processes spend idle (measured for 3 s before the revokes and 3 s after: mostly
  heartbeats, which every real node hears from every other) from what they spend during the
  revokes (a figure below zero means the cores were so busy during the revokes that the idle
  work itself got less time than when measured alone). The last figure is everything these
  processes and the benchmark's own spent while the revokes ran, idle work included, per revoke
  and as a share of the machine's cores over that time: where the cores are nearly all busy,
  the fence waits for CPU, and a median below that CPU divided by the cores cannot happen here.
  Everything shares the two cores, so past a few hundred nodes the fence waits for
  CPU: the figures say how much each part takes, which is what a deployment with a core per
  node would not share. With 50 revokes of warm-up (the **revoke** row warms up with 1,000),
  the eight real nodes alone read slower here than there. A fence costs the committing node one check per confirmation
  (src/cluster/cluster.ts), not one per node for each.
- **fresh database**: PostgreSQL keeps no statistics of a table until ANALYZE runs (autovacuum's
  first pass is a minute or more after the writes begin), and plans made without them can be
  far from those made with them. The row runs the **embedded default**'s load on PostgreSQL
  twice in each round: on a database just created, and on one analyzed right after the seeding
  (before the warm-up), each on a database of its own, the rounds alternating, on a PostgreSQL
  server of its own (in a full run on the shared one, the databases earlier sections left there
  once slowed the analyzed runs to half: Postgres spent 338 µs a decision on them against 60 µs
  on the fresh ones, and 60 µs on both when the section ran alone). Leash's hot
  statements (the appends and the jti claims) are one-row or one-batch statements that
  reach their rows by primary key or by the head's position whatever the statistics say.
- **tokens**: \`leash serve\` on PostgreSQL (one Node process) issues tokens at POST /oauth/token
  to ${TOKEN_AGENTS} agents, each with its own ES256 key pinned inline, from autocannon with N keep-alive
  connections. Every request carries a client assertion of its own (iss = sub = the agent, aud =
  the token endpoint, exp 60 s ahead, a fresh jti) and asks for one \`leash:cedar\` detail within
  the agent's ceiling; the benchmark signs all of them before the timed window (the count and the
  time are in the measurement), so its own signing is not measured and autocannon only sends
  them. Per token the server verifies the assertion against the agent's pins, records its jti in
  PostgreSQL (durable: the jtis of concurrent requests go in one statement, one commit, a group
  commit; each answer waits for its own row), checks the detail against the ceiling
  (Cedar) and signs the access token (ES256, Node's WebCrypto, as jose uses it). Every answer
  must be a 200: non-2xx answers are counted in the result. CPU per token as for the HTTP rows.
  The baseline is the crypto floor: jose signing and then verifying such a token, one pair at a
  time, in the benchmark's process with no server running; the server does that pair for every
  token, so one core doing nothing else reaches about that rate.
  What bounds the server here is its one JavaScript thread, busy about 90–96% through the timed
  window in a \`--cpu-prof\` profile of 2026-12-01 after the jtis were group-committed
  (BENCH_SERVER_NODE_ARGS; on a machine shared with other work): about 28% of its samples in
  Node's WebCrypto sign and verify (in Node 20 most of an ECDSA call runs on the calling thread,
  not on libuv's pool: 60–170 µs of it per call, the verify about twice the sign) and 12% in jose
  around them, 9% in socket writes (the jti statements' about 6%, down from 11% with one INSERT
  per token; the responses' about 3%), the ceiling check (with its remembered verdicts) about 6%;
  the rest is HTTP, the form, fastify and GC.
  "A token Leash issued (cached)": the HTTP rows' cached-token decision with one token from POST
  /oauth/token (verified against this node's published key once, then from the verified-token
  cache), on the same server as the same request with the agent's own token (the baseline), the
  two in alternating blocks (own, Leash's, carol's, own, …), so that what else the machine runs
  meanwhile falls on all alike: the rate over the blocks, the blocks' mean p50 and worst p99.
  "A token acting for another human under her grant": a token from the grant's token exchange
  (sub carol, act the agent, owned by alice), decided with carol as the human layer after the
  token layer found carol's grant in force and checked that it covers the token's details.
- **approval round trip**: \`leash serve\` on PostgreSQL with people signing in (a local key pair
  as the identity provider), the finance example of \`cedar/\`; one client in the benchmark's
  process does, one after the other, what a PEP and the approver do for a payment over 10,000:
  the decision (denied, APPROVAL_REQUIRED: the decision recorded and the approval appended to its
  own stream), alice's approve with her own token (her token verified, the admin decision made
  and recorded, ApprovalGranted appended, fenced), and the decision again with \`approvalId\`
  (allowed: ApprovalUsed appended, then the decision recorded). Latency is per round trip of the
  three calls. The baseline is three plain decisions in a row (a payment under the limit, allowed),
  so the difference is what the approval costs beyond three round trips; the two in ${APPROVAL_ROUNDS / 10}-round
  blocks alternating, after 50 of each to warm up.
- **security event delivery**: one node in the benchmark's process on PostgreSQL, the example
  policies of \`cedar/\`, one push stream (RFC 8935) to a node:http receiver on loopback that
  answers 202. ${fmt(SET_DELIVERIES)} agents (after 20 to warm up) are revoked one at a time, the next once the
  previous SET has arrived; each latency runs from the node's own commit of the \`AgentRevoked\`
  event (its commit listener, the moment the event is durable) to the receiver having read the
  SET: the delivery loop woken, the log read from the stream's cursor, the SET signed (ES256) and
  POSTed, the cursor moved after the 202 counts for the next one, not this one. The baseline is
  the outbound POST alone (the same rules: address vetting, a fresh connection) of a body the size
  of a SET to the same receiver, in the same run.
- **metrics and a push stream over HTTP**: the design of the detectors' HTTP row (above): two
  \`leash serve\` processes on the same PostgreSQL, each on a database of its own, the same
  cached-token decision load on each in alternating blocks, two such pairs started in either
  order. One keeps its metrics (\`LEASH_METRICS=on\`, the default) and has one push stream to a
  receiver on loopback that answers 202; the other keeps none (\`LEASH_METRICS=off\`) and has no
  stream. Decisions are not events of the log the stream reads, so its delivery loop sleeps
  (renewing its lease every 2 s) and no SET goes out: the difference is what keeping the metrics
  costs every decision, and what an idle stream costs.
- **monitor memory**: a \`Monitor\` (src/monitoring/monitor.ts) over ${fmt(MONITOR_AGENTS)} agents, in a process
  of its own started with \`--expose-gc\`, on an in-process bus, with nothing to record (no detector fires).
  The registry view is a stand-in: a Map of active records with no findings, which is all the
  monitor reads of it. Each agent is fed 30 decisions through \`monitor.observe\`, parsed from JSON
  text as the server gets them: 4 actions, 20 documents in 4 folders (each document's folder
  given as its parent in the request's entities), 4 of the 30 denied, seven seconds apart; the
  counts go out on the bus every 20 ms as on a node with traffic. Memory is V8's heap in use
  plus array buffers (the rings' and the Bloom filter's typed arrays are held outside the heap),
  each after a forced GC: before anything, with the stand-in registry alone (the baseline,
  reported beside), and with the monitor holding every agent; per agent is the monitor's share
  divided by the agents. The figure adds how much the process's resident set grew meanwhile
  (what the allocator spends on the many small array buffers shows only there; noisier, as
  the heap may keep pages it freed). What it holds per agent: its baseline (24 hour counters,
  the actions allowed, a 512-byte Bloom filter of resources and their parents), one ring of 60 buckets
  per counting detector that has counted it (rate_spike for every decision, deny_burst once it
  was denied), with the Maps that index them; the decisions themselves are not kept.
- **detectors in process**: the agent decision rows' request (all five layers, token cached,
  10 ordinary policies, \`decide\` from src/authz/agent-decision.ts) in a process of its own,
  timed with \`monitor.observe\` called after each decision and without it, in alternating blocks
  of 50 (${fmt(MONITOR_DECISIONS)} each way, after 1,000 of each to warm up), every request for a
  document of its own so that neither side decides what the other has (its answer
  remembered). The monitor is the real one over the real registry view, with the default
  configuration; the agent's baseline is not warm (no baseline detector judges), so each
  decision is counted, learned (a new document and folder each time) and checked against the
  counting detectors, and fires nothing. The figure is what the detectors add to the median,
  and \`observe\` timed alone inside the same decisions. The target is measured where Cedar runs
  every time; the row with documents of one folder (one remembered answer serves them) shows
  the monitor against the cheapest decision Leash makes.
- **detectors over HTTP**: two \`leash serve\` processes on the same PostgreSQL, each with a
  database of its own, one with \`LEASH_MONITORING=on\` (the default) and one with \`=off\` (no
  detector runs on its decisions), both up throughout; autocannon sends the HTTP rows' cached-token
  decision to each in turn with the same connections, in alternating blocks (on, off, then off,
  on, …), so that what else the machine does meanwhile falls on both. Then the same again with a
  new pair started in the other order (off first): of two identical servers (both =off) started
  one after the other, the second answered 14% more decisions a second in a trial on this machine,
  more than the difference measured here, so each setting is started first once. In all
  ${MONITOR_HTTP_BLOCKS} blocks of each: the rate over the blocks, their mean p50 and worst p99, CPU per
  decision as for the HTTP rows. One agent asks for one document over and over, so after its
  first decision the monitor only counts (the action and the resource are known); no NATS, so
  the counts go out on the in-process bus. The control beside it runs the whole design again
  with both servers of each pair =on: the percentage it reads is what this comparison shows when
  nothing differs. A CPU profile of an =on server under this load (\`--cpu-prof\`, 16
  connections, 10 s) put 0.8% of its CPU in the detectors (\`observe\` 0.5%, sharing the counts
  0.2%; the metrics' \`decided\`, 0.8%, runs in both).
- **containment**: three \`leash serve\` processes share the PostgreSQL server and one nats-server
  (GOMAXPROCS=1, as for revoke), with the default monitoring configuration (deny_burst: 20
  denies in 60 s is critical, and critical suspends). Every agent is warm on every node first
  (token verified, one allowed read decided on each). Then, for each of ${CONTAINMENT_AGENTS} agents in turn, from one
  keep-alive \`node:http\` client: 19 denied reads (a folder its token does not cover) spread
  over the three nodes, a pause of 100 ms (the nodes share their counts every 20 ms), a plain
  denied read of another agent (its only deny) on the node the 20th goes to, another 100 ms, and
  the 20th denied read, timed. That node counts 20 (its own and the two others'), records the
  finding (\`AnomalyDetected\` with the trust score change), suspends the agent and waits for every
  node to confirm it (the fence) before it answers: the latency is that answer's round trip.
  Right after it every node is asked an allowed read for the agent: the figure counts the
  agents all three refused (\`AGENT_NOT_ACTIVE\`) and the refusals among the nodes asked. The
  baseline is the plain deny's round trip on the same node after the same pause; the 19 denies
  before, sent back to back, are in the figure. All of it shares the 2 cores.
- **revoke**: ${REVOCATION_NODES} \`leash serve\` processes share the PostgreSQL server and one nats-server (run with
  GOMAXPROCS=1: one thread for its Go code, as it shares the 2 cores with everything else);
  every agent is warm on every node (token verified and decided once on each). Revokes go one at
  a time, through each node in turn, from a keep-alive \`node:http\` client. The ${REVOCATIONS} measured
  revokes follow ${REVOCATION_WARM_UP} warm-up revokes of the same loop on agents of their own, reported beside
  them: right after the warming decisions (every node verifies every agent's token), V8 on each
  node is still optimising the revoke path's code and collecting that burst's garbage, on the
  same 2 cores, which a node that has been serving for a while has long finished (profiled: the
  slowest revokes of an unwarmed run coincide with the nodes' background compiler and major-GC
  threads). Latency is from the request to the response carrying every node's confirmation (the
  fence).
  The figure gives that client's round trip to GET /healthz for scale. Right after each response
  every node is asked about the revoked agent; the figure counts the allows (must be 0).
  \`Server-Timing\` splits the revoking node's time into the durable append (with this node
  applying it and broadcasting it) and the fence after it. The baseline is
  the naive design on the same database: ${REVOCATION_NODES} followers polling the log every 100 ms, timed
  from a committed revoke until all of them have applied it. All of it shares the 2 cores.
- **replay**: the archive is made by test/bench/audit.ts without a server: ${AGENTS} agents (100 humans,
  each agent's ceiling and grant on one of 100 folders), ${DOCUMENTS.toLocaleString('en-US')} documents, requests drawn at random
  (mostly in the agent's own folder, one token in twenty asking beyond its ceiling), half under
  each of two policy versions, the recorded outcomes made by the decision code itself. The run
  is \`leash audit replay --archive-only\` in its own process: the registry history folded from
  the archived events, then every decision decided again (all layers, at its position and
  instant) and compared with its record; it fails on any difference. The baseline is one raw
  cedar-wasm call per recorded request (the ordinary policies, no layers, no history). The
  synthetic documents carry no attributes and no policy names one, so documents of a folder are
  alike to Cedar and one remembered answer serves them all (the share is in the figure); where
  every resource differs, each needs its own call and replay runs nearer the baseline per core.
- **verify**: ${VERIFY_RECORDS.toLocaleString('en-US')} chained decision records (small bodies) in gzip NDJSON segments, walked
  offline by \`leash audit verify --archive-only\`: every line's link and sha-256 checked. The
  baseline reads the same files through the same reader, checking nothing.
- The PostgreSQL server is started by the benchmark (initdb, default settings, fsync on) on
  this machine; PGlite runs in-process on disk.
`;
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
