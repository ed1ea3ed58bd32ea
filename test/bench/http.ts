// AuthZEN decisions over HTTP under load: `leash serve` in its own process (as deployed),
// autocannon in this one, on the same machine. Each decision is recorded durably before it is
// answered. The baseline, in the same run and with the same load, is GET /healthz on the same
// server: what the HTTP stack alone sustains. Not a test: it measures, it asserts nothing.
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import autocannon from 'autocannon';
import { SignJWT, exportJWK, generateKeyPair, type CryptoKey } from 'jose';
import { serveLeash, type ServeProcess } from '../support/serve.ts';

const ADMIN = 'bench-operator-token-0123456789';
export const PEP = 'bench-pep-token-0123456789abcdef';

export interface HttpResult {
  perSecond: number;
  p50: number;
  p99: number;
  non2xx: number;
  errors: number;
  /** CPU time per answered request, µs: the server process, the PostgreSQL processes, this process (autocannon). */
  cpu?: { server: number; postgres: number; loadGenerator: number };
}

/** CPU time (user + system) of a process so far, µs, from /proc (Linux); 0 if it cannot be read. */
function cpuMicros(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1e6) / 100; // clock ticks (USER_HZ = 100)
  } catch {
    return 0;
  }
}

/** Every PostgreSQL process of this machine (the benchmark's server is the only one). */
function postgresMicros(): number {
  let total = 0;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/comm`, 'utf8').startsWith('postgres')) total += cpuMicros(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return total;
}

/** `load`, with the CPU each side spent on it. A backend's processes that exit meanwhile are not counted. */
async function measured(serverPid: number, options: autocannon.Options): Promise<HttpResult> {
  const snapshot = () => ({ server: cpuMicros(serverPid), postgres: postgresMicros(), self: process.cpuUsage() });
  const before = snapshot();
  const result = await load(options);
  const after = snapshot();
  const self = process.cpuUsage(before.self);
  const answered = result.perSecond * Number(options.duration);
  const per = (us: number) => Math.round(us / answered);
  return { ...result, cpu: { server: per(after.server - before.server), postgres: per(after.postgres - before.postgres), loadGenerator: per(self.user + self.system) } };
}

export interface HttpRun {
  cached: HttpResult;
  fresh: HttpResult;
  baseline: HttpResult;
  allowed: boolean;
}

export async function startServer(env: Record<string, string>): Promise<ServeProcess> {
  const nodeArgs = (process.env.BENCH_SERVER_NODE_ARGS ?? '').split(' ').filter(Boolean); // e.g. --cpu-prof
  return serveLeash({ ...env, LEASH_ADMIN_TOKEN: ADMIN, LEASH_PEP_TOKENS: PEP }, { nodeArgs });
}

async function call(url: string, method: string, path: string, body: unknown): Promise<void> {
  const res = await fetch(`${url}${path}`, { method, headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (res.status >= 300) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`);
}

/** The README's demo: alice in finance, an agent with a folder ceiling, a local ES256 key. */
export async function seed(url: string): Promise<{ privateKey: CryptoKey }> {
  const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), alg: 'ES256', kid: 'k1' };
  await call(url, 'POST', '/v1/groups', { id: 'finance', parents: [] });
  await call(url, 'POST', '/v1/humans', { id: 'alice', email: 'alice@example.com', groups: ['finance'] });
  await call(url, 'POST', '/v1/agents', {
    id: 'invoice-bot', owner: 'alice', purpose: 'pay approved invoices', provenance: { model: 'm', modelVersion: '1', environment: 'production' },
    trustScore: 60, groups: ['finance'], tags: [],
    credentials: { issuer: 'https://idp.example', audience: 'leash', algorithms: ['ES256'], clockSkewSeconds: 30, maxTokenLifetimeSeconds: 600, jwks: { keys: [jwk] } },
    ceiling: { template: 'ceiling-folder', values: { '?resource': { type: 'Folder', id: 'invoices' } } },
  });
  await new Promise((r) => setTimeout(r, 1100)); // tokens must be issued after the authorize below (whole seconds)
  await call(url, 'POST', '/v1/agents/invoice-bot/authorize', { grants: [] });
  await new Promise((r) => setTimeout(r, 1100));
  return { privateKey };
}

export const mint = (privateKey: CryptoKey, i: number) => {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ authorization_details: [{ type: 'leash:cedar', actions: ['read'], resourceIn: { type: 'Folder', id: 'invoices' } }], jti: `bench-${i}` })
    .setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setIssuer('https://idp.example').setAudience('leash').setSubject('invoice-bot')
    .setIssuedAt(now).setExpirationTime(now + 600).sign(privateKey);
};

