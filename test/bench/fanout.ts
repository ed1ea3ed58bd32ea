// A revoke fenced across many nodes: REAL `leash serve` processes and, beside them, simulated
// nodes (fanout-sim.ts: NATS clients that apply, confirm and send heartbeats as a node does,
// many per process), all on one nats-server and one PostgreSQL. For each total node count,
// revokes one at a time through each real node in turn, timed from request to the response
// that carries the confirmations; each response must count every node and name none missing.
// Measures; asserts nothing.
import { spawn, type ChildProcess } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { exportJWK, generateKeyPair } from 'jose';
import { serveLeash, type ServeProcess } from '../support/serve.ts';
import { startNats } from '../support/servers.ts';
import { cpuMicros } from './http.ts';
import { pool, request } from './revocation.ts';

const ADMIN = 'bench-operator-token-0123456789';
const IDLE_MS = 3000;
const SIM = fileURLToPath(new URL('./fanout-sim.ts', import.meta.url));

export interface FanoutSize {
  nodes: number;
  /** Request → response, ms, of the measured revokes. */
  fenced: number[];
  warmUp: number[];
  /** Revokes whose answer counted all `nodes` nodes as expected and confirmed, none missing. */
  exact: number;
  /** Nodes named missing, and how often, over all revokes (warm-up included). */
  missing: Map<string, number>;
  /** Answers that counted another number of nodes than were running. */
  miscounted: number;
  /** CPU time per measured revoke, ms, above what the same processes spend idle (heartbeats): the real nodes together, the simulated ones, nats-server. */
  cpu: { real: number; simulated: number; nats: number };
  /** What they spend idle, ms of CPU per second: the heartbeats of this many nodes. */
  idle: { real: number; simulated: number; nats: number };
  /**
   * During the measured revokes, idle work included: the CPU all these processes and the
   * benchmark's own spent per revoke (ms), and that as a share of the machine's cores over the
   * same time. Near 1, the fence waits for CPU, not for the network or for a node.
   */
  during: { perRevoke: number; busy: number };
}

