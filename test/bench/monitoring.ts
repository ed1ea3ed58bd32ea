// What the detectors cost (docs/monitoring.md), each next to a baseline measured in the same run:
// - memory: a Monitor holding 100,000 agents' counts and baselines, after a handful of
//   decisions each, beside the stand-in registry it watches (in its own process, --expose-gc);
// - in process: agent decisions with `monitor.observe` after each and without, in alternating
//   blocks (in its own process, as the decision rows are);
// - over HTTP: `leash serve` with LEASH_MONITORING=on and =off, the same load on each, in
//   alternating blocks;
// - containment: three `leash serve` nodes on one PostgreSQL and one nats-server; the 20th deny
//   of an agent in a minute, spread over the nodes, answers once the agent is suspended on every
//   node: its round trip, beside a plain deny's on the same node.
// Not a test: it measures, it asserts nothing.
import { performance } from 'node:perf_hooks';
import { decide } from '../../src/authz/agent-decision.ts';
import { DecisionCaches } from '../../src/authz/decision-caches.ts';
import type { Decision, EvaluationRequest } from '../../src/authz/engine.ts';
import { InProcessBus } from '../../src/bus/bus.ts';
import type { Cluster } from '../../src/cluster/cluster.ts';
import { DEFAULT_MONITORING, Monitor } from '../../src/monitoring/monitor.ts';
import type { RegistryView } from '../../src/registry/registry-view.ts';
import type { CommandHandler } from '../../src/service/command-handler.ts';
import type { ServeProcess } from '../support/serve.ts';
import { startNats } from '../support/servers.ts';
import { decisionFixture } from './decisions.ts';
import { body, measured, merged, mint, PEP, seed, startServer, type HttpResult, type SeededAgent } from './http.ts';
import { request } from './revocation.ts';

/** Median and p99 of some times (any unit). */
export interface Spread {
  median: number;
  p99: number;
}

const spread = (xs: number[]): Spread => {
  const s = [...xs].sort((a, b) => a - b);
  return { median: s[Math.floor(s.length / 2)] ?? NaN, p99: s[Math.min(s.length - 1, Math.floor(s.length * 0.99))] ?? NaN };
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A monitor that never has to record anything (nothing it is fed fires): no store, no fence. It reads of the view only `agents` and `onAgentChange`. */
function quietMonitor(view: RegistryView | StandIn): Monitor {
  const never = () => Promise.reject(new Error('the benchmark expected no finding'));
  return new Monitor({
    nodeId: 'bench', deployment: 'bench', bus: new InProcessBus(), view: view as RegistryView, // a stand-in is enough for what the monitor reads
    commands: { handle: never } as unknown as CommandHandler, cluster: { fence: never } as unknown as Cluster,
    config: () => DEFAULT_MONITORING, log: () => {},
  });
}

/** The least of a registry view a monitor reads: each agent's status and findings. */
interface StandIn {
  agents: Map<string, { record: { status: 'active'; findings: undefined } }>;
  onAgentChange: () => () => void;
}

export interface MemoryRun {
  agents: number;
  decisionsPerAgent: number;
  /** Bytes (V8 heap used + array buffers, after a forced GC) the stand-in registry alone holds, and what the monitor adds to it. */
  registry: { heap: number; arrayBuffers: number; rss: number };
  /** `rss`: what the process's resident set grew by (array buffers' allocator overhead included; noisier). */
  monitor: { heap: number; arrayBuffers: number; rss: number };
  /** Agents the monitor keeps (all of them, at most 100,000). */
  watched: number;
  seconds: number;
}

/** Per agent: 30 decisions over 20 documents in 4 folders, 4 actions, 4 of them denied. */
const DECISIONS_PER_AGENT = 30;
const allow: Decision = { decision: true, layer: 'all', reasons: ['agents-read-invoices'], errors: [], policyVersion: 1, position: 1 };
const deny: Decision = { decision: false, layer: 'agent', reasons: [], errors: [], policyVersion: 1, position: 1 };

/** Needs `--expose-gc` (run.ts starts it in a process of its own). */
export async function benchMonitorMemory(agents: number): Promise<MemoryRun> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('the memory benchmark needs node --expose-gc');
  const held = () => {
    gc();
    gc();
    const m = process.memoryUsage();
    return { heap: m.heapUsed, arrayBuffers: m.arrayBuffers, rss: m.rss };
  };
  const empty = held();
  // The stand-in for the registry view: what the monitor reads of it (status and findings).
  const registry: StandIn = { agents: new Map(), onAgentChange: () => () => {} };
  for (let a = 0; a < agents; a++) registry.agents.set(`agent-${String(a).padStart(6, '0')}`, { record: { status: 'active', findings: undefined } });
  const withRegistry = held();

  const monitor = quietMonitor(registry);
  const actions = ['read', 'write', 'list', 'comment'];
  const start = Date.now() - 3600_000;
  const t0 = performance.now();
  for (let a = 0; a < agents; a++) {
    const id = `agent-${String(a).padStart(6, '0')}`;
    for (let k = 0; k < DECISIONS_PER_AGENT; k++) {
      const doc = `doc-${a}-${k % 20}`;
      const folder = `folder-${a}-${k % 4}`;
      // Parsed from text, as the server gets it: the names the monitor keeps are its own strings.
      const request = JSON.parse(JSON.stringify({
        subject: { type: 'agent', id, properties: { token: 'eyJ…' } }, action: { name: actions[k % 4] }, resource: { type: 'Document', id: doc },
        context: { entities: [{ uid: { type: 'Document', id: doc }, attrs: {}, parents: [{ type: 'Folder', id: folder }] }, { uid: { type: 'Folder', id: folder }, attrs: {}, parents: [] }] },
      })) as EvaluationRequest;
      if (monitor.observe(request, k % 7 === 6 ? deny : allow, new Date(start + k * 7000)) !== null) throw new Error('a detector fired in the memory benchmark');
    }
    if (a % 1000 === 999) await sleep(25); // the counts go out every 20 ms, as on a node with traffic
  }
  const seconds = (performance.now() - t0) / 1000;
  await sleep(50);
  const withMonitor = held();
  const watched = monitor.agents;
  monitor.stop();
  return {
    agents, decisionsPerAgent: DECISIONS_PER_AGENT, watched, seconds,
    registry: { heap: withRegistry.heap - empty.heap, arrayBuffers: withRegistry.arrayBuffers - empty.arrayBuffers, rss: withRegistry.rss - empty.rss },
    monitor: { heap: withMonitor.heap - withRegistry.heap, arrayBuffers: withMonitor.arrayBuffers - withRegistry.arrayBuffers, rss: withMonitor.rss - withRegistry.rss },
  };
}

