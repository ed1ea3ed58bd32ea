import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { DEFAULT_MONITORING } from '../../src/monitoring/monitor.ts';
import { freshPostgres } from '../support/backends.ts';
import { PEP_TOKEN, agentBody, agentPrivateKey, seedPrincipals, startTestNode, type TestNode } from '../support/node.ts';
import { pay, payToken, registerPayBot } from '../support/payments.ts';

// Detectors on three nodes sharing PostgreSQL and NATS: an agent's denies are counted whole
// however they are spread over the nodes; the 20th in a minute is a critical deny_burst, and the
// agent is suspended on every node before that answer leaves. A probe series beyond the ceiling
// is an alert only. An agent below the thresholds is left alone.

const folder = (id: string) => ({ type: 'Folder', id });
const readInvoices = [{ type: 'leash:cedar', actions: ['read'], resourceIn: folder('invoices') }];
let nodes: TestNode[];

async function token(agent: string, details: unknown = readInvoices): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ authorization_details: details, jti: crypto.randomUUID() }).setProtectedHeader({ alg: 'ES256', kid: 'k1' })
    .setIssuer('https://idp.example').setAudience('leash').setSubject(agent).setIssuedAt(now).setExpirationTime(now + 240).sign(agentPrivateKey);
}

const decide = async (node: TestNode, agent: string, t: string, doc: string, inFolder: string) => (await node.api('POST', '/access/v1/evaluation', {
  subject: { type: 'agent', id: agent, properties: { token: t } }, action: { name: 'read' }, resource: { type: 'Document', id: doc },
  context: { entities: [{ uid: { type: 'Document', id: doc }, attrs: {}, parents: [folder(inFolder)] }] },
}, {}, PEP_TOKEN)).body as { decision: boolean; context: { code?: string; layer: string } };

const spread = () => new Promise((r) => setTimeout(r, 150)); // longer than the 20 ms the counts take to reach the other nodes

beforeAll(async () => {
  const backend = await freshPostgres();
  nodes = [];
  for (const nodeId of ['m1', 'm2', 'm3']) nodes.push(await startTestNode(backend, { nodeId, natsUrl: inject('natsUrl'), monitoring: DEFAULT_MONITORING }));
  await seedPrincipals(nodes[0]!);
  const ceiling = { template: 'ceiling-folder', values: { '?resource': folder('invoices') } };
  await registerPayBot(nodes[0]!);
  for (const id of ['noisy-bot', 'probing-bot', 'quiet-bot']) {
    expect((await nodes[0]!.api('POST', '/v1/agents', agentBody({ id, ceiling }))).status).toBe(201);
    expect((await nodes[0]!.api('POST', `/v1/agents/${id}/authorize`, { grants: [{ template: 'grant-read-folder', values: { '?resource': folder('invoices') } }] })).status).toBe(200);
  }
  await new Promise((r) => setTimeout(r, 1100)); // tokens issued after the authorize (whole seconds)
  for (const n of nodes) await n.follower.waitFor(nodes[0]!.view.position);
});
afterAll(async () => Promise.all((nodes ?? []).map((n) => n.close())));

