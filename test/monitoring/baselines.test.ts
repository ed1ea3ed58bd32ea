import { cpSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_MONITORING } from '../../src/monitoring/monitor.ts';
import { freshPglite } from '../support/backends.ts';
import { CEDAR_DIR, PEP_TOKEN, agentBody, agentPrivateKey, seedPrincipals, startTestNode, type TestNode } from '../support/node.ts';
import { peoplePins, personToken } from '../support/people.ts';

// A scripted agent's week of ordinary work, on a clock the test moves (nothing sleeps a week):
// reading invoices, weekdays and weekends alike, 09:00 to 17:00 UTC, one document every ten
// minutes. The week gives no finding at all. After it, each kind of odd behaviour gives its
// finding once: an action never used (new_action), a folder never used (new_resource), a burst
// of requests (rate_spike), work at night (off_hours), each an alert that lowers the trust
// score; a policy reading the score then refuses the agent, until someone clears the finding.

const HOUR = 3_600_000;
const folder = (id: string) => ({ type: 'Folder', id });
const DAY = 24 * HOUR;
/** Midnight UTC two days from now: after the agent's authorize, so its tokens verify. */
const start = Math.ceil((Date.now() + 2 * DAY) / DAY) * DAY;
let now = start;
let node: TestNode;
let backend: ReturnType<typeof freshPglite>;
let cedarDir: string;

const cedar = () => {
  const dir = mkdtempSync(join(tmpdir(), 'leash-cedar-'));
  cpSync(CEDAR_DIR, dir, { recursive: true });
  writeFileSync(join(dir, 'policies', 'monitoring-test.cedar'), `
@id("finance-writes-invoices")
permit (principal in Group::"finance", action == Action::"write", resource in Folder::"invoices");

@id("grant-write-folder")
permit (principal, action == Action::"write", resource in ?resource);

@id("low-trust-agents-are-refused")
forbid (principal is Agent, action, resource) when { principal.trustScore < 50 };
`);
  return dir;
};

/**
 * The resource filter is a Bloom filter: with the week's 337 names in it, about one new name in
 * 160 is taken for a known one, which names depends on the seed, and a node draws its seed at
 * random. Fixed here, so that every run asks one filter, for which the new names below are new.
 */
const BLOOM_SEED = 1;

async function decide(action: string, doc: string, parents: { type: string; id: string }[] = [folder('invoices')], extra: unknown[] = []) {
  const iat = Math.floor(now / 1000);
  const token = await new SignJWT({ authorization_details: [{ type: 'leash:cedar', actions: ['read', 'write'], resourceIn: folder('invoices') }], jti: crypto.randomUUID() })
    .setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setIssuer('https://idp.example').setAudience('leash').setSubject('clerk-bot').setIssuedAt(iat).setExpirationTime(iat + 120).sign(agentPrivateKey);
  const res = await node.api('POST', '/access/v1/evaluation', {
    subject: { type: 'agent', id: 'clerk-bot', properties: { token } }, action: { name: action }, resource: { type: 'Document', id: doc },
    context: { entities: [{ uid: { type: 'Document', id: doc }, attrs: {}, parents }, ...extra] },
  }, {}, PEP_TOKEN);
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body as { decision: boolean; context: { code?: string; reasons?: string[] } };
}

const history = async () => (await node.store.readStream('agent/clerk-bot')).slice(2).map((e) => ({ type: e.type, actor: e.metadata?.actor, data: e.data as Record<string, any> }));
const findings = async () => (await history()).filter((e) => e.type === 'AnomalyDetected').map((e) => e.data.detector);
const trust = () => node.view.agents.get('clerk-bot')!.record.trustScore;
const at = (day: number, hour: number, minute = 0) => {
  now = start + day * DAY + hour * HOUR + minute * 60_000;
};