export interface ObserveRun {
  kind: 'distinct' | 'alike';
  /** Per decision, µs. */
  with: Spread;
  without: Spread;
  /** `monitor.observe` alone, inside the decisions timed with it, µs. */
  observe: Spread;
}

/**
 * The same agent decisions (10 policies, token cached) timed with `monitor.observe` after each
 * and without, in alternating blocks of 50, after 1,000 of each to warm up (observe's code optimised, as on a node serving for a while). `distinct`: every
 * document in a folder of its own (Cedar runs every time); `alike`: documents of one folder
 * (one remembered answer serves them: the cheapest decision, where the monitor weighs most).
 */
export async function benchMonitorDecisions(runs: number): Promise<ObserveRun[]> {
  const { view, requestFor, policySet } = await decisionFixture();
  const set = policySet(10);
  const out: ObserveRun[] = [];
  for (const kind of ['distinct', 'alike'] as const) {
    const caches = new DecisionCaches();
    const monitor = quietMonitor(view);
    const WARM = 1000;
    // Each decision a document of its own, so that neither side decides what the other has (its answer remembered).
    const requests = Array.from({ length: 2 * (runs + WARM) }, (_, i) => requestFor(`m-${kind}-${i}`, kind === 'distinct' ? `mf-${i}` : null).request as EvaluationRequest);
    const times = { with: [] as number[], without: [] as number[], observe: [] as number[] };
    const one = async (i: number, observed: boolean, timed: boolean) => {
      const t = performance.now();
      const at = new Date();
      const d = await decide(requests[i]!, set, view, at, { caches });
      if (!d.decision) throw new Error(`the benchmark request was denied at ${d.layer} (${d.code ?? d.reasons.join(',')})`);
      const o = performance.now();
      if (observed && monitor.observe(requests[i]!, d, at) !== null) throw new Error('a detector fired in the decision benchmark');
      const end = performance.now();
      if (!timed) return;
      (observed ? times.with : times.without).push((end - t) * 1000);
      if (observed) times.observe.push((end - o) * 1000);
    };
    for (let i = 0; i < WARM; i++) {
      await one(2 * i, false, false);
      await one(2 * i + 1, true, false);
    }
    const BLOCK = 50;
    for (let done = 0; done < runs; done += BLOCK) {
      for (const observed of done % (2 * BLOCK) === 0 ? [false, true] : [true, false]) {
        for (let i = done; i < Math.min(runs, done + BLOCK); i++) await one(2 * (WARM + i) + (observed ? 1 : 0), observed, true);
        await new Promise((r) => setImmediate(r)); // the monitor's 20 ms flush may run, as between a server's requests
      }
    }
    monitor.stop();
    out.push({ kind, with: spread(times.with), without: spread(times.without), observe: spread(times.observe) });
  }
  return out;
}

