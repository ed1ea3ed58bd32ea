// Revocation across nodes (SPEC §6): N `leash serve` processes sharing one PostgreSQL and one
// nats-server, every agent warm on every node. Each revoke is timed from request to the
// response carrying every node's confirmation, and right after it every node is asked about
// the revoked agent: any allow would be a broken fence. The measured revokes follow a warm-up
// of the same loop on agents of their own, so they see nodes in their steady state, not still
// optimising the revoke path's code or collecting the garbage of the warming decisions; the
// warm-up's own figures are returned too. The baseline, in the same run and on the same
// database, is the naive alternative: N followers polling Postgres every 100 ms, timed from
// the committed revoke until all N have applied it. Measures; asserts nothing.
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import { RegistryView } from '../../src/registry/registry-view.ts';
import { agentAggregate } from '../../src/registry/streams.ts';
import { CommandHandler } from '../../src/service/command-handler.ts';
import { connect } from '../../src/store/connect.ts';
import { EventStore } from '../../src/store/event-store.ts';
import { Follower } from '../../src/store/follower.ts';
import { serveLeash, type ServeProcess } from '../support/serve.ts';
import { startNats } from '../support/servers.ts';

const ADMIN = 'bench-operator-token-0123456789';
const PEP = 'bench-pep-token-0123456789abcdef';

export interface RevocationRun {
  nodes: number;
  /** Request → response, ms, one per measured revoke. */
  fenced: number[];
  /** The same for the warm-up revokes before them (not counted in `fenced`). */
  warmUp: number[];
  confirmedByAll: number;
  checks: number;
  allowsAfter: number;
  /** Committed → applied by every polling follower, ms. */
  polling: number[];
  /** The revoking node's own account (Server-Timing): durable append, then what was left of the fence. */
  timings: { commit: number[]; fence: number[] };
  /** GET /healthz through the same client, ms: the HTTP round trip alone. */
  roundTrip: number[];
}

/** Keep-alive node:http (fetch's own overhead here is ~0.4 ms a request, more than a tenth of what is measured). */
const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
export function request(url: string, method: string, headers: Record<string, string>, body?: string): Promise<{ status: number; text: string; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, agent, headers: body === undefined ? headers : { ...headers, 'content-length': String(Buffer.byteLength(body)) } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode!, text, headers: res.headers }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

export async function pool<T>(items: T[], width: number, work: (item: T) => Promise<void>): Promise<void> {
  const queue = [...items];
  await Promise.all(Array.from({ length: width }, async () => {
    for (let item = queue.shift(); item !== undefined; item = queue.shift()) await work(item);
  }));
}