beforeAll(async () => {
  backend = freshPglite();
  cedarDir = cedar();
  node = await startTestNode(backend, { cedarDir, monitoring: DEFAULT_MONITORING, humanPins: peoplePins, clock: () => new Date(now), monitorSeed: BLOOM_SEED });
  await seedPrincipals(node);
  for (const [url, body] of [['/v1/groups', { id: 'security', parents: [] }], ['/v1/humans', { id: 'sam', email: 'sam@example.com', groups: ['security'] }]] as const) {
    expect((await node.api('POST', url, body)).status).toBe(201);
  }
  expect((await node.api('POST', '/v1/agents', agentBody({ id: 'clerk-bot', trustScore: 60, ceiling: { template: 'ceiling-folder', values: { '?resource': folder('invoices') } } }))).status).toBe(201);
  const grants = ['grant-read-folder', 'grant-write-folder'].map((template) => ({ template, values: { '?resource': folder('invoices') } }));
  expect((await node.api('POST', '/v1/agents/clerk-bot/authorize', { grants })).status).toBe(200);
  // The week: 7 days x 8 hours x 6 documents, all read and allowed.
  for (let day = 0; day < 7; day++) {
    for (let hour = 9; hour < 17; hour++) {
      for (let minute = 0; minute < 60; minute += 10) {
        at(day, hour, minute);
        expect((await decide('read', `inv-${day}-${hour}-${minute}`)).decision).toBe(true);
      }
    }
  }
}, 120_000);
afterAll(async () => node?.close());

describe('a week of ordinary work', () => {
  it('gives no finding, nor does the same work the morning after (baseline warm)', async () => {
    at(7, 9);
    expect((await decide('read', 'inv-7-9-0')).decision).toBe(true);
    expect(await history()).toEqual([]);
    expect(trust()).toBe(60);
  });
});

describe('after the week', () => {
  it('an action it never used: new_action, an alert (the agent stays active), the trust score down by the severity\'s 5', async () => {
    at(7, 10);
    const w = await decide('write', 'inv-7-10-0'); expect(w.decision, JSON.stringify(w)).toBe(true);
    const [found, changed] = (await history()).slice(-2);
    expect(found).toEqual({ type: 'AnomalyDetected', actor: 'monitor', data: { detector: 'new_action', severity: 'medium', response: 'alert', evidence: { action: 'write' }, trustScoreChange: -5 } });
    expect(changed).toEqual({ type: 'TrustScoreChanged', actor: 'monitor', data: { from: 60, to: 55, reason: 'new_action (medium)' } });
    expect(node.view.agents.get('clerk-bot')!.record.status).toBe('active');
    // Writing again is no longer new.
    at(7, 10, 5);
    expect((await decide('write', 'inv-7-10-5')).decision).toBe(true);
    expect(await findings()).toEqual(['new_action']);
  });

  it('a folder it never used (and documents in it): new_resource, once; a new document in a folder it uses is nothing', async () => {
    at(7, 11);
    const sub = [{ uid: folder('invoices-2027'), attrs: {}, parents: [folder('invoices')] }];
    expect((await decide('read', 'q-1', [folder('invoices-2027')], sub)).decision).toBe(true);
    expect((await history()).at(-1)).toMatchObject({ type: 'AnomalyDetected', data: { detector: 'new_resource', severity: 'low', evidence: { resource: 'Document::"q-1"', parents: 'Folder::"invoices-2027"' }, trustScoreChange: 0 } });
    at(7, 11, 1);
    expect((await decide('read', 'q-2', [folder('invoices-2027')], sub)).decision).toBe(true);
    expect((await decide('read', 'inv-never-seen')).decision).toBe(true);
    expect(await findings()).toEqual(['new_action', 'new_resource']);
    expect(trust()).toBe(55);
  });

  it('a burst of 40 in a minute (its usual: one): rate_spike, once; the lower score makes a policy refuse it at once', async () => {
    for (let i = 0; i < 40; i++) {
      at(7, 14, i / 60);
      await decide('read', `burst-${i}`);
    }
    const spike = (await history()).find((e) => e.data.detector === 'rate_spike')!;
    expect(spike.data).toMatchObject({ severity: 'high', response: 'alert', evidence: { count: 30, threshold: 30, windowSeconds: 60, factor: 5 }, trustScoreChange: -10 });
    // Its usual rate: about one a minute in the minutes it works (the burst itself counts in a little).
    expect(spike.data.evidence.usual).toBeGreaterThanOrEqual(1);
    expect(spike.data.evidence.usual).toBeLessThan(1.2);
    expect(await findings()).toEqual(['new_action', 'new_resource', 'rate_spike']);
    expect(trust()).toBe(45);
    at(7, 14, 2);
    expect(await decide('read', 'inv-7-14')).toMatchObject({ decision: false, context: { reasons: ['low-trust-agents-are-refused'] } });
  });

  it('a person clears the finding: the score comes back, and so does the access; clearing twice is a 404', async () => {
    const sam = await personToken('sam');
    const res = await node.api('POST', '/v1/agents/clerk-bot/clear-finding', { detector: 'rate_spike', reason: 'a month-end run, agreed with finance' }, {}, sam);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body).toMatchObject({ trustScore: 55, nodesMissing: [] });
    expect(res.body.findings.rate_spike).toBeUndefined();
    expect((await history()).slice(-2)).toEqual([
      { type: 'FindingCleared', actor: 'human:sam', data: { detector: 'rate_spike', reason: 'a month-end run, agreed with finance' } },
      { type: 'TrustScoreChanged', actor: 'human:sam', data: { from: 45, to: 55, reason: 'rate_spike cleared' } },
    ]);
    at(7, 15);
    expect((await decide('read', 'inv-7-15')).decision).toBe(true);
    const again = await node.api('POST', '/v1/agents/clerk-bot/clear-finding', { detector: 'rate_spike', reason: 'again' }, {}, sam);
    expect([again.status, again.body.code]).toEqual([404, 'FINDING_NOT_FOUND']);
  });

  it('work at 22:00, an hour it never works: off_hours', async () => {
    at(7, 22);
    expect((await decide('read', 'inv-7-22')).decision).toBe(true);
    expect((await history()).filter((e) => e.type === 'AnomalyDetected').at(-1)!.data).toMatchObject({ detector: 'off_hours', severity: 'medium', evidence: { hour: 22, share: 0 } });
    expect(trust()).toBe(50);
  });
});