export interface MonitoringHttpRun {
  on: HttpResult;
  off: HttpResult;
  blocks: number;
  blockSeconds: number;
  allowed: boolean;
}

/**
 * `leash serve` with LEASH_MONITORING=on beside one with =off, each on a database of its own,
 * both up throughout; the same cached-token decision load on each in turn, in alternating blocks
 * (on/off, then off/on, …), so that what else the machine does falls on both. Two such pairs, one
 * after the other, the second started in the other order: of two identical servers started one
 * after the other, the second answered 14% more decisions a second in a trial on this machine,
 * more than what is measured here.
 */
/**
 * `control`: both servers of each pair run with the detectors (the "off" results come from the
 * second one), the same design otherwise: what the comparison reads when nothing differs.
 */
export async function benchMonitoringHttp(freshDatabase: () => Promise<string>, options: { seconds: number; connections: number; blocks: number; control?: boolean }): Promise<MonitoringHttpRun> {
  return benchHttpPair(freshDatabase, { ...options, env: (mode) => ({ LEASH_MONITORING: options.control ? 'on' : mode }) });
}

/**
 * Two `leash serve` processes that differ by `env(mode)` (and what `prepare` does to the "on"
 * one), compared as described above: the design of the monitoring row, for any setting.
 */
export async function benchHttpPair(
  freshDatabase: () => Promise<string>,
  options: { seconds: number; connections: number; blocks: number; env: (mode: 'on' | 'off') => Record<string, string>; prepare?: (url: string, mode: 'on' | 'off') => Promise<void> },
): Promise<MonitoringHttpRun> {
  const blockSeconds = Math.max(1, Math.round(options.seconds / options.blocks));
  const runs = { on: [] as HttpResult[], off: [] as HttpResult[] };
  let allowed = true;
  for (const order of [['on', 'off'], ['off', 'on']] as const) {
    const servers: { mode: 'on' | 'off'; server: ServeProcess; token: string; databaseUrl: string }[] = [];
    try {
      for (const mode of order) {
        const databaseUrl = await freshDatabase();
        const server = await startServer({ DATABASE_URL: databaseUrl, ...options.env(mode) });
        servers.push({ mode, server, databaseUrl, token: '' });
      }
      for (const s of servers) {
        s.token = await mint((await seed(s.server.url)).privateKey, 0);
        await options.prepare?.(s.server.url, s.mode);
        const probe = await request(`${s.server.url}/access/v1/evaluation`, 'POST', { authorization: `Bearer ${PEP}`, 'content-type': 'application/json' }, body(s.token));
        allowed &&= (JSON.parse(probe.text) as { decision?: boolean }).decision === true;
      }
      const evaluate = (s: (typeof servers)[number], duration: number) => measured(s.server.child.pid!, {
        url: `${s.server.url}/access/v1/evaluation`, connections: options.connections, duration, method: 'POST', body: body(s.token),
        headers: { authorization: `Bearer ${PEP}`, 'content-type': 'application/json' },
      }, s.databaseUrl);
      for (const s of servers) await evaluate(s, 2); // warm-up
      for (let b = 0; b < options.blocks / 2; b++) {
        for (const s of b % 2 === 0 ? servers : [...servers].reverse()) runs[s.mode].push(await evaluate(s, blockSeconds));
      }
    } finally {
      await Promise.all(servers.map((s) => s.server.stop()));
    }
  }
  return { on: merged(runs.on), off: merged(runs.off), blocks: runs.on.length, blockSeconds, allowed };
}