export async function benchRevocation(databaseUrl: string, options: { nodes: number; revocations: number; warmUpRevocations: number; pollingRevocations: number }): Promise<RevocationRun> {
  const nats = await startNats();
  const nodes: ServeProcess[] = [];
  const env = (i: number) => ({ DATABASE_URL: databaseUrl, NATS_URL: nats.url, LEASH_NODE_ID: `bench-${i}`, LEASH_ADMIN_TOKEN: ADMIN, LEASH_PEP_TOKENS: PEP });
  try {
    const nodeArgs = (process.env.BENCH_SERVER_NODE_ARGS ?? '').split(' ').filter(Boolean); // e.g. --cpu-prof
    nodes.push(await serveLeash(env(1), { nodeArgs })); // publishes the policy set; the others find it
    for (let i = 2; i <= options.nodes; i += 3) {
      nodes.push(...(await Promise.all([i, i + 1, i + 2].filter((n) => n <= options.nodes).map((n) => serveLeash(env(n), { nodeArgs })))));
    }
    const timings = { commit: [] as number[], fence: [] as number[] };
    const call = async (node: ServeProcess, path: string, body: unknown, token = ADMIN) => {
      const res = await request(`${node.url}${path}`, 'POST', { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, JSON.stringify(body));
      const json = JSON.parse(res.text) as Record<string, unknown>;
      if (res.status >= 300) throw new Error(`POST ${path}: ${res.status} ${JSON.stringify(json)}`);
      for (const m of String(res.headers['server-timing'] ?? '').matchAll(/(commit|fence);dur=([\d.]+)/g)) timings[m[1] as 'commit' | 'fence'].push(Number(m[2]));
      return json;
    };

    // 1. Agents: those revoked through the fence, and those the polling baseline revokes.
    const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true });
    const jwk = { ...(await exportJWK(publicKey)), alg: 'ES256', kid: 'k1' };
    const credentials = { issuer: 'https://idp.example', audience: 'leash', algorithms: ['ES256'], clockSkewSeconds: 30, maxTokenLifetimeSeconds: 600, jwks: { keys: [jwk] } };
    // The warm-up agents first, then the measured ones, then the polling baseline's.
    const fencedCount = options.warmUpRevocations + options.revocations;
    const ids = Array.from({ length: fencedCount + options.pollingRevocations }, (_, i) => `agent-${String(i).padStart(5, '0')}`);
    await call(nodes[0]!, '/v1/groups', { id: 'finance', parents: [] });
    await call(nodes[0]!, '/v1/humans', { id: 'alice', email: 'alice@example.com', groups: ['finance'] });
    await pool(ids, 16, async (id) => {
      await call(nodes[0]!, '/v1/agents', {
        id, owner: 'alice', purpose: 'benchmark', provenance: { model: 'm', modelVersion: '1', environment: 'production' }, trustScore: 60,
        groups: ['finance'], tags: [], credentials, ceiling: { template: 'ceiling-folder', values: { '?resource': { type: 'Folder', id: 'invoices' } } },
      });
    });
    await new Promise((r) => setTimeout(r, 1100));
    await pool(ids, 16, async (id) => void (await call(nodes[0]!, `/v1/agents/${id}/authorize`, { grants: [] })));
    await new Promise((r) => setTimeout(r, 1100)); // tokens must postdate the authorize (whole seconds)
    const now = Math.floor(Date.now() / 1000);
    const tokens = new Map<string, string>();
    for (const id of ids.slice(0, fencedCount)) {
      tokens.set(id, await new SignJWT({ authorization_details: [{ type: 'leash:cedar', actions: ['read'], resourceIn: { type: 'Folder', id: 'invoices' } }] })
        .setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setIssuer(credentials.issuer).setAudience('leash').setSubject(id)
        .setIssuedAt(now).setExpirationTime(now + 600).sign(privateKey));
    }
    const decide = async (node: ServeProcess, id: string) =>
      (await call(node, '/access/v1/evaluation', {
        subject: { type: 'agent', id, properties: { token: tokens.get(id) } }, action: { name: 'read' }, resource: { type: 'Document', id: 'inv-1' },
        context: { entities: [{ uid: { type: 'Document', id: 'inv-1' }, attrs: {}, parents: [{ type: 'Folder', id: 'invoices' }] }, { uid: { type: 'Folder', id: 'invoices' }, attrs: {}, parents: [] }] },
      }, PEP)).decision === true;

    // 2. Warm: every node has verified and decided every agent's token once (all allowed).
    await pool(nodes, nodes.length, async (node) => {
      await pool([...tokens.keys()], 4, async (id) => {
        if (!(await decide(node, id))) throw new Error(`${id} is not allowed on ${node.url} before its revoke`);
      });
    });
    // Every node hears all the others before the first revoke.
    for (const node of nodes) {
      const deadline = Date.now() + 20_000;
      for (;;) {
        const r = (await (await fetch(`${node.url}/readyz`)).json()) as { checks: { broadcast: { detail: string } } };
        if (r.checks.broadcast.detail.startsWith(`${nodes.length} live node(s)`)) break;
        if (Date.now() > deadline) throw new Error(`node ${node.url}: ${r.checks.broadcast.detail}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }

    // 3. Fenced revokes, one at a time, through each node in turn; then ask every node. The
    //    warm-up runs the same loop (its figures kept apart), the measured revokes follow.
    const warmUp: number[] = [];
    const fenced: number[] = [];
    let confirmedByAll = 0;
    let checks = 0;
    let allowsAfter = 0;
    for (const [i, id] of [...tokens.keys()].entries()) {
      if (i === options.warmUpRevocations) timings.commit.length = timings.fence.length = 0;
      const t0 = performance.now();
      const res = await call(nodes[i % nodes.length]!, `/v1/agents/${id}/revoke`, { mode: 'immediate', reason: 'benchmark' });
      (i < options.warmUpRevocations ? warmUp : fenced).push(performance.now() - t0);
      if (res.nodesConfirmed === nodes.length && res.nodesExpected === nodes.length) confirmedByAll++;
      const answers = await Promise.all(nodes.map((node) => decide(node, id)));
      checks += answers.length;
      allowsAfter += answers.filter(Boolean).length;
    }
    const roundTrip: number[] = [];
    for (let i = 0; i < Math.min(1000, fencedCount); i++) {
      const t0 = performance.now();
      await request(`${nodes[i % nodes.length]!.url}/healthz`, 'GET', {});
      roundTrip.push(performance.now() - t0);
    }

    // 4. Baseline: followers polling the log every 100 ms, revokes committed in this process.
    const connection = await connect({ kind: 'postgres', url: databaseUrl, poolSize: options.nodes + 4 });
    const polling: number[] = [];
    try {
      const store = new EventStore(connection.db);
      // Each its own store object: it hears only what it polls, not this process's commits.
      const followers = Array.from({ length: options.nodes }, () => new Follower(new EventStore(connection.db), new RegistryView(), { pollMs: 100 }));
      await Promise.all(followers.map((f) => f.start()));
      const writer = new Follower(store, new RegistryView(), { pollMs: 60_000 });
      await writer.start();
      const commands = new CommandHandler(store, writer);
      for (const id of ids.slice(fencedCount)) {
        const { position } = await commands.handle(agentAggregate, id, { type: 'RevokeAgent', data: { mode: 'immediate', reason: 'benchmark' }, metadata: { now: new Date() } }, { now: new Date(), actor: 'bench' });
        const t0 = performance.now();
        while (followers.some((f) => f.position < position)) await new Promise((r) => setTimeout(r, 1));
        polling.push(performance.now() - t0);
      }
      for (const f of [...followers, writer]) f.stop();
    } finally {
      await connection.db.destroy();
    }
    return { nodes: nodes.length, fenced, warmUp, confirmedByAll, checks, allowsAfter, polling, timings, roundTrip };
  } finally {
    await Promise.all(nodes.map((n) => n.stop()));
    await nats.stop();
  }
}
