import { fileURLToPath } from 'node:url';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import type { Backend } from '../../src/store/connect.ts';
import { startNode, type LeashNode, type NodeOptions } from '../../src/node.ts';

export const ADMIN_TOKEN = 'test-operator-token-0123456789abcdef';
export const PEP_TOKEN = 'test-pep-token-0123456789abcdef';
export const CEDAR_DIR = fileURLToPath(new URL('../../cedar', import.meta.url));

export interface TestNode extends LeashNode {
  /** An operator call through fastify.inject; `token: null` sends none. */
  api(method: string, url: string, body?: unknown, headers?: Record<string, string>, token?: string | null): Promise<{ status: number; headers: Record<string, unknown>; body: any }>;
  /** How many events the log holds (committed), for "nothing was appended" checks. */
  eventCount(): Promise<number>;
}

export async function startTestNode(
  backend: Backend,
  options: { nodeId?: string; pollMs?: number; cedarDir?: string } & Pick<NodeOptions, 'bus' | 'stalenessMs' | 'heartbeatMs' | 'allowPrivateUrls' | 'maxDelegationDepth' | 'natsUrl' | 'logger' | 'humanPins' | 'approvalTtlSeconds' | 'approvalWebhook' | 'approvalBackoffMs' | 'monitoring' | 'clock' | 'monitorSeed' | 'policyCheck' | 'metricsToken' | 'metrics' | 'ssf'> = {},
): Promise<TestNode> {
  // Tests serve JWKS from loopback: private URLs are allowed unless a test says otherwise.
  // The detectors are off unless a test asks for them: other tests deny one agent often, on purpose.
  const { nodeId = 'test-node', pollMs = 50, cedarDir = CEDAR_DIR, allowPrivateUrls = true, monitoring = null, ...cluster } = options;
  const node = await startNode({ backend, adminToken: ADMIN_TOKEN, pepTokens: [PEP_TOKEN], cedarDir, nodeId, pollMs, allowPrivateUrls, monitoring, ...cluster });
  return {
    ...node,
    async api(method, url, body, headers = {}, token = ADMIN_TOKEN) {
      const res = await node.app.inject({
        method: method as 'GET',
        url,
        headers: { ...(token === null ? {} : { authorization: `Bearer ${token}` }), ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
        ...(body === undefined ? {} : { payload: typeof body === 'string' ? body : JSON.stringify(body) }),
      });
      let parsed: unknown = res.body;
      try {
        parsed = JSON.parse(res.body);
      } catch {
        // not JSON; keep the text
      }
      return { status: res.statusCode, headers: res.headers, body: parsed };
    },
    async eventCount() {
      // Counted in the table itself: readAll holds back rows past the server-wide snapshot xmin,
      // which another test file's open transaction (in another database of the same server) can
      // pin, so a count through it can jump when that transaction ends.
      const { n } = await node.connection.db.selectFrom('events').select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow();
      return Number(n);
    },
  };
}

const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true });
/** Signs tokens that verify against `credentials()` (kid k1). */
export const agentPrivateKey = privateKey;
export const publicJwk = { ...(await exportJWK(publicKey)), alg: 'ES256', kid: 'k1' };

export const credentials = (overrides: Record<string, unknown> = {}) => ({
  issuer: 'https://idp.example',
  audience: 'leash',
  algorithms: ['ES256'],
  clockSkewSeconds: 30,
  maxTokenLifetimeSeconds: 300,
  jwks: { keys: [publicJwk] },
  ...overrides,
});

export const agentBody = (overrides: Record<string, unknown> = {}) => ({
  id: 'invoice-bot',
  owner: 'alice',
  purpose: 'pay approved invoices',
  provenance: { model: 'm', modelVersion: '1', environment: 'production' },
  trustScore: 60,
  groups: ['finance-agents'],
  tags: ['finance'],
  credentials: credentials(),
  ceiling: { template: 'ceiling-folder', values: { '?resource': { type: 'Folder', id: 'inv' } } },
  ...overrides,
});

/** alice in finance, and the finance-agents group, as in SPEC §7. */
export async function seedPrincipals(node: TestNode): Promise<void> {
  for (const [url, body] of [
    ['/v1/groups', { id: 'finance', parents: [] }],
    ['/v1/groups', { id: 'finance-agents', parents: [] }],
    ['/v1/humans', { id: 'alice', email: 'alice@example.com', groups: ['finance'] }],
  ] as const) {
    const res = await node.api('POST', url, body);
    if (res.status !== 201) throw new Error(`seeding ${url} failed: ${JSON.stringify(res.body)}`);
  }
}

/** A test node listening on a free loopback port, and its base URL. */
export async function listeningNode(backend: Backend, options: Parameters<typeof startTestNode>[1] = {}): Promise<{ node: TestNode; url: string }> {
  const node = await startTestNode(backend, options);
  await node.app.listen({ port: 0, host: '127.0.0.1' });
  return { node, url: `http://127.0.0.1:${(node.app.server.address() as { port: number }).port}` };
}

/** A one-minute client assertion by `agent` (signed with `agentPrivateKey`, kid k1) for Leash's default issuer. */
export async function clientAssertionOf(agent: string, audience = 'http://127.0.0.1:8080'): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ jti: crypto.randomUUID() }).setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setIssuer(agent).setSubject(agent).setAudience(audience)
    .setIssuedAt(now).setExpirationTime(now + 60).sign(agentPrivateKey);
}

/**
 * A PEP's question over plain HTTP (fetch): may `agent`, with `accessToken`, take `action` on
 * Document `doc`? d1 and d2 lie in Folder::"invoices", r1 in Folder::"reports".
 */
export async function decideOverHttp(url: string, agent: string, accessToken: string, action: string, doc: string) {
  const folder = (id: string) => ({ type: 'Folder', id });
  const res = await fetch(`${url}/access/v1/evaluation`, {
    method: 'POST',
    headers: { authorization: `Bearer ${PEP_TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      subject: { type: 'agent', id: agent, properties: { token: accessToken } }, action: { name: action }, resource: { type: 'Document', id: doc },
      context: {
        entities: [
          { uid: folder('invoices'), attrs: {}, parents: [] }, { uid: folder('reports'), attrs: {}, parents: [] },
          { uid: { type: 'Document', id: 'd1' }, attrs: {}, parents: [folder('invoices')] },
          { uid: { type: 'Document', id: 'd2' }, attrs: {}, parents: [folder('invoices')] },
          { uid: { type: 'Document', id: 'r1' }, attrs: {}, parents: [folder('reports')] },
        ],
      },
    }),
  });
  if (res.status !== 200) throw new Error(`the decision API answered ${res.status}: ${await res.text()}`);
  return (await res.json()) as { decision: boolean; context: { layer: string; code?: string; reasons: string[] } };
}
