// The decision log with many writers: 1, 2, 4 and 8 `leash serve` processes on one Postgres,
// every decision of all of them recorded durably in the one hash-chained log before it is
// answered: a fixed total of connections split evenly over the nodes, or as many to each node
// as one node alone has (clients that grow with the nodes). What to compare is the
// total against the 1-node figure of the same run, and each side's CPU per decision, which
// says how far more cores would carry it. Not a test: it measures, it asserts nothing.
import autocannon from 'autocannon';
import pg from 'pg';
import type { ServeProcess } from '../support/serve.ts';
import { body, cpuMicros, load, mint, PEP, postgresMicrosByProcess, seed, startServer, type HttpResult } from './http.ts';

/** One node count's run: all nodes loaded at once. */
export interface WritersRun {
  nodes: number;
  connectionsPerNode: number;
  /** Of all nodes loaded at once before the timed window. */
  warmUpSeconds: number;
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
    const evaluation = (node: ServeProcess, duration: number): autocannon.Options => ({
      url: `${node.url}/access/v1/evaluation`, connections: connectionsPerNode, duration, method: 'POST', body: body(token), headers,
    });
    const all = (duration: number) => Promise.all(nodes.map((node) => load(evaluation(node, duration))));
    // Each node gets about as many warm-up decisions as one node alone does in 3 s: a node's
    // code is optimised by the decisions it has run, and with N nodes each runs 1/N of them.
    const warmUpSeconds = 3 * count;
    await all(warmUpSeconds);

    const snapshot = async () => ({ leash: nodes.reduce((total, node) => total + cpuMicros(node.child.pid!), 0), self: process.cpuUsage(), commits: await commits(databaseUrl) });
    const before = await snapshot();
    const postgres = postgresCpuFromNow(new URL(databaseUrl).port);
    const results: HttpResult[] = await all(options.seconds);
    const postgresMicros = postgres();
    const self = process.cpuUsage(before.self);
    const after = await snapshot();

    const perSecond = results.reduce((total, r) => total + r.perSecond, 0);
    const answered = perSecond * options.seconds;
    const per = (us: number) => Math.round(us / answered);
    const rates = results.map((r) => r.perSecond);
    return {
      nodes: count, connectionsPerNode, warmUpSeconds, perSecond,
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
