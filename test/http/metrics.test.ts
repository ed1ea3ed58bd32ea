import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_MONITORING } from '../../src/monitoring/monitor.ts';
import { freshPglite } from '../support/backends.ts';
import { ADMIN_TOKEN, PEP_TOKEN, agentBody, agentPrivateKey, clientAssertionOf, seedPrincipals, startTestNode, type TestNode } from '../support/node.ts';
import { pay, payToken, registerPayBot } from '../support/payments.ts';
import { peoplePins, personToken } from '../support/people.ts';

// GET /metrics: after a known sequence (decisions, a revoke, a token issued, a finding, an
// approval asked for), the counters and histograms hold exactly what the sequence adds. Read
// with the operator token or the metrics token, which opens nothing else.

const METRICS_TOKEN = 'test-metrics-token-0123456789';
const folder = (id: string) => ({ type: 'Folder', id });
let node: TestNode;

async function scrape(token: string | null = METRICS_TOKEN): Promise<string> {
  const res = await node.app.inject({ method: 'GET', url: '/metrics', headers: token ? { authorization: `Bearer ${token}` } : {} });
  expect(res.statusCode, res.body).toBe(200);
  expect(res.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
  return res.body;
}

/** A sample's value; 0 when the series is not there yet. */
function value(text: string, name: string, labels: Record<string, string> = {}): number {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = m[2] ? m[2].split(',') : [];
    if (want.length === have.length && want.every((w) => have.includes(w))) return Number(m[3]);
  }
  return 0;
}

const token = async (agent: string, details: unknown) => {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ authorization_details: details, jti: crypto.randomUUID() }).setProtectedHeader({ alg: 'ES256', kid: 'k1' })
    .setIssuer('https://idp.example').setAudience('leash').setSubject(agent).setIssuedAt(now).setExpirationTime(now + 240).sign(agentPrivateKey);
};
const decide = async (agent: string, t: string, doc: string, inFolder: string) => (await node.api('POST', '/access/v1/evaluation', {
  subject: { type: 'agent', id: agent, properties: { token: t } }, action: { name: 'read' }, resource: { type: 'Document', id: doc },
  context: { entities: [{ uid: { type: 'Document', id: doc }, attrs: {}, parents: [folder(inFolder)] }] },
}, {}, PEP_TOKEN)).body as { decision: boolean; context: { layer: string; code?: string } };

beforeAll(async () => {
  node = await startTestNode(freshPglite(), { metricsToken: METRICS_TOKEN, monitoring: DEFAULT_MONITORING, humanPins: peoplePins });
  await seedPrincipals(node);
  for (const id of ['m-bot', 'probe-bot']) {
    expect((await node.api('POST', '/v1/agents', agentBody({ id, ceiling: { template: 'ceiling-folder', values: { '?resource': folder('invoices') } } }))).status).toBe(201);
    expect((await node.api('POST', `/v1/agents/${id}/authorize`, { grants: [{ template: 'grant-read-folder', values: { '?resource': folder('invoices') } }] })).status).toBe(200);
  }
  await registerPayBot(node);
  await new Promise((r) => setTimeout(r, 1100)); // tokens issued after the authorize (whole seconds)
});
afterAll(async () => node?.close());

