import { cpSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_MONITORING, MonitoringView } from '../../src/monitoring/monitoring-config.ts';
import { startNode } from '../../src/node.ts';
import { freshPglite } from '../support/backends.ts';
import { ADMIN_TOKEN, CEDAR_DIR, PEP_TOKEN, agentBody, agentPrivateKey, seedPrincipals, startTestNode, type TestNode } from '../support/node.ts';
import { peoplePins, personToken } from '../support/people.ts';

// The detectors' configuration: cedar/monitoring.json published at first start, PUT /v1/monitoring
// for the next versions (fenced), read by the detectors at once; a bad document refused.

const folder = (id: string) => ({ type: 'Folder', id });
let node: TestNode;

const cedarWith = (monitoring: string) => {
  const dir = mkdtempSync(join(tmpdir(), 'leash-cedar-'));
  cpSync(CEDAR_DIR, dir, { recursive: true });
  writeFileSync(join(dir, 'monitoring.json'), monitoring);
  return dir;
};

async function denyPayroll(agent: string, times: number): Promise<void> {
  const now = Math.floor(Date.now() / 1000);
  const token = await new SignJWT({ authorization_details: [{ type: 'leash:cedar', actions: ['read'], resourceIn: folder('invoices') }], jti: crypto.randomUUID() })
    .setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setIssuer('https://idp.example').setAudience('leash').setSubject(agent).setIssuedAt(now).setExpirationTime(now + 240).sign(agentPrivateKey);
  for (let i = 0; i < times; i++) {
    await node.api('POST', '/access/v1/evaluation', {
      subject: { type: 'agent', id: agent, properties: { token } }, action: { name: 'read' }, resource: { type: 'Document', id: `p-${i}` },
      context: { entities: [{ uid: { type: 'Document', id: `p-${i}` }, attrs: {}, parents: [folder('payroll')] }] },
    }, {}, PEP_TOKEN);
  }
}

const register = async (id: string) => {
  expect((await node.api('POST', '/v1/agents', agentBody({ id, ceiling: { template: 'ceiling-folder', values: { '?resource': folder('invoices') } } }))).status).toBe(201);
  expect((await node.api('POST', `/v1/agents/${id}/authorize`, { grants: [] })).status).toBe(200);
};
const status = (id: string) => node.view.agents.get(id)?.record.status;

beforeAll(async () => {
  node = await startTestNode(freshPglite(), { cedarDir: cedarWith('{"detectors":{"deny_burst":{"threshold":3}}}'), monitoring: 'log', humanPins: peoplePins });
  await seedPrincipals(node);
  for (const [url, body] of [['/v1/groups', { id: 'security', parents: [] }], ['/v1/humans', { id: 'sam', email: 'sam@example.com', groups: ['security'] }]] as const) {
    expect((await node.api('POST', url, body)).status).toBe(201);
  }
  for (const id of ['first-bot', 'second-bot']) await register(id);
  await new Promise((r) => setTimeout(r, 1100));
});
afterAll(async () => node?.close());

describe('the detectors\' configuration', () => {
  it('cedar/monitoring.json is version 1, over the defaults; the detectors count by it', async () => {
    const got = await node.api('GET', '/v1/monitoring');
    expect(got.body).toMatchObject({ version: 1, detectors: { deny_burst: { threshold: 3, windowSeconds: 60, severity: 'critical' }, ceiling_probe: { threshold: 5 } }, responses: { critical: 'suspend' } });
    // What the document leaves out has its default, the baseline detectors' too.
    expect(got.body).toMatchObject({
      detectors: { rate_spike: { threshold: 30, factor: 5, windowSeconds: 60, severity: 'high' }, new_action: { severity: 'medium' }, off_hours: { share: 0.01 } },
      warmup: { hours: 168, decisions: 100 }, trustScore: { low: 0, medium: -5, high: -10, critical: -25 },
    });
    await denyPayroll('first-bot', 3);
    expect(status('first-bot')).toBe('suspended');
  });

  it('PUT /v1/monitoring publishes the next version, fenced, and it applies at once; only the security team may', async () => {
    const put = await node.api('PUT', '/v1/monitoring', { detectors: { deny_burst: { threshold: 50 } } }, {}, await personToken('sam'));
    expect(put.status, JSON.stringify(put.body)).toBe(200);
    expect(put.body).toMatchObject({ version: 2, detectors: { deny_burst: { threshold: 50 } }, nodesConfirmed: 1 });
    expect((await node.api('PUT', '/v1/monitoring', {}, {}, await personToken('alice'))).status).toBe(403);
    await denyPayroll('second-bot', 10);
    expect(status('second-bot')).toBe('active');
    const events = await node.store.readStream('monitoring/current');
    expect(events.map((e) => [e.version, e.metadata?.actor])).toEqual([[1, 'node:test-node'], [2, 'human:sam']]);
  });

  it('a document that is not one is a 400 naming where, and nothing is published', async () => {
    const before = await node.eventCount();
    for (const body of [
      { detectors: { deny_burst: { threshold: 0 } } }, { detectors: { deny_burst: { threshold: 1.5 } } }, { detectors: { deny_burst: { windowSeconds: 3601 } } },
      { detectors: { deny_burst: { severity: 'dire' } } }, { detectors: { sneaky: {} } }, { detectors: { rate_spike: { factor: 1 } } },
      { detectors: { rate_spike: { windowSeconds: 3601 } } }, { detectors: { new_action: { threshold: 3 } } }, { detectors: { off_hours: { share: 0.9 } } },
      { detectors: { off_hours: { windowSeconds: 86_401 } } }, { warmup: { hours: -1 } }, { warmup: { decisions: '5' } }, { trustScore: { low: 5 } }, { trustScore: { high: -101 } }, { responses: { critical: 'explode' } }, { other: 1 }, [], 'x',
    ]) {
      const res = await node.api('PUT', '/v1/monitoring', body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(res.body.code).toBe('VALIDATION_FAILED');
    }
    expect(await node.eventCount()).toBe(before);
    expect((await node.api('GET', '/v1/monitoring', undefined, {}, null)).status).toBe(401);
  });

  it('a version recorded before the baseline detectors existed reads with their defaults', () => {
    const view = new MonitoringView();
    const old = { deny_burst: { threshold: 7, windowSeconds: 60, severity: 'critical' }, ceiling_probe: { threshold: 5, windowSeconds: 60, severity: 'high' } };
    view.apply({ streamType: 'monitoring', type: 'MonitoringConfigured', version: 3, data: { config: { detectors: old, responses: DEFAULT_MONITORING.responses } } } as never);
    expect(view.version).toBe(3);
    expect(view.config).toEqual({ ...DEFAULT_MONITORING, detectors: { ...DEFAULT_MONITORING.detectors, deny_burst: old.deny_burst } });
  });

  it('a cedar/monitoring.json that is not valid stops the start, saying why', async () => {
    for (const [text, why] of [['{not json', /not JSON/], ['{"detectors":{"deny_burst":{"threshold":-1}}}', /monitoring configuration is not valid at \/detectors\/deny_burst\/threshold/]] as const) {
      await expect(startNode({ backend: freshPglite(), adminToken: ADMIN_TOKEN, nodeId: 'x', cedarDir: cedarWith(text) })).rejects.toThrow(why);
    }
  });
});
