import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InProcessBus } from '../../src/bus/bus.ts';
import { DEFAULT_MONITORING } from '../../src/monitoring/monitor.ts';
import { PEP_TOKEN, agentBody, agentPrivateKey, seedPrincipals, startTestNode, type TestNode } from '../support/node.ts';

// The detectors under attack (one PGlite node, detectors on, a bus the test can publish on
// as a peer node would).

const folder = (id: string) => ({ type: 'Folder', id });
const readInvoices = [{ type: 'leash:cedar', actions: ['read'], resourceIn: folder('invoices') }];
let node: TestNode;
let monitorSubject = '';

class SpyBus extends InProcessBus {
  override subscribe(subject: string, handler: (message: unknown) => void): () => void {
    if (subject.endsWith('.monitor')) monitorSubject = subject;
    return super.subscribe(subject, handler);
  }
}
const bus = new SpyBus();

async function token(agent: string, details: unknown = readInvoices): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ authorization_details: details, jti: crypto.randomUUID() }).setProtectedHeader({ alg: 'ES256', kid: 'k1' })
    .setIssuer('https://idp.example').setAudience('leash').setSubject(agent).setIssuedAt(now).setExpirationTime(now + 240).sign(agentPrivateKey);
}

const decide = async (agent: string, t: unknown, doc = 'inv-1', inFolder = 'invoices') => (await node.api('POST', '/access/v1/evaluation', {
  subject: { type: 'agent', id: agent, properties: t === undefined ? {} : { token: t } }, action: { name: 'read' }, resource: { type: 'Document', id: doc },
  context: { entities: [{ uid: { type: 'Document', id: doc }, attrs: {}, parents: [folder(inFolder)] }] },
}, {}, PEP_TOKEN)).body as { decision: boolean; context: { code?: string; layer: string } };

const settle = () => new Promise((r) => setTimeout(r, 150));
const status = (id: string) => node.view.agents.get(id)!.record.status;

beforeAll(async () => {
  node = await startTestNode({ kind: 'pglite', dataDir: null }, { bus, monitoring: DEFAULT_MONITORING });
  await seedPrincipals(node);
  const ceiling = { template: 'ceiling-folder', values: { '?resource': folder('invoices') } };
  for (const id of ['victim-nt', 'victim-bad', 'victim-bus', 'victim-future', 'cpu-bot', 'other-bot']) {
    expect((await node.api('POST', '/v1/agents', agentBody({ id, ceiling }))).status, id).toBe(201);
    expect((await node.api('POST', `/v1/agents/${id}/authorize`, { grants: [{ template: 'grant-read-folder', values: { '?resource': folder('invoices') } }] })).status).toBe(200);
  }
  await new Promise((r) => setTimeout(r, 1100));
  expect(monitorSubject).toMatch(/^leash\..+\.monitor$/);
});
afterAll(async () => node?.close());

describe('a PEP without the agent\'s credentials', () => {
  it('cannot get an innocent agent suspended by naming it 20 times with no token', async () => {
    for (let i = 0; i < 20; i++) expect((await decide('victim-nt', undefined)).decision).toBe(false);
    await settle();
    // The agent never presented anything: these denies are the caller's, not the agent's.
    expect(status('victim-nt')).toBe('active');
    expect((await decide('victim-nt', await token('victim-nt'))).decision).toBe(true);
  });

  it('cannot get an innocent agent suspended with a forged token (TOKEN_BAD_SIGNATURE or garbage)', async () => {
    for (let i = 0; i < 20; i++) {
      const d = await decide('victim-bad', 'eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJ2aWN0aW0tYmFkIn0.c2ln');
      expect(d.context.layer).toBe('token');
    }
    await settle();
    expect(status('victim-bad')).toBe('active');
  });
});

describe('counts from the bus', () => {
  it('a bucket in the far future is not counted for ever (nor does it wipe real counts)', async () => {
    const future = Math.floor(Date.now() / 1000) + 10 * 365 * 86400;
    bus.publish(monitorSubject, { node: 'evil', counts: { 'victim-future': { deny_burst: { [future]: 19 } } } });
    await settle();
    // One genuine deny (a read outside the ceiling, with a valid token) takes it over the threshold.
    expect((await decide('victim-future', await token('victim-future'), 'p-1', 'payroll')).decision).toBe(false);
    await settle();
    expect(status('victim-future')).toBe('active');
  });

  it('one message with many negative "seconds" does not keep them all, nor block the event loop', async () => {
    const counts: Record<string, number> = {};
    for (let i = 1; i <= 40_000; i++) counts[String(-i)] = 1; // ~400 KB of JSON, under NATS's 1 MB default
    const started = performance.now();
    bus.publish(monitorSubject, { node: 'evil', counts: { 'cpu-bot': { deny_burst: counts } } });
    await new Promise((r) => setImmediate(r));
    const blocked = performance.now() - started;
    expect(blocked).toBeLessThan(500);
  }, 120_000);
});