async function startSims(count: number, processes: number, env: Record<string, string>, tag: string): Promise<ChildProcess[]> {
  const per = Math.ceil(count / processes);
  const children: ChildProcess[] = [];
  for (let p = 0; p * per < count; p++) {
    const n = Math.min(per, count - p * per);
    const child = spawn(process.execPath, ['--import', 'tsx', SIM], { env: { ...process.env, ...env, SIM_COUNT: String(n), SIM_PREFIX: `sim-${tag}-${p}` }, stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(child);
    await new Promise<void>((resolve, reject) => {
      let out = '';
      child.stdout!.on('data', (chunk: Buffer) => {
        out += chunk.toString();
        if (out.includes('READY')) resolve();
      });
      child.once('exit', (code) => reject(new Error(`simulated nodes exited (${code}) before they were ready`)));
    });
  }
  return children;
}

const stopSims = (children: ChildProcess[]) =>
  Promise.all(children.map((c) => new Promise<void>((resolve) => {
    if (c.exitCode !== null) return resolve();
    c.once('exit', () => resolve());
    c.kill('SIGTERM');
  })));

export async function benchFanout(databaseUrl: string, options: { real: number; sizes: number[]; revocations: number; warmUp: number; simProcesses: number }): Promise<FanoutSize[]> {
  const nats = await startNats();
  const nodes: ServeProcess[] = [];
  const env = (i: number) => ({ DATABASE_URL: databaseUrl, NATS_URL: nats.url, LEASH_NODE_ID: `bench-${i}`, LEASH_ADMIN_TOKEN: ADMIN, LEASH_PEP_TOKENS: 'bench-pep-token-0123456789abcdef' });
  let sims: ChildProcess[] = [];
  try {
    const nodeArgs = (process.env.BENCH_SERVER_NODE_ARGS ?? '').split(' ').filter(Boolean); // e.g. --cpu-prof
    nodes.push(await serveLeash(env(1), { nodeArgs }));
    for (let i = 2; i <= options.real; i += 3) nodes.push(...(await Promise.all([i, i + 1, i + 2].filter((n) => n <= options.real).map((n) => serveLeash(env(n), { nodeArgs })))));
    const call = async (node: ServeProcess, path: string, body: unknown) => {
      const res = await request(`${node.url}${path}`, 'POST', { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' }, JSON.stringify(body));
      const json = JSON.parse(res.text) as Record<string, unknown>;
      if (res.status >= 300) throw new Error(`POST ${path}: ${res.status} ${JSON.stringify(json)}`);
      return json;
    };
    const { publicKey } = await generateKeyPair('ES256', { extractable: true });
    const jwk = { ...(await exportJWK(publicKey)), alg: 'ES256', kid: 'k1' };
    const credentials = { issuer: 'https://idp.example', audience: 'leash', algorithms: ['ES256'], clockSkewSeconds: 30, maxTokenLifetimeSeconds: 600, jwks: { keys: [jwk] } };
    await call(nodes[0]!, '/v1/groups', { id: 'finance', parents: [] });
    await call(nodes[0]!, '/v1/humans', { id: 'alice', email: 'alice@example.com', groups: ['finance'] });
    const perSize = options.warmUp + options.revocations;
    const ids = Array.from({ length: perSize * options.sizes.length }, (_, i) => `agent-${String(i).padStart(5, '0')}`);
    await pool(ids, 16, async (id) => {
      await call(nodes[0]!, '/v1/agents', {
        id, owner: 'alice', purpose: 'benchmark', provenance: { model: 'm', modelVersion: '1', environment: 'production' }, trustScore: 60,
        groups: ['finance'], tags: [], credentials, ceiling: { template: 'ceiling-folder', values: { '?resource': { type: 'Folder', id: 'invoices' } } },
      });
    });
    const live = async (node: ServeProcess) => {
      const r = (await (await fetch(`${node.url}/readyz`)).json()) as { checks: { broadcast: { detail: string } } };
      return Number(/^(\d+) live node/.exec(r.checks.broadcast.detail)?.[1] ?? 0);
    };
    const untilLive = async (n: number) => {
      const deadline = Date.now() + 60_000;
      for (const node of nodes) {
        while ((await live(node)) !== n) {
          if (Date.now() > deadline) throw new Error(`node ${node.url} sees ${await live(node)} live nodes, not ${n}`);
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    };

    const out: FanoutSize[] = [];
    for (const [s, size] of options.sizes.entries()) {
      sims = size > options.real ? await startSims(size - options.real, options.simProcesses, { DATABASE_URL: databaseUrl, NATS_URL: nats.url }, String(size)) : [];
      await untilLive(size);
      const result: FanoutSize = { nodes: size, fenced: [], warmUp: [], exact: 0, missing: new Map(), miscounted: 0, cpu: { real: 0, simulated: 0, nats: 0 }, idle: { real: 0, simulated: 0, nats: 0 }, during: { perRevoke: 0, busy: 0 } };
      const cpu = () => ({
        real: nodes.reduce((t, n) => t + cpuMicros(n.child.pid!), 0), simulated: sims.reduce((t, c) => t + cpuMicros(c.pid!), 0), nats: cpuMicros(nats.pid),
        bench: cpuMicros(process.pid),
      });
      // Idle, before the revokes (after the joins have settled) and after them: the heartbeats alone.
      const idleRate = async () => {
        const from = cpu();
        const start = performance.now();
        await new Promise((r) => setTimeout(r, IDLE_MS));
        const to = cpu();
        const seconds = (performance.now() - start) / 1000;
        return { real: (to.real - from.real) / 1000 / seconds, simulated: (to.simulated - from.simulated) / 1000 / seconds, nats: (to.nats - from.nats) / 1000 / seconds };
      };
      await new Promise((r) => setTimeout(r, 2000));
      const idleBefore = await idleRate();
      let before = cpu();
      let measuredFrom = performance.now();
      for (const [i, id] of ids.slice(s * perSize, (s + 1) * perSize).entries()) {
        if (i === options.warmUp) {
          before = cpu();
          measuredFrom = performance.now();
        }
        const t0 = performance.now();
        const res = await call(nodes[i % nodes.length]!, `/v1/agents/${id}/revoke`, { mode: 'immediate', reason: 'benchmark' }) as { nodesConfirmed: number; nodesExpected: number; nodesMissing: string[] };
        const ms = performance.now() - t0;
        if (i < options.warmUp) result.warmUp.push(ms);
        else {
          result.fenced.push(ms);
          if (res.nodesExpected === size && res.nodesConfirmed === size && res.nodesMissing.length === 0) result.exact++;
        }
        if (res.nodesExpected !== size) result.miscounted++;
        for (const m of res.nodesMissing) result.missing.set(m, (result.missing.get(m) ?? 0) + 1);
      }
      const after = cpu();
      const seconds = (performance.now() - measuredFrom) / 1000;
      const idleAfter = await idleRate();
      const mean = (k: 'real' | 'simulated' | 'nats') => (idleBefore[k] + idleAfter[k]) / 2;
      result.idle = { real: mean('real'), simulated: mean('simulated'), nats: mean('nats') };
      const per = (k: 'real' | 'simulated' | 'nats') => ((after[k] - before[k]) / 1000 - result.idle[k] * seconds) / options.revocations;
      result.cpu = { real: per('real'), simulated: per('simulated'), nats: per('nats') };
      const spent = (['real', 'simulated', 'nats', 'bench'] as const).reduce((t, k) => t + (after[k] - before[k]) / 1000, 0);
      result.during = { perRevoke: spent / options.revocations, busy: spent / (seconds * 1000 * availableParallelism()) };
      out.push(result);
      await stopSims(sims);
      sims = [];
      await untilLive(options.real);
    }
    return out;
  } finally {
    await stopSims(sims);
    await Promise.all(nodes.map((n) => n.stop()));
    await nats.stop();
  }
}