describe('deny_burst', () => {
  it('20 denies in a minute, spread over three nodes: a critical finding, and the agent suspended on every node before the 20th answer leaves', async () => {
    const t = await token('noisy-bot');
    for (let i = 0; i < 19; i++) expect((await decide(nodes[i % 3]!, 'noisy-bot', t, `p-${i}`, 'payroll')).decision).toBe(false);
    await spread();
    // 19: nothing yet; its allowed requests go through on every node.
    for (const n of nodes) expect((await decide(n, 'noisy-bot', t, 'inv-1', 'invoices')).decision).toBe(true);
    expect((await decide(nodes[1]!, 'noisy-bot', t, 'p-19', 'payroll')).decision).toBe(false);
    // The next request, on any node: refused, the agent no longer active.
    for (const n of nodes) expect(await decide(n, 'noisy-bot', t, 'inv-1', 'invoices')).toMatchObject({ decision: false, context: { layer: 'token', code: 'AGENT_NOT_ACTIVE' } });
    const events = (await nodes[0]!.store.readStream('agent/noisy-bot')).slice(2);
    expect(events.map((e) => [e.type, e.metadata?.actor])).toEqual([['AnomalyDetected', 'monitor'], ['TrustScoreChanged', 'monitor'], ['AgentSuspended', 'monitor']]);
    expect(events[0]!.data).toMatchObject({ detector: 'deny_burst', severity: 'critical', response: 'suspend', evidence: { threshold: 20, windowSeconds: 60 }, trustScoreChange: -25 });
    expect((events[0]!.data as { evidence: { count: number } }).evidence.count).toBeGreaterThanOrEqual(20);
    expect(events[1]!.data).toEqual({ from: 60, to: 35, reason: 'deny_burst (critical)' });
    expect(events[2]!.data).toMatchObject({ reason: expect.stringMatching(/^deny_burst: \d+ in 60 s/) });
  });
});

describe('what does not count', () => {
  it('requests whose token does not verify: anyone with a caller token could send them, so they suspend nobody', async () => {
    const garbage = 'eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJxdWlldC1ib3QifQ.c2lnbmF0dXJl';
    for (let i = 0; i < 30; i++) expect((await decide(nodes[i % 3]!, 'quiet-bot', garbage, `p-${i}`, 'payroll')).context.layer).toBe('token');
    await spread();
    expect((await nodes[0]!.store.readStream('agent/quiet-bot')).map((e) => e.type)).toEqual(['AgentRegistered', 'AgentAuthorized']);
  });
});

describe('approvals are not refusals', () => {
  it('30 payments over the limit, each waiting for an approval: no finding, the agent still active', async () => {
    const t = await payToken();
    for (let i = 0; i < 30; i++) expect((await pay(nodes[i % 3]!, t, 20_000 + i, `inv-a${i}`)).context.code).toBe('APPROVAL_REQUIRED');
    await spread();
    expect((await nodes[0]!.store.readStream('agent/pay-bot')).map((e) => e.type)).toEqual(['AgentRegistered', 'AgentAuthorized']);
  });
});

describe('ceiling_probe', () => {
  it('tokens asking beyond the ceiling, five times: a high finding, an alert only', async () => {
    const beyond = await token('probing-bot', [{ type: 'leash:cedar', actions: ['read'], resourceIn: folder('payroll') }]);
    for (let i = 0; i < 5; i++) expect((await decide(nodes[i % 3]!, 'probing-bot', beyond, `p-${i}`, 'payroll')).context.code).toBe('DETAILS_BEYOND_CEILING');
    await expect.poll(async () => (await nodes[0]!.store.readStream('agent/probing-bot')).map((e) => e.type), { timeout: 2_000 }).toContain('AnomalyDetected');
    const finding = (await nodes[0]!.store.readStream('agent/probing-bot')).find((e) => e.type === 'AnomalyDetected')!;
    expect(finding.data).toMatchObject({ detector: 'ceiling_probe', severity: 'high', response: 'alert' });
    // Alerted, not contained: its ordinary requests still go through.
    expect((await decide(nodes[2]!, 'probing-bot', await token('probing-bot'), 'inv-1', 'invoices')).decision).toBe(true);
    expect(nodes[0]!.view.agents.get('probing-bot')!.record.status).toBe('active');
  });
});

describe('no finding below the thresholds', () => {
  it('an agent with many allows and a few denies is left alone', async () => {
    const t = await token('quiet-bot');
    for (let i = 0; i < 60; i++) await decide(nodes[i % 3]!, 'quiet-bot', t, i % 5 === 0 ? `p-${i}` : `inv-${i}`, i % 5 === 0 ? 'payroll' : 'invoices');
    await spread();
    expect((await nodes[0]!.store.readStream('agent/quiet-bot')).map((e) => e.type)).toEqual(['AgentRegistered', 'AgentAuthorized']);
  });
});
