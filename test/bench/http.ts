// AuthZEN decisions over HTTP under load: `leash serve` in its own process (as deployed),
// autocannon in this one, on the same machine. Each decision is recorded durably before it is
// answered. The baseline, in the same run and with the same load, is GET /healthz on the same
// server: what the HTTP stack alone sustains. Not a test: it measures, it asserts nothing.
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import autocannon from 'autocannon';
import { SignJWT, exportJWK, generateKeyPair, type CryptoKey, type JWK } from 'jose';
import { grantToken, requestToken } from '../../src/tokens/request.ts';
import { serveLeash, type ServeProcess } from '../support/serve.ts';

export const BENCH_ADMIN = 'bench-operator-token-0123456789';
const ADMIN = BENCH_ADMIN;
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

/** The `p`th percentile of ascending `sorted`. */
export const pct = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;

/** CPU time (user + system) of a process so far, µs, from /proc (Linux); 0 if it cannot be read. */
export function cpuMicros(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1e6) / 100; // clock ticks (USER_HZ = 100)
  } catch {
    return 0;
  }
}

/**
 * The PostgreSQL server listening on `port` (its postmaster and the processes it forked), not
 * another one that shares the machine (other work may run its own); none without a port (PGlite).
 */
export function postgresMicros(port: string | undefined): number {
  let total = 0;
  for (const us of postgresMicrosByProcess(port).values()) total += us;
  return total;
}