export const body = (token: string) => JSON.stringify({
  subject: { type: 'agent', id: 'invoice-bot', properties: { token } },
  action: { name: 'read' },
  resource: { type: 'Document', id: 'inv-42' },
  context: { entities: [{ uid: { type: 'Document', id: 'inv-42' }, attrs: {}, parents: [{ type: 'Folder', id: 'invoices' }] }, { uid: { type: 'Folder', id: 'invoices' }, attrs: {}, parents: [] }] },
});

export function load(options: autocannon.Options): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    autocannon(options, (err, r) => {
      if (err) return reject(err);
      resolve({ perSecond: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, non2xx: r.non2xx, errors: r.errors + r.timeouts });
    });
  });
}

/** Throughput with two nodes sharing the decision log's database, beside one node taking all the connections. */
export interface TwoNodeRun {
  nodes: [HttpResult, HttpResult];
  oneNode: HttpResult;
}

/**
 * Two `leash serve` processes on one Postgres, each with half the connections (cached token):
 * every decision of both goes into the one hash-chained log. The baseline, in the same run,
 * is the first node alone with all of them (the second one up and idle).
 */
export async function benchHttpTwoNodes(databaseUrl: string, options: { seconds: number; connections: number }): Promise<TwoNodeRun> {
  const a = await startServer({ DATABASE_URL: databaseUrl, LEASH_NODE_ID: 'bench-a' });
  let b: ServeProcess | null = null;
  try {
    const { privateKey } = await seed(a.url);
    b = await startServer({ DATABASE_URL: databaseUrl, LEASH_NODE_ID: 'bench-b' });
    const token = await mint(privateKey, 0);
    const evaluation = (node: ServeProcess, connections: number, duration: number): autocannon.Options => ({
      url: `${node.url}/access/v1/evaluation`, connections, duration, method: 'POST', body: body(token),
      headers: { authorization: `Bearer ${PEP}`, 'content-type': 'application/json' },
    });
    for (const node of [a, b]) {
      const probe = await fetch(`${node.url}/access/v1/evaluation`, { method: 'POST', headers: { authorization: `Bearer ${PEP}`, 'content-type': 'application/json' }, body: body(token) });
      if (((await probe.json()) as { decision?: boolean }).decision !== true) throw new Error(`the benchmark request is not allowed on ${node.url}`);
    }
    const half = Math.max(1, Math.floor(options.connections / 2));
    await Promise.all([load(evaluation(a, half, 2)), load(evaluation(b, half, 2))]); // warm-up
    const oneNode = await load(evaluation(a, options.connections, options.seconds));
    const nodes = await Promise.all([load(evaluation(a, half, options.seconds)), load(evaluation(b, half, options.seconds))]);
    return { nodes, oneNode };
  } finally {
    await b?.stop();
    await a.stop();
  }
}

export async function benchHttp(database: { url: string } | null, options: { seconds: number; connections: number; freshTokens: number }): Promise<HttpRun> {
  const dataDir = database ? null : mkdtempSync(join(tmpdir(), 'leash-bench-http-'));
  const server = await startServer(database ? { DATABASE_URL: database.url } : { LEASH_DATA_DIR: dataDir! });
  try {
    const { privateKey } = await seed(server.url);
    const cachedToken = await mint(privateKey, 0);
    const probe = await fetch(`${server.url}/access/v1/evaluation`, { method: 'POST', headers: { authorization: `Bearer ${PEP}`, 'content-type': 'application/json' }, body: body(cachedToken) });
    const allowed = ((await probe.json()) as { decision?: boolean }).decision === true;

    const at = (path: string) => `${server.url}${path}`;
    const common = { connections: options.connections, duration: options.seconds, headers: { authorization: `Bearer ${PEP}`, 'content-type': 'application/json' } };
    await load({ ...common, url: at('/access/v1/evaluation'), duration: 2, method: 'POST', body: body(cachedToken) }); // warm-up
    const baseline = await load({ ...common, url: at('/healthz'), method: 'GET' });
    const pid = server.child.pid!;
    const cached = await measured(pid, { ...common, url: at('/access/v1/evaluation'), method: 'POST', body: body(cachedToken) });

    // A different token on every request: each one is verified (signature and claims) afresh.
    const bodies: string[] = [];
    for (let i = 1; i <= options.freshTokens; i++) bodies.push(body(await mint(privateKey, i)));
    let next = 0;
    const fresh = await measured(pid, {
      ...common, url: at('/access/v1/evaluation'), method: 'POST',
      requests: [{ method: 'POST', setupRequest: (req) => ({ ...req, body: bodies[next++ % bodies.length] }) }],
    });
    return { cached, fresh, baseline, allowed };
  } finally {
    await server.stop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  }
}