describe('GET /metrics', () => {
  it('counts exactly what a known sequence adds: decisions by outcome and layer, their times, the token cache, a fenced revoke, a token issued', async () => {
    const before = await scrape();
    const t = await token('m-bot', [{ type: 'leash:cedar', actions: ['read'], resourceIn: folder('invoices') }]);
    for (const doc of ['i-1', 'i-2', 'i-3']) expect((await decide('m-bot', t, doc, 'invoices')).decision).toBe(true);
    for (const doc of ['p-1', 'p-2']) expect((await decide('m-bot', t, doc, 'payroll')).context.layer).toBe('details');
    expect((await node.api('POST', '/v1/agents/m-bot/revoke', { mode: 'immediate', reason: 'metrics test' })).status).toBe(200);
    const issued = await node.app.inject({
      method: 'POST', url: '/oauth/token', headers: { 'content-type': 'application/x-www-form-urlencoded' },
      payload: new URLSearchParams({
        grant_type: 'client_credentials', client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: await clientAssertionOf('probe-bot'),
        authorization_details: JSON.stringify([{ type: 'leash:cedar', actions: ['read'], resourceIn: folder('invoices') }]),
      }).toString(),
    });
    expect(issued.statusCode, issued.body).toBe(200);
    const after = await scrape();
    const added = (name: string, labels?: Record<string, string>) => value(after, name, labels) - value(before, name, labels);
    expect(added('leash_decisions_total', { decision: 'allow', layer: 'all' })).toBe(3);
    expect(added('leash_decisions_total', { decision: 'deny', layer: 'details' })).toBe(2);
    expect(added('leash_decision_duration_seconds_count')).toBe(5);
    // Every decision is recorded.
    expect(added('leash_decision_log_commit_seconds_count')).toBe(5);
    expect(added('leash_decision_duration_seconds_bucket', { le: '+Inf' })).toBe(5);
    expect(added('leash_decision_duration_seconds_sum')).toBeGreaterThan(0);
    // One token, five decisions: verified once, then four times from the cache.
    expect([added('leash_token_cache_misses_total'), added('leash_token_cache_hits_total')]).toEqual([1, 4]);
    expect(added('leash_fence_seconds_count')).toBe(1);
    expect(added('leash_event_append_seconds_count')).toBe(1);
    expect(added('leash_tokens_issued_total')).toBe(1);
    expect(value(after, 'leash_nodes_live')).toBe(1);
    // Node's own process metrics come along.
    expect(value(after, 'process_cpu_user_seconds_total')).toBeGreaterThan(0);
    expect(after).toMatch(/^nodejs_eventloop_lag_seconds \S+$/m);
  });

  it('a finding counts by detector; an approval waiting counts until it is answered', async () => {
    const beyond = await token('probe-bot', [{ type: 'leash:cedar', actions: ['read'], resourceIn: folder('payroll') }]);
    for (let i = 0; i < 5; i++) expect((await decide('probe-bot', beyond, `p-${i}`, 'payroll')).context.code).toBe('DETAILS_BEYOND_CEILING');
    await expect.poll(async () => value(await scrape(), 'leash_anomalies_total', { detector: 'ceiling_probe' }), { timeout: 2_000 }).toBe(1);
    expect(value(await scrape(), 'leash_approvals_pending')).toBe(0);
    const held = await pay(node, await payToken(), 25_000);
    expect(held.context.code).toBe('APPROVAL_REQUIRED');
    expect(value(await scrape(), 'leash_approvals_pending')).toBe(1);
    const id = (held.context as { approval: { id: string } }).approval.id;
    expect((await node.api('POST', `/v1/approvals/${id}/deny`, { reason: 'no', approver: 'alice' })).status).toBe(200);
    expect(value(await scrape(), 'leash_approvals_pending')).toBe(0);
  });

  it('the operator token or the metrics token; nothing else, and the metrics token opens nothing else', async () => {
    await scrape(ADMIN_TOKEN);
    for (const [auth, status] of [[null, 401], [PEP_TOKEN, 401], ['wrong-token-0123456789', 401], [await personToken('sam'), 401]] as const) {
      const res = await node.app.inject({ method: 'GET', url: '/metrics', headers: auth ? { authorization: `Bearer ${auth}` } : {} });
      expect(res.statusCode, String(auth)).toBe(status);
      expect(res.json().code).toBe('UNAUTHENTICATED');
    }
    for (const url of ['/v1/agents', '/v1/decisions', '/v1/monitoring']) {
      expect((await node.api('GET', url, undefined, {}, METRICS_TOKEN)).status, url).toBe(401);
    }
    expect((await node.api('POST', '/access/v1/evaluation', {}, {}, METRICS_TOKEN)).status).toBe(401);
    // The path as sent does not matter, the route matched does.
    for (const url of ['/metrics/', '/%6detrics', '/metrics?x=1']) {
      const res = await node.app.inject({ method: 'GET', url, headers: {} });
      expect(res.statusCode, url).toBe(401);
    }
  });

  it('LEASH_METRICS=off: the node keeps none, and /metrics is a 404 that says so', async () => {
    const off = await startTestNode(freshPglite(), { metrics: false });
    try {
      const res = await off.api('GET', '/metrics');
      expect(res.status).toBe(404);
      expect(res.body).toMatchObject({ code: 'NOT_FOUND', detail: expect.stringMatching(/LEASH_METRICS=off/) });
      expect((await off.api('GET', '/metrics', undefined, {}, null)).status).toBe(401);
    } finally {
      await off.close();
    }
  });
});
