// The decision log with many writers: 1, 2, 4 and 8 `leash serve` processes on one Postgres,
// every decision of all of them recorded durably in the one hash-chained log before it is
// answered: a fixed total of connections split evenly over the nodes, or as many to each node
// as one node alone has (clients that grow with the nodes). What to compare is the
// total against the 1-node figure of the same run, and each side's CPU per decision, which
// says how far more cores would carry it. Not a test: it measures, it asserts nothing.
import autocannon from 'autocannon';
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { DecisionLog, type DecisionRecord } from '../../src/audit/decision-log.ts';
import { connect, runStatement } from '../../src/store/connect.ts';
import { migrateToLatest } from '../../src/store/migrate.ts';
import type { ServeProcess } from '../support/serve.ts';
import { body, cpuMicros, load, mint, PEP, pct, postgresMicros, postgresMicrosByProcess, seed, startServer, type HttpResult } from './http.ts';

/** One node count's run: all nodes loaded at once. */
export interface WritersRun {
  nodes: number;
  connectionsPerNode: number;
  /** Decisions each node answered in the warm-up, all nodes loaded at once, before the timed window. */
  warmUpDecisions: number;
  /** Decisions a second of all nodes together. */
  perSecond: number;
  /** The least and the most one node answered a second. */
  nodeRange: [number, number];
  /** The nodes' mean p50 and worst p99, ms. */
  p50: number;
  p99: number;
  non2xx: number;
  errors: number;
  /** CPU time per answered decision, µs: the N server processes together, the PostgreSQL processes, this process (autocannon). */
  cpu: { leash: number; postgres: number; loadGenerator: number };
  /** Transactions the database committed meanwhile (every one, the decision log's batches most of them), per decision. */
  commitsPerDecision: number;
}

/** Decisions each node answers before the timed window (about what one node with 16 connections answers in 3 s). */
export const WARM_UP_DECISIONS = 12_000;

/** Transactions committed in the database at `url` so far (Postgres' statistics). */
async function commits(url: string): Promise<number> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query<{ n: string }>('select xact_commit as n from pg_stat_database where datname = current_database()');
    return Number(rows[0]?.n ?? 0);
  } finally {
    await client.end();
  }
}

/**
 * Postgres' CPU from now until the returned function is called, µs, backends that exit
 * meanwhile included up to their last sample (a node's pool closes a connection idle for 10 s,
 * and with its process gone what it had spent would drop out of a plain after-minus-before).
 */
function postgresCpuFromNow(port: string): () => number {
  const first = postgresMicrosByProcess(port);
  const last = new Map(first);
  const sample = () => {
    for (const [pid, us] of postgresMicrosByProcess(port)) last.set(pid, us);
  };
  const timer = setInterval(sample, 500);
  return () => {
    clearInterval(timer);
    sample();
    let total = 0;
    for (const [pid, us] of last) total += us - (first.get(pid) ?? 0);
    return total;
  };
}

/**
 * For each node count, a database of its own (from `database`), nodes `bench-w1`…: the first
 * seeded, the others started after it; every node must allow the benchmark request before the
 * load. `connections` is the total, split evenly, or with `perNode` each node's; one cached token for all.
 */
export async function benchWriters(database: () => Promise<string>, options: { nodeCounts: number[]; seconds: number; connections: number; perNode?: boolean }): Promise<WritersRun[]> {
  const runs: WritersRun[] = [];
  for (const count of options.nodeCounts) runs.push(await writersRun(await database(), count, options));
  return runs;
}