describe('an agent named __proto__', () => {
  it('any PEP: naming agent "__proto__" twice (discovered as a shadow agent, then denied AGENT_NOT_ACTIVE) does not pollute Object.prototype', async () => {
    // The first ask would have recorded "__proto__" as a discovered agent, and the second been
    // counted under it (a key that is Object.prototype on a plain object): no id may be __proto__.
    expect((await decide('__proto__', 'eyJhbGciOiJFUzI1NiJ9.e30.c2ln')).context.code).toBe('AGENT_UNKNOWN');
    await settle();
    expect(node.view.agents.has('__proto__')).toBe(false);
    expect((await decide('__proto__', 'eyJhbGciOiJFUzI1NiJ9.e30.c2ln')).context.code).toBe('AGENT_UNKNOWN');
    for (const id of ['__proto__', 'constructor', 'prototype']) {
      expect((await node.api('POST', '/v1/agents', agentBody({ id }))).status, id).toBe(400);
    }
    const polluted = ({} as Record<string, unknown>).deny_burst;
    // Whatever happens, clean up so the rest of the worker is not affected.
    delete (Object.prototype as Record<string, unknown>).deny_burst;
    expect(polluted).toBeUndefined();
  });

  it('after a __proto__ deny, another agent\'s denies are still shared with the other nodes', async () => {
    const published: { node: string; counts: Record<string, unknown> }[] = [];
    const off = bus.subscribe(monitorSubject, (m) => published.push(m as never));
    expect((await decide('__proto__', 'eyJhbGciOiJFUzI1NiJ9.e30.c2ln')).context.code).toBe('AGENT_UNKNOWN');
    expect((await decide('other-bot', await token('other-bot'), 'p-2', 'payroll')).decision).toBe(false);
    await settle();
    delete (Object.prototype as Record<string, unknown>).deny_burst;
    off();
    const mine = published.filter((m) => m.node !== 'evil');
    expect(mine.map((m) => JSON.stringify(m.counts)).join(' ')).toMatch(/"other-bot":\{("rate_spike":\{"\d+":1\},)?"deny_burst":\{"\d+":1\}/);
  });
});

describe('an agent already contained (unit: a Monitor over a fake registry)', () => {
  it('denies an already suspended agent gets (AGENT_NOT_ACTIVE) do not count, nor record findings again and again', async () => {
    const { Monitor } = await import('../../src/monitoring/monitor.ts');
    const t0 = Date.parse('2026-01-01T00:00:00Z');
    const record = { id: 'held', status: 'suspended', findings: { deny_burst: { detector: 'deny_burst', severity: 'critical', evidence: {}, response: 'suspend', at: new Date(t0).toISOString() } } };
    const agents = new Map([['held', { record, version: 5 }]]);
    const commands: string[] = [];
    const monitor = new Monitor({
      nodeId: 'n1', deployment: 'd', bus: new InProcessBus(), view: { agents, onAgentChange: () => () => {} } as never, config: () => DEFAULT_MONITORING, log: () => {},
      commands: { handle: async (_a: unknown, _id: string, c: { type: string }) => { commands.push(c.type); if (c.type === 'SuspendAgent') throw Object.assign(new Error('x'), { code: 'INVALID_TRANSITION' }); return { position: 1 }; } } as never,
      cluster: { fence: async () => ({}) } as never,
    });
    // The suspended agent (or a PEP naming it) keeps asking; every answer is AGENT_NOT_ACTIVE.
    const notActive = { decision: false, layer: 'token', code: 'AGENT_NOT_ACTIVE', reasons: [], errors: [], policyVersion: 1, position: 1 } as never;
    for (let minute = 1; minute <= 5; minute++) {
      for (let i = 0; i < 20; i++) await monitor.observe({ subject: { type: 'agent', id: 'held' }, action: { name: 'read' }, resource: { type: 'Document', id: 'd' } }, notActive, new Date(t0 + minute * 61_000 + i * 100));
    }
    monitor.stop();
    expect(commands).toEqual([]); // seen: a RecordFinding (and a refused SuspendAgent) every window while it is suspended
  });
});

describe('shadow agents (passes: no problem found)', () => {
  it('an id a PEP pre-discovers can still be registered by its owner, with the owner\'s data', async () => {
    expect((await decide('pre-bot', 'eyJhbGciOiJFUzI1NiJ9.e30.c2ln')).context.code).toBe('AGENT_UNKNOWN');
    await settle();
    expect(node.view.agents.get('pre-bot')?.record.status).toBe('discovered');
    const res = await node.api('POST', '/v1/agents', agentBody({ id: 'pre-bot', purpose: 'the real one' }));
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    expect(node.view.agents.get('pre-bot')!.record).toMatchObject({ status: 'registered', owner: 'alice', purpose: 'the real one', credentials: { issuer: 'https://idp.example' } });
  });
});