/** `postgresMicros` process by process: pid → CPU so far, µs. */
export function postgresMicrosByProcess(port: string | undefined): Map<number, number> {
  if (!port) return new Map();
  const postgres: { pid: number; ppid: number; argv: string[] }[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (!readFileSync(`/proc/${entry}/comm`, 'utf8').startsWith('postgres')) continue;
      const ppid = Number(readFileSync(`/proc/${entry}/stat`, 'utf8').split(') ')[1]!.split(' ')[1]);
      postgres.push({ pid: Number(entry), ppid, argv: readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0') });
    } catch {
      // gone meanwhile
    }
  }
  const postmaster = postgres.find((p) => p.argv.some((a, i) => a === '-p' && p.argv[i + 1] === port))?.pid;
  return new Map(postgres.filter((p) => p.pid === postmaster || p.ppid === postmaster).map((p) => [p.pid, cpuMicros(p.pid)]));
}

/** `load`, with the CPU each side spent on it. A backend's processes that exit meanwhile are not counted. */
export async function measured(serverPid: number, options: autocannon.Options, databaseUrl?: string): Promise<HttpResult> {
  const port = databaseUrl ? new URL(databaseUrl).port : undefined;
  const snapshot = () => ({ server: cpuMicros(serverPid), postgres: postgresMicros(port), self: process.cpuUsage() });
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
  /** Absent when no fresh tokens were asked for. */
  fresh?: HttpResult;
  /** The same request with one token Leash issued (POST /oauth/token), when asked for (then `cached` and this alternate in blocks). */
  leashCached?: HttpResult;
  /** The same request with a token acting for another human under her grant (the grant checked on every decision), when Leash tokens were asked for. */
  grantCached?: HttpResult;
  baseline: HttpResult;
  allowed: boolean;
}

export async function startServer(env: Record<string, string>): Promise<ServeProcess> {
  const nodeArgs = (process.env.BENCH_SERVER_NODE_ARGS ?? '').split(' ').filter(Boolean); // e.g. --cpu-prof
  return serveLeash({ ...env, LEASH_ADMIN_TOKEN: ADMIN, LEASH_PEP_TOKENS: PEP }, { nodeArgs });
}

/** An operator call; its answer. */
export async function call(url: string, method: string, path: string, body: unknown): Promise<unknown> {
  const res = await fetch(`${url}${path}`, { method, headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (res.status >= 300) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`);
  return res.json();
}

export interface SeededAgent {
  id: string;
  privateKey: CryptoKey;
  /** The same key as a private JWK (with alg and kid), as `leash token request` reads it. */
  privateJwk: JWK;
}

/** What the benchmark's tokens ask for: read anything in Folder::"invoices" (the agents' ceiling). */
export const READ_INVOICES = [{ type: 'leash:cedar', actions: ['read'], resourceIn: { type: 'Folder', id: 'invoices' } }];

/**
 * The README's demo: alice in finance, an agent with a folder ceiling, a local ES256 key
 * pinned inline. `agents` > 1: more agents like it (`invoice-bot-2`, …), each with a key of its own.
 */
export async function seed(url: string, agents = 1): Promise<{ privateKey: CryptoKey; agents: SeededAgent[] }> {
  await call(url, 'POST', '/v1/groups', { id: 'finance', parents: [] });
  await call(url, 'POST', '/v1/humans', { id: 'alice', email: 'alice@example.com', groups: ['finance'] });
  const seeded: SeededAgent[] = [];
  for (let i = 1; i <= agents; i++) {
    const id = i === 1 ? 'invoice-bot' : `invoice-bot-${i}`;
    const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true });
    const jwk = { ...(await exportJWK(publicKey)), alg: 'ES256', kid: 'k1' };
    await call(url, 'POST', '/v1/agents', {
      id, owner: 'alice', purpose: 'pay approved invoices', provenance: { model: 'm', modelVersion: '1', environment: 'production' },
      trustScore: 60, groups: ['finance'], tags: [],
      credentials: { issuer: 'https://idp.example', audience: 'leash', algorithms: ['ES256'], clockSkewSeconds: 30, maxTokenLifetimeSeconds: 600, jwks: { keys: [jwk] } },
      ceiling: { template: 'ceiling-folder', values: { '?resource': { type: 'Folder', id: 'invoices' } } },
    });
    seeded.push({ id, privateKey, privateJwk: { ...(await exportJWK(privateKey)), alg: 'ES256', kid: 'k1' } });
  }
  await new Promise((r) => setTimeout(r, 1100)); // tokens must be issued after the authorize below (whole seconds)
  for (const a of seeded) await call(url, 'POST', `/v1/agents/${a.id}/authorize`, { grants: [] });
  await new Promise((r) => setTimeout(r, 1100));
  return { privateKey: seeded[0]!.privateKey, agents: seeded };
}

export const mint = (privateKey: CryptoKey, i: number, agent = 'invoice-bot') => {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ authorization_details: READ_INVOICES, jti: `bench-${i}` })
    .setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setIssuer('https://idp.example').setAudience('leash').setSubject(agent)
    .setIssuedAt(now).setExpirationTime(now + 600).sign(privateKey);
};

/** The benchmark's decision: the agent reads a document of a folder (by default one its token and ceiling cover). */
export const body = (token: string, agent = 'invoice-bot', doc = 'inv-42', folder = 'invoices') => JSON.stringify({
  subject: { type: 'agent', id: agent, properties: { token } },
  action: { name: 'read' },
  resource: { type: 'Document', id: doc },
  context: { entities: [{ uid: { type: 'Document', id: doc }, attrs: {}, parents: [{ type: 'Folder', id: folder }] }, { uid: { type: 'Folder', id: folder }, attrs: {}, parents: [] }] },
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

/** How many blocks of each the Leash-token comparison alternates (see benchHttp). */
const LEASH_TOKEN_BLOCKS = 2;

/** How many blocks of each the fresh-token comparison alternates (see benchHttp). */
export const FRESH_TOKEN_BLOCKS = 3;

/** Runs of equal length as one: their mean rate, mean p50, worst p99, summed failures, CPU per request over all. */
export function merged(runs: HttpResult[]): HttpResult {
  const sum = (f: (r: HttpResult) => number) => runs.reduce((a, r) => a + f(r), 0);
  const answered = sum((r) => r.perSecond);
  const cpu = (f: (c: NonNullable<HttpResult['cpu']>) => number) => Math.round(sum((r) => (r.cpu ? f(r.cpu) * r.perSecond : 0)) / answered);
  return {
    perSecond: answered / runs.length, p50: sum((r) => r.p50) / runs.length, p99: Math.max(...runs.map((r) => r.p99)),
    non2xx: sum((r) => r.non2xx), errors: sum((r) => r.errors),
    ...(runs.every((r) => r.cpu) ? { cpu: { server: cpu((c) => c.server), postgres: cpu((c) => c.postgres), loadGenerator: cpu((c) => c.loadGenerator) } } : {}),
  };
}

/**
 * The same decision with the context a finance deployment sends along: the document's folder
 * chain up to the company's (four entities) and three more documents and folders beside it.
 */
export const financeBody = (token: string) => JSON.stringify({
  subject: { type: 'agent', id: 'invoice-bot', properties: { token } },
  action: { name: 'read' },
  resource: { type: 'Document', id: 'inv-42' },
  context: {
    entities: [
      { uid: { type: 'Document', id: 'inv-42' }, attrs: {}, parents: [{ type: 'Folder', id: 'invoices' }] },
      { uid: { type: 'Folder', id: 'invoices' }, attrs: {}, parents: [{ type: 'Folder', id: 'finance' }] },
      { uid: { type: 'Folder', id: 'finance' }, attrs: {}, parents: [{ type: 'Folder', id: 'company' }] },
      { uid: { type: 'Folder', id: 'company' }, attrs: {}, parents: [] },
      { uid: { type: 'Document', id: 'inv-43' }, attrs: {}, parents: [{ type: 'Folder', id: 'invoices' }] },
      { uid: { type: 'Folder', id: 'archive' }, attrs: {}, parents: [{ type: 'Folder', id: 'finance' }] },
      { uid: { type: 'Document', id: 'inv-2021-7' }, attrs: {}, parents: [{ type: 'Folder', id: 'archive' }] },
    ],
  },
});

export const decides = async (url: string, token: string, request = body) => {
  const probe = await fetch(`${url}/access/v1/evaluation`, { method: 'POST', headers: { authorization: `Bearer ${PEP}`, 'content-type': 'application/json' }, body: request(token) });
  return ((await probe.json()) as { decision?: boolean }).decision === true;
};

/**
 * The cached-token run, the /healthz baseline, and as asked: `freshTokens` (> 0) a different
 * self-signed token on every request; `leashToken` the cached run again with one token Leash issued.
 */
export async function benchHttp(database: { url: string } | null, options: { seconds: number; connections: number; freshTokens: number; leashToken?: boolean; request?: (token: string) => string; afterSeed?: () => Promise<void> }): Promise<HttpRun> {
  if (options.leashToken && options.freshTokens > 0) throw new Error('benchHttp: a Leash token run or a fresh-token run, not both');
  const request = options.request ?? ((token: string) => body(token));
  const dataDir = database ? null : mkdtempSync(join(tmpdir(), 'leash-bench-http-'));
  const server = await startServer(database ? { DATABASE_URL: database.url } : { LEASH_DATA_DIR: dataDir! });
  try {
    const { privateKey, agents: [agent] } = await seed(server.url);
    await options.afterSeed?.();
    const cachedToken = await mint(privateKey, 0);
    let allowed = await decides(server.url, cachedToken, request);

    const at = (path: string) => `${server.url}${path}`;
    const common = { connections: options.connections, duration: options.seconds, headers: { authorization: `Bearer ${PEP}`, 'content-type': 'application/json' } };
    await load({ ...common, url: at('/access/v1/evaluation'), duration: 2, method: 'POST', body: request(cachedToken) }); // warm-up
    const baseline = await load({ ...common, url: at('/healthz'), method: 'GET' });
    const pid = server.child.pid!;
    const evaluate = (token: string, duration = options.seconds) => measured(pid, { ...common, url: at('/access/v1/evaluation'), method: 'POST', body: request(token), duration }, database?.url);

    let cached: HttpResult;
    let leashCached: HttpResult | undefined;
    let grantCached: HttpResult | undefined;
    if (options.leashToken) {
      // One token from POST /oauth/token, as `leash token request` gets it: verified once, then cached.
      const answer = await requestToken({ base: server.url, privateJwk: agent!.privateJwk, agent: agent!.id, details: READ_INVOICES });
      if (!('access_token' in answer)) throw new Error(`POST /oauth/token refused the benchmark agent: ${JSON.stringify(answer)}`);
      allowed &&= await decides(server.url, answer.access_token, request);
      // And one acting for carol, who is not the agent's owner, under her grant: each decision
      // finds the grant and checks that it covers the token.
      await call(server.url, 'POST', '/v1/humans', { id: 'carol', email: 'carol@example.com', groups: ['finance'] });
      const grant = await call(server.url, 'POST', '/v1/humans/carol/grants', {
        agent: agent!.id, authorization_details: READ_INVOICES, expiresAt: new Date(Date.now() + 86_400_000).toISOString(), purpose: 'benchmark',
      }) as { id: string };
      const forCarol = await grantToken({ base: server.url, privateJwk: agent!.privateJwk, agent: agent!.id, details: READ_INVOICES, grant: grant.id });
      if (!('access_token' in forCarol)) throw new Error(`the grant's token exchange refused the benchmark agent: ${JSON.stringify(forCarol)}`);
      allowed &&= await decides(server.url, forCarol.access_token, request);
      // Side by side in alternating blocks (own, Leash's, carol's, own, …), so that a change in
      // what else the machine runs falls on all alike.
      const own: HttpResult[] = [];
      const leash: HttpResult[] = [];
      const granted: HttpResult[] = [];
      const block = Math.max(1, Math.round(options.seconds / LEASH_TOKEN_BLOCKS));
      for (let i = 0; i < LEASH_TOKEN_BLOCKS; i++) {
        own.push(await evaluate(cachedToken, block));
        leash.push(await evaluate(answer.access_token, block));
        granted.push(await evaluate(forCarol.access_token, block));
      }
      cached = merged(own);
      leashCached = merged(leash);
      grantCached = merged(granted);
    } else if (options.freshTokens > 0) {
      // A different token on every request, each one verified (signature and claims) afresh,
      // in blocks alternating with the cached token's, so that what else the machine runs
      // falls on both alike. Each block has tokens of its own, never sent before (each
      // connection takes the next one as it sends). autocannon builds every request of both
      // kinds as it sends it (the cached token's too, its one body again): what it spends per
      // request, on the cores the server runs on, is then the same for both, and the
      // difference is the server's.
      const block = Math.max(1, Math.round(options.seconds / FRESH_TOKEN_BLOCKS));
      const perBlock = Math.ceil(options.freshTokens / FRESH_TOKEN_BLOCKS);
      const cachedBody = request(cachedToken);
      let minted = 0;
      const own: HttpResult[] = [];
      const each: HttpResult[] = [];
      const sending = (next: () => string, duration: number) => measured(pid, {
        ...common, url: at('/access/v1/evaluation'), method: 'POST', duration,
        requests: [{ method: 'POST', setupRequest: (req) => ({ ...req, body: next() }) }],
      }, database?.url);
      for (let i = 0; i < FRESH_TOKEN_BLOCKS; i++) {
        const bodies: string[] = [];
        while (bodies.length < perBlock) bodies.push(request(await mint(privateKey, ++minted)));
        own.push(await sending(() => cachedBody, block));
        let next = 0;
        each.push(await sending(() => bodies[next++ % bodies.length]!, block));
        if (next > bodies.length) throw new Error(`a fresh-token block sent ${next} requests with ${bodies.length} tokens: some were sent twice`);
      }
      return { cached: merged(own), fresh: merged(each), leashCached, grantCached, baseline, allowed };
    } else {
      cached = await evaluate(cachedToken);
    }
    return { cached, leashCached, grantCached, baseline, allowed };
  } finally {
    await server.stop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  }
}
