import { performance } from 'node:perf_hooks';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freshPostgres } from '../support/backends.ts';
import { serveLeash, type ServeProcess } from '../support/serve.ts';
import { freePort, startNats, type NatsServer } from '../support/servers.ts';

// SPEC §6 with the real parts: `leash serve` processes sharing one PostgreSQL and one NATS
// (or a cluster of three NATS servers), driven over HTTP as an operator and a PEP would.

const ADMIN = 'test-operator-token-0123456789abcdef';
const PEP = 'test-pep-token-0123456789abcdef';
const keys = await generateKeyPair('ES256', { extractable: true });
const jwk = { ...(await exportJWK(keys.publicKey)), alg: 'ES256', kid: 'k1' };
const credentials = { issuer: 'https://idp.example', audience: 'leash', algorithms: ['ES256'], clockSkewSeconds: 5, maxTokenLifetimeSeconds: 600, jwks: { keys: [jwk] } };

async function api(node: ServeProcess, method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(`${node.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, body: await res.json() };
}

async function must(node: ServeProcess, method: string, path: string, body?: unknown): Promise<any> {
  const res = await api(node, method, path, body);
  if (res.status >= 300) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body;
}

const mint = (agent: string) => {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ authorization_details: [{ type: 'leash:cedar', actions: ['read'], resourceIn: { type: 'Folder', id: 'invoices' } }] })
    .setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setIssuer(credentials.issuer).setAudience('leash').setSubject(agent)
    .setIssuedAt(now).setExpirationTime(now + 600).sign(keys.privateKey);
};

const request = (agent: string, token: string) => JSON.stringify({
  subject: { type: 'agent', id: agent, properties: { token } },
  action: { name: 'read' },
  resource: { type: 'Document', id: 'inv-42' },
  context: { entities: [{ uid: { type: 'Document', id: 'inv-42' }, attrs: {}, parents: [{ type: 'Folder', id: 'invoices' }] }, { uid: { type: 'Folder', id: 'invoices' }, attrs: {}, parents: [] }] },
});

/** The PEP's question; `decision` is null when the node refused to answer (e.g. 503). */
async function decide(node: ServeProcess, agent: string, token: string): Promise<{ status: number; decision: boolean | null; code?: string }> {
  const res = await fetch(`${node.url}/access/v1/evaluation`, { method: 'POST', headers: { authorization: `Bearer ${PEP}`, 'content-type': 'application/json' }, body: request(agent, token) });
  const body = (await res.json()) as { decision?: boolean; context?: { code?: string }; code?: string };
  return { status: res.status, decision: res.status === 200 ? body.decision ?? null : null, code: body.context?.code ?? body.code };
}

const readyz = async (node: ServeProcess) => {
  const res = await fetch(`${node.url}/readyz`);
  return { status: res.status, body: (await res.json()) as { checks: { broadcast: { ok: boolean; detail: string } } } };
};

async function eventually<T>(what: string, probe: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`${what}: still ${JSON.stringify(v)} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const agentBody = (id: string) => ({
  id, owner: 'alice', purpose: 'read invoices', provenance: { model: 'm', modelVersion: '1', environment: 'production' }, trustScore: 60,
  groups: ['finance'], tags: ['cluster-test'], credentials, ceiling: { template: 'ceiling-folder', values: { '?resource': { type: 'Folder', id: 'invoices' } } },
});

/** alice in finance and active agents `ids`; tokens minted after this returns are valid. */
async function seed(node: ServeProcess, ids: string[]): Promise<void> {
  await must(node, 'POST', '/v1/groups', { id: 'finance', parents: [] });
  await must(node, 'POST', '/v1/humans', { id: 'alice', email: 'alice@example.com', groups: ['finance'] });
  for (const id of ids) await must(node, 'POST', '/v1/agents', agentBody(id));
  await new Promise((r) => setTimeout(r, 1100)); // `iat` has whole seconds: tokens must postdate the authorize
  for (const id of ids) await must(node, 'POST', `/v1/agents/${id}/authorize`, { grants: [] });
  await new Promise((r) => setTimeout(r, 1100));
}

type Env = Record<string, string>;
const nodeEnv = (id: string, database: string, nats: string): Env => ({
  LEASH_NODE_ID: id, DATABASE_URL: database, NATS_URL: nats, LEASH_ADMIN_TOKEN: ADMIN, LEASH_PEP_TOKENS: PEP, LEASH_STALENESS_MS: '1000',
});

/** Until every node hears all the others (heartbeats over NATS). */
async function allLive(nodes: ServeProcess[]): Promise<void> {
  for (const node of nodes) {
    await eventually('every node hears the others', () => readyz(node), (r) => r.status === 200 && r.body.checks.broadcast.detail.startsWith(`${nodes.length} live node(s)`), 20_000);
  }
}

/** Every node answers allow for each agent: tokens verified and cached everywhere. */
async function warm(nodes: ServeProcess[], tokens: Record<string, string>): Promise<void> {
  for (const node of nodes) {
    for (const [agent, token] of Object.entries(tokens)) {
      expect(await decide(node, agent, token), `${agent} on ${node.url}`).toMatchObject({ decision: true });
    }
  }
}

describe('revocation broadcast: three nodes on one Postgres and one nats-server', () => {
  let nats: NatsServer;
  let database: string;
  const nodes: ServeProcess[] = [];
  const env: Env[] = [];
  const tokens: Record<string, string> = {};
  const agents = ['bot-revoke', 'bot-rotate', 'bot-restart', 'bot-cut', 'bot-ok'];

  beforeAll(async () => {
    nats = await startNats();
    database = (await freshPostgres()).url;
    for (let i = 1; i <= 3; i++) env.push(nodeEnv(`node-${i}`, database, nats.url));
    nodes.push(await serveLeash(env[0]!)); // the first publishes the policy set; the others find it
    nodes.push(...(await Promise.all([serveLeash(env[1]!), serveLeash(env[2]!)])));
    await seed(nodes[0]!, agents);
    for (const a of agents) tokens[a] = await mint(a);
  }, 120_000);

  afterAll(async () => {
    await Promise.all(nodes.map((n) => n.stop()));
    await nats?.stop();
  });

  it('revoke through node 1: all three confirm before it returns, and no request sent after that is allowed anywhere', async () => {
    const agent = 'bot-revoke';
    await warm(nodes, { [agent]: tokens[agent]! });
    const seen: { node: number; sentAt: number; allow: boolean | null }[] = [];
    let stop = false;
    // Four PEPs per node ask as fast as they can, before, during and after the revoke.
    const hammer = nodes.flatMap((node, n) =>
      Array.from({ length: 4 }, async () => {
        while (!stop) {
          const sentAt = performance.now();
          const { decision } = await decide(node, agent, tokens[agent]!);
          seen.push({ node: n, sentAt, allow: decision });
        }
      }),
    );
    await new Promise((r) => setTimeout(r, 300));
    const revoked = await api(nodes[0]!, 'POST', `/v1/agents/${agent}/revoke`, { mode: 'immediate', reason: 'key leaked' });
    const returnedAt = performance.now();
    await new Promise((r) => setTimeout(r, 300));
    stop = true;
    await Promise.all(hammer);

    expect(revoked.status).toBe(200);
    expect(revoked.body).toMatchObject({ status: 'revoked', nodesConfirmed: 3, nodesExpected: 3, nodesMissing: [] });
    expect(revoked.body.position).toBeGreaterThan(0);
    for (let n = 0; n < 3; n++) {
      const before = seen.filter((s) => s.node === n && s.sentAt < returnedAt);
      const after = seen.filter((s) => s.node === n && s.sentAt > returnedAt);
      expect(before.some((s) => s.allow), `node ${n + 1} allowed before the revoke`).toBe(true);
      expect(after.length, `node ${n + 1} was asked after the revoke`).toBeGreaterThan(5);
      expect(after.filter((s) => s.allow !== false), `node ${n + 1} after the revoke`).toEqual([]);
    }
  });

  it('rotate: tokens issued before it are refused on every node as soon as the call returns', async () => {
    const agent = 'bot-rotate';
    await warm(nodes, { [agent]: tokens[agent]! });
    const rotated = await api(nodes[1]!, 'POST', `/v1/agents/${agent}/rotate`, { credentials });
    expect(rotated.status).toBe(200);
    expect(rotated.body).toMatchObject({ nodesConfirmed: 3, nodesExpected: 3 });
    for (const node of nodes) expect(await decide(node, agent, tokens[agent]!)).toMatchObject({ decision: false, code: 'TOKEN_ISSUED_BEFORE_ROTATION' });
    await new Promise((r) => setTimeout(r, 1100));
    tokens[agent] = await mint(agent);
    for (const node of nodes) expect(await decide(node, agent, tokens[agent]!)).toMatchObject({ decision: true });
  });

  it('a node stopped during a revoke is not waited for, and after its restart it catches up and denies', async () => {
    const agent = 'bot-restart';
    await warm(nodes, { [agent]: tokens[agent]! });
    await nodes[2]!.stop(); // says it is leaving: the fence no longer expects it
    const revoked = await api(nodes[0]!, 'POST', `/v1/agents/${agent}/revoke`, { mode: 'immediate', reason: 'restart test' });
    expect(revoked.body).toMatchObject({ nodesConfirmed: 2, nodesExpected: 2, nodesMissing: [] });
    nodes[2] = await serveLeash(env[2]!, { port: nodes[2]!.port });
    expect(await decide(nodes[2]!, agent, tokens[agent]!)).toMatchObject({ decision: false });
    expect(await decide(nodes[2]!, 'bot-ok', tokens['bot-ok']!)).toMatchObject({ decision: true });
  });

  it('NATS stopped: the revoke names the nodes it could not reach, they fail closed (readyz 503, re-read the log), and heal when NATS returns', async () => {
    const agent = 'bot-cut';
    await warm(nodes, { [agent]: tokens[agent]!, 'bot-ok': tokens['bot-ok']! });
    await allLive(nodes);
    await nats.stop();
    const started = performance.now();
    const revoked = await api(nodes[0]!, 'POST', `/v1/agents/${agent}/revoke`, { mode: 'immediate', reason: 'cut off' });
    expect(revoked.status).toBe(200);
    // Node 1 applied it; the other two were live a moment ago and did not answer in time.
    expect(revoked.body).toMatchObject({ nodesConfirmed: 1, nodesExpected: 3, nodesMissing: ['node-2', 'node-3'] });
    expect(performance.now() - started).toBeGreaterThanOrEqual(1000); // the fence waited out the staleness bound
    for (const node of nodes) {
      const ready = await readyz(node);
      expect(ready.status).toBe(503);
      expect(ready.body.checks.broadcast.ok).toBe(false);
      // Cut off from the broadcast, a node re-reads the log before deciding: the revoke holds, the rest still works.
      expect(await decide(node, agent, tokens[agent]!)).toMatchObject({ decision: false });
      expect(await decide(node, 'bot-ok', tokens['bot-ok']!)).toMatchObject({ decision: true });
    }

    nats = await startNats({ port: nats.port });
    await allLive(nodes); // each node ready again, hearing the other two
    const again = await api(nodes[1]!, 'POST', '/v1/agents/bot-ok/suspend', { reason: 'after healing' });
    expect(again.body).toMatchObject({ nodesConfirmed: 3, nodesExpected: 3, nodesMissing: [] });
    for (const node of nodes) {
      expect(await decide(node, agent, tokens[agent]!)).toMatchObject({ decision: false });
      expect(await decide(node, 'bot-ok', tokens['bot-ok']!)).toMatchObject({ decision: false });
    }
  });

  it('a kill switch by tag is confirmed by all three before it returns', async () => {
    await allLive(nodes);
    await warm(nodes, { 'bot-rotate': tokens['bot-rotate']! });
    const res = await api(nodes[2]!, 'POST', '/v1/kill-switch', { scope: { tag: 'cluster-test' }, mode: 'immediate', reason: 'incident' });
    expect(res.body).toMatchObject({ revoked: ['bot-ok', 'bot-rotate'], nodesConfirmed: 3, nodesExpected: 3, nodesMissing: [] });
    for (const node of nodes) expect(await decide(node, 'bot-rotate', tokens['bot-rotate']!)).toMatchObject({ decision: false });
  });
});

describe('revocation broadcast over a three-server NATS cluster', () => {
  const servers: NatsServer[] = [];
  const nodes: ServeProcess[] = [];
  const tokens: Record<string, string> = {};
  const agents = ['bot-1', 'bot-2', 'bot-3'];

  beforeAll(async () => {
    const clusterPorts = [await freePort(), await freePort(), await freePort()];
    for (let i = 0; i < 3; i++) servers.push(await startNats({ cluster: { port: clusterPorts[i]!, routes: clusterPorts.filter((_, j) => j !== i) } }));
    const database = (await freshPostgres()).url;
    // Each node lists its own server first and fails over to the others.
    const natsFor = (i: number) => [servers[i]!, ...servers.filter((_, j) => j !== i)].map((s) => s.url).join(',');
    nodes.push(await serveLeash(nodeEnv('node-1', database, natsFor(0))));
    nodes.push(...(await Promise.all([serveLeash(nodeEnv('node-2', database, natsFor(1))), serveLeash(nodeEnv('node-3', database, natsFor(2)))])));
    await seed(nodes[0]!, agents);
    for (const a of agents) tokens[a] = await mint(a);
    await allLive(nodes); // routes form in the background
  }, 120_000);

  afterAll(async () => {
    await Promise.all(nodes.map((n) => n.stop()));
    await Promise.all(servers.map((s) => s.stop()));
  });

  it('reaches nodes on every server, and stopping one server loses no revocation', async () => {
    await warm(nodes, { 'bot-1': tokens['bot-1']!, 'bot-2': tokens['bot-2']! });
    const first = await api(nodes[0]!, 'POST', '/v1/agents/bot-1/revoke', { mode: 'immediate', reason: 'cluster' });
    expect(first.body).toMatchObject({ nodesConfirmed: 3, nodesExpected: 3, nodesMissing: [] });
    for (const node of nodes) expect(await decide(node, 'bot-1', tokens['bot-1']!)).toMatchObject({ decision: false });

    await servers[1]!.stop(); // node-2's server: it reconnects to another and catches up
    const second = await api(nodes[0]!, 'POST', '/v1/agents/bot-2/revoke', { mode: 'immediate', reason: 'server down' });
    expect(second.status).toBe(200);
    for (const node of nodes) expect(await decide(node, 'bot-2', tokens['bot-2']!)).toMatchObject({ decision: false });
    // node-2 is back on the broadcast through another server, with nothing missed.
    await eventually('node-2 ready', () => readyz(nodes[1]!), (r) => r.status === 200);
    const third = await api(nodes[2]!, 'POST', '/v1/agents/bot-3/retire', { reason: 'done' });
    expect(third.body).toMatchObject({ nodesConfirmed: 3, nodesExpected: 3, nodesMissing: [] });
  });
});
