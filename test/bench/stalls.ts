// What one heavy call costs every other caller: GET /healthz, asked one after another from
// this process while `leash serve` publishes a 3,000-policy set (and decides right after it),
// and while it replays its decision log over HTTP. The baseline is the same probe, same
// server, with nothing else running. Not a test: it measures, it asserts nothing.
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import autocannon from 'autocannon';
import { readPolicyFiles } from '../../src/authz/policy-files.ts';
import { CEDAR_DIR } from '../support/node.ts';
import { BENCH_ADMIN, PEP, body, call, decides, mint, seed, startServer } from './http.ts';

export interface Probe {
  /** /healthz round trips, ms, in the order taken. */
  latencies: number[];
}

export interface StallRun {
  idle: Probe;
  publish: Probe & { putMs: number[]; firstDecisionMs: number[] };
  replay: Probe & { decisions: number; calls: number; ms: number };
  whatIf: Probe & { decisions: number; ms: number };
  /** The server's resident memory and V8 heap in use (its own metric), MB: after seeding, then after each publish. */
  rssMb: number[];
  heapMb: number[];
  policies: number;
}

/** /healthz one after another (2 ms apart) until `stop` resolves. */
async function probe(url: string, stop: Promise<unknown>): Promise<Probe> {
  const latencies: number[] = [];
  let done = false;
  void stop.finally(() => (done = true));
  while (!done) {
    const t = performance.now();
    const res = await fetch(`${url}/healthz`);
    await res.arrayBuffer();
    latencies.push(performance.now() - t);
    await new Promise((r) => setTimeout(r, 2));
  }
  return { latencies };
}

async function heapMb(url: string): Promise<number> {
  const res = await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${BENCH_ADMIN}` } });
  const m = /^nodejs_heap_size_used_bytes (\S+)$/m.exec(await res.text());
  return m ? Number(m[1]) / 1024 / 1024 : NaN;
}

const rssMb = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;

/** The example policies and `n` more, one per other agent and folder (a deployment with many agents). */
function largeSet(n: number, tag: string) {
  const base = readPolicyFiles(CEDAR_DIR);
  const filler = Array.from({ length: n }, (_, i) => `@id("${tag}-${i}") permit (principal == Agent::"agent-${i}", action == Action::"read", resource in Folder::"folder-${i}") when { context has amount && context.amount < ${1000 + i} };`);
  return { ...base, policies: `${base.policies}\n${filler.join('\n')}` };
}

export async function benchStalls(databaseUrl: string, options: { policies: number; publishes: number; decisions: number }): Promise<StallRun> {
  const server = await startServer({ DATABASE_URL: databaseUrl });
  const pid = server.child.pid!;
  try {
    const { privateKey } = await seed(server.url);
    const token = await mint(privateKey, 0);
    if (!(await decides(server.url, token))) throw new Error('the benchmark decision is not allowed');
    const timed = async <T>(work: () => Promise<T>) => {
      const t = performance.now();
      const value = await work();
      return { value, ms: performance.now() - t };
    };
    const idle = await probe(server.url, new Promise((r) => setTimeout(r, 3000)));

    // Publishing: each a new version (a set of its own), then the first decision under it.
    const rss = [rssMb(pid)];
    const heap = [await heapMb(server.url)];
    const putMs: number[] = [];
    const firstDecisionMs: number[] = [];
    const sets = Array.from({ length: options.publishes + 1 }, (_, i) => largeSet(options.policies, `set${i}`));
    const publishing = (async () => {
      for (let i = 0; i < options.publishes; i++) {
        putMs.push((await timed(() => call(server.url, 'PUT', '/v1/policy-set', sets[i]))).ms);
        const first = await timed(() => decides(server.url, token));
        if (!first.value) throw new Error('the decision after publishing is not allowed');
        firstDecisionMs.push(first.ms);
        rss.push(rssMb(pid));
        heap.push(await heapMb(server.url));
      }
    })();
    const publish = await probe(server.url, publishing);
    await publishing;

    // A decision log to replay: the benchmark decision, over and over.
    await new Promise<void>((resolve, reject) => {
      autocannon({
        url: `${server.url}/access/v1/evaluation`, connections: 8, amount: options.decisions, method: 'POST',
        headers: { authorization: `Bearer ${PEP}`, 'content-type': 'application/json' }, body: body(token),
      }, (err) => (err ? reject(err) : resolve()));
    });
    let replayed = 0;
    let calls = 0;
    const replaying = timed(async () => {
      let from: number | null = 1;
      while (from !== null) {
        const report = (await call(server.url, 'POST', '/v1/audit/replay', { from })) as { decisions: number; next: number | null };
        replayed += report.decisions;
        calls++;
        from = report.next;
      }
    });
    const replay = await probe(server.url, replaying);
    const replayMs = (await replaying).ms;

    // What-if: the same log against the other large set as a candidate (checked as a publish is).
    let whatIfDecisions = 0;
    const asking = timed(async () => {
      const report = (await call(server.url, 'POST', '/v1/audit/what-if', { policies: sets[options.publishes], maxDecisions: 10_000 })) as { decisions: number };
      whatIfDecisions = report.decisions;
    });
    const whatIf = await probe(server.url, asking);
    const whatIfMs = (await asking).ms;
    return {
      idle, publish: { ...publish, putMs, firstDecisionMs }, replay: { ...replay, decisions: replayed, calls, ms: replayMs },
      whatIf: { ...whatIf, decisions: whatIfDecisions, ms: whatIfMs }, rssMb: rss, heapMb: heap, policies: options.policies,
    };
  } finally {
    await server.stop();
  }
}