async function writersRun(databaseUrl: string, count: number, options: { seconds: number; connections: number; perNode?: boolean }): Promise<WritersRun> {
  const nodes: ServeProcess[] = [];
  try {
    nodes.push(await startServer({ DATABASE_URL: databaseUrl, LEASH_NODE_ID: 'bench-w1' }));
    const { privateKey } = await seed(nodes[0]!.url);
    nodes.push(...(await Promise.all(Array.from({ length: count - 1 }, (_, i) => startServer({ DATABASE_URL: databaseUrl, LEASH_NODE_ID: `bench-w${i + 2}` })))));
    const token = await mint(privateKey, 0);
    const headers = { authorization: `Bearer ${PEP}`, 'content-type': 'application/json' };
    for (const node of nodes) {
      const probe = await fetch(`${node.url}/access/v1/evaluation`, { method: 'POST', headers, body: body(token) });
      if (((await probe.json()) as { decision?: boolean }).decision !== true) throw new Error(`the benchmark request is not allowed on ${node.url}`);
    }
    const connectionsPerNode = options.perNode ? options.connections : Math.max(1, Math.floor(options.connections / count));
    const evaluation = (node: ServeProcess, run: { duration: number } | { amount: number }): autocannon.Options => ({
      url: `${node.url}/access/v1/evaluation`, connections: connectionsPerNode, ...run, method: 'POST', body: body(token), headers,
    });
    const all = (run: { duration: number } | { amount: number }) => Promise.all(nodes.map((node) => load(evaluation(node, run))));
    // Every node gets the same number of warm-up decisions, whatever the node count and its
    // connections: a node's code is optimised by the decisions it has run, not by the time it
    // has run (measured: one node with 2 connections spent 732 µs of user CPU a decision after
    // 3 s of warm-up, 561 µs after 40 s).
    await all({ amount: WARM_UP_DECISIONS });

    const snapshot = async () => ({ leash: nodes.reduce((total, node) => total + cpuMicros(node.child.pid!), 0), self: process.cpuUsage(), commits: await commits(databaseUrl) });
    const before = await snapshot();
    const postgres = postgresCpuFromNow(new URL(databaseUrl).port);
    const results: HttpResult[] = await all({ duration: options.seconds });
    const postgresMicros = postgres();
    const self = process.cpuUsage(before.self);
    const after = await snapshot();

    const perSecond = results.reduce((total, r) => total + r.perSecond, 0);
    const answered = perSecond * options.seconds;
    const per = (us: number) => Math.round(us / answered);
    const rates = results.map((r) => r.perSecond);
    return {
      nodes: count, connectionsPerNode, warmUpDecisions: WARM_UP_DECISIONS, perSecond,
      nodeRange: [Math.min(...rates), Math.max(...rates)],
      p50: results.reduce((total, r) => total + r.p50, 0) / results.length,
      p99: Math.max(...results.map((r) => r.p99)),
      non2xx: results.reduce((total, r) => total + r.non2xx, 0),
      errors: results.reduce((total, r) => total + r.errors, 0),
      cpu: { leash: per(after.leash - before.leash), postgres: per(postgresMicros), loadGenerator: per(self.user + self.system) },
      commitsPerDecision: (after.commits - before.commits) / answered,
    };
  } finally {
    for (const node of nodes.reverse()) await node.stop();
  }
}

/** What one decision committed on its own costs PostgreSQL, beside a plain INSERT of the same row. */
export interface CommitFloorRun {
  commits: number;
  /** Through the decision log, one decision at a time (each its own batch): µs of Postgres CPU per commit, and ms per record. */
  log: { postgres: number; p50: number; p99: number };
  /** The same rows by a plain one-row INSERT into the decisions table (no function, no chain), same client. */
  insert: { postgres: number; p50: number; p99: number };
}

/**
 * One caller, one decision at a time: every record is a commit of its own, as on a node with
 * one request in flight. What that commit costs PostgreSQL's processes, µs each, through
 * `DecisionLog` and through a plain INSERT of the same row into the same table, which is the
 * floor for a durable commit of one decision there.
 */
export async function benchCommitFloor(databaseUrl: string, commits: number): Promise<CommitFloorRun> {
  const connection = await connect({ kind: 'postgres', url: databaseUrl, poolSize: 2 });
  try {
    await migrateToLatest(connection.db);
    const log = new DecisionLog(connection.db);
    const record = (i: number): DecisionRecord => ({
      id: randomUUID(), nodeId: 'bench-floor', at: new Date(), decision: true, layer: 'allow', code: null, reasons: ['p1'], policyVersion: 3, logPosition: i,
      request: { subject: { type: 'Agent', id: 'invoice-bot' }, action: { type: 'Action', id: 'read' }, resource: { type: 'Document', id: 'inv-42' }, context: {} },
    });
    const port = new URL(databaseUrl).port;
    const measure = async (one: (i: number) => Promise<unknown>) => {
      for (let i = 0; i < 300; i++) await one(i);
      const times: number[] = [];
      const before = postgresMicros(port);
      for (let i = 0; i < commits; i++) {
        const started = performance.now();
        await one(i);
        times.push(performance.now() - started);
      }
      const postgres = Math.round((postgresMicros(port) - before) / commits);
      times.sort((a, b) => a - b);
      return { postgres, p50: pct(times, 50), p99: pct(times, 99) };
    };
    const logRun = await measure((i) => log.record(record(i)));
    await log.close();
    const insert = { name: 'bench_floor_insert', text: 'insert into decisions (id, node_id, chain_seq, recorded_at, request, decision, layer, code, reasons, policy_version, log_position, prev_hash, hash) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)' };
    let chainSeq = 0;
    const insertRun = await measure((i) => {
      const d = record(i);
      return runStatement(connection.db, insert, [d.id, 'bench-floor-insert', String(++chainSeq), d.at.toISOString(), JSON.stringify(d.request), true, d.layer, null, JSON.stringify(d.reasons), 3, i, '0'.repeat(64), '0'.repeat(64)]);
    });
    return { commits, log: logRun, insert: insertRun };
  } finally {
    await connection.db.destroy();
  }
}