describe('a node that restarts', () => {
  it('learns the baseline back from the decision log: judged at once, the known left alone, the new found', async () => {
    await node.close();
    node = await startTestNode(backend, { cedarDir, monitoring: DEFAULT_MONITORING, humanPins: peoplePins, clock: () => new Date(now), monitorSeed: BLOOM_SEED });
    const before = (await findings()).length;
    at(8, 10);
    // Its first decision here starts the read of its history; judged once that is in.
    expect((await decide('read', 'inv-8-10')).decision).toBe(true);
    await new Promise((r) => setTimeout(r, 200));
    at(8, 10, 1);
    expect((await decide('write', 'inv-8-10-1')).decision).toBe(true); // an action it used before the restart
    at(8, 10, 2);
    const sub = [{ uid: folder('contracts-2027'), attrs: {}, parents: [folder('invoices')] }];
    expect((await decide('read', 'c-1', [folder('contracts-2027')], sub)).decision).toBe(true);
    // Without its history the node would still be warming up (a week) and find nothing.
    expect((await findings()).slice(before)).toEqual(['new_resource']);
  });
});

describe('clearing a finding: who and what', () => {
  it('refuses a detector that does not exist, a missing reason, an unknown agent, and a person the policies do not let', async () => {
    const bad = [
      [{ detector: 'nope', reason: 'x' }, 400], [{ detector: '__proto__', reason: 'x' }, 400], [{ detector: 'off_hours' }, 400],
      [{ detector: 'off_hours', reason: '' }, 400], [{ detector: 'off_hours', reason: 'x', extra: 1 }, 400], [{ detector: ['off_hours'], reason: 'x' }, 400],
    ] as const;
    for (const [body, status] of bad) expect((await node.api('POST', '/v1/agents/clerk-bot/clear-finding', body)).status, JSON.stringify(body)).toBe(status);
    expect((await node.api('POST', '/v1/agents/nobody/clear-finding', { detector: 'off_hours', reason: 'x' })).body.code).toBe('AGENT_NOT_FOUND');
    const alice = await personToken('alice'); // clerk-bot's owner: the example policies let owners suspend, not clear
    expect((await node.api('POST', '/v1/agents/clerk-bot/clear-finding', { detector: 'off_hours', reason: 'x' }, {}, alice)).status).toBe(403);
    expect(node.view.agents.get('clerk-bot')!.record.findings?.off_hours).toBeDefined();
  });
});