export interface ContainmentRun {
  nodes: number;
  agents: number;
  /** The 20th deny's round trip, ms (it answers once the suspension is fenced on every node). */
  containment: number[];
  /** A plain deny's round trip on the same node, after the same pause (another agent, below the threshold), ms. */
  plainDeny: number[];
  /** The 19 denies before, back to back, ms. */
  before: number[];
  /** Agents every node refused (AGENT_NOT_ACTIVE) right after their 20th answer. */
  contained: number;
  /** Of agents × nodes asked right after, the refusals. */
  nodesRefusing: number;
}

/**
 * Three `leash serve` nodes, one PostgreSQL, one nats-server, default monitoring (deny_burst: 20
 * denies in 60 s suspends). Every agent is warm on every node first (its token verified and an
 * allowed decision made on each). Then for each agent in turn: 19 denied reads (a folder its
 * token does not cover) spread over the nodes, a pause of 100 ms (the counts go out every
 * 20 ms), a plain deny of another agent on the node of the 20th (the baseline), another 100 ms,
 * then the 20th deny, timed; right after it every node is asked an allowed read for the agent.
 */
export async function benchContainment(databaseUrl: string, options: { agents: number }): Promise<ContainmentRun> {
  const nats = await startNats();
  const nodes: ServeProcess[] = [];
  const env = (i: number) => ({ DATABASE_URL: databaseUrl, NATS_URL: nats.url, LEASH_NODE_ID: `bench-m${i}`, LEASH_MONITORING: 'on' });
  try {
    nodes.push(await startServer(env(1))); // publishes the policy set; the others find it
    nodes.push(...(await Promise.all([2, 3].map((i) => startServer(env(i))))));
    // Agents 1..N are contained; N+1..2N are the baseline's, each denied once.
    const { agents: seeded } = await seed(nodes[0]!.url, 2 * options.agents);
    const tokens = new Map<string, string>();
    for (const [i, a] of seeded.entries()) tokens.set(a.id, await mint(a.privateKey, i, a.id));
    const ask = async (node: ServeProcess, agent: SeededAgent, doc: string, folder: string) => {
      const res = await request(`${node.url}/access/v1/evaluation`, 'POST', { authorization: `Bearer ${PEP}`, 'content-type': 'application/json' }, body(tokens.get(agent.id)!, agent.id, doc, folder));
      if (res.status !== 200) throw new Error(`POST /access/v1/evaluation: ${res.status} ${res.text}`);
      return JSON.parse(res.text) as { decision: boolean; context: { code?: string; layer?: string } };
    };
    const timed = async (node: ServeProcess, agent: SeededAgent, doc: string) => {
      const t = performance.now();
      const d = await ask(node, agent, doc, 'payroll');
      const ms = performance.now() - t;
      if (d.decision) throw new Error(`${agent.id} was allowed to read ${doc} in payroll`);
      return { ms, d };
    };
    // Every node hears the others, and every agent is warm (and allowed) on every node.
    for (const node of nodes) {
      for (const deadline = Date.now() + 20_000; ;) {
        const r = (await (await fetch(`${node.url}/readyz`)).json()) as { checks: { broadcast: { detail: string } } };
        if (r.checks.broadcast.detail.startsWith(`${nodes.length} live node(s)`)) break;
        if (Date.now() > deadline) throw new Error(`node ${node.url}: ${r.checks.broadcast.detail}`);
        await sleep(50);
      }
      for (const a of seeded) if (!(await ask(node, a, 'inv-1', 'invoices')).decision) throw new Error(`${a.id} is not allowed on ${node.url}`);
    }

    const run: ContainmentRun = { nodes: nodes.length, agents: options.agents, containment: [], plainDeny: [], before: [], contained: 0, nodesRefusing: 0 };
    for (let i = 0; i < options.agents; i++) {
      const agent = seeded[i]!;
      const at = nodes[i % nodes.length]!;
      for (let k = 0; k < 19; k++) run.before.push((await timed(nodes[(i + k + 1) % nodes.length]!, agent, `p-${k}`)).ms);
      await sleep(100);
      run.plainDeny.push((await timed(at, seeded[options.agents + i]!, 'p-0')).ms);
      await sleep(100);
      run.containment.push((await timed(at, agent, 'p-19')).ms);
      const after = await Promise.all(nodes.map((n) => ask(n, agent, 'inv-1', 'invoices')));
      const refusing = after.filter((d) => !d.decision && d.context.code === 'AGENT_NOT_ACTIVE').length;
      run.nodesRefusing += refusing;
      if (refusing === nodes.length) run.contained++;
    }
    return run;
  } finally {
    await Promise.all(nodes.map((n) => n.stop()));
    await nats.stop();
  }
}
