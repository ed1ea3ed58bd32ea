import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PEP_TOKEN, seedPrincipals, startTestNode, type TestNode } from '../support/node.ts';

// Shadow agents: a PEP asking about an agent the registry does not know makes it show up as
// discovered, once per id, and no caller can make the log hold more than a bounded trickle.

let node: TestNode;

const ask = (id: string, token: unknown = 'eyJhbGciOiJFUzI1NiJ9.e30.c2ln', bearer = PEP_TOKEN) => node.api('POST', '/access/v1/evaluation', {
  subject: { type: 'agent', id, properties: { token } }, action: { name: 'read' }, resource: { type: 'Document', id: 'd1' },
}, {}, bearer);
const discovered = async () => (await node.api('GET', '/v1/agents?status=discovered&limit=1000')).body.agents as { id: string; status: string; discovery: Record<string, string> }[];
const settle = () => new Promise((r) => setTimeout(r, 150));

beforeAll(async () => {
  node = await startTestNode({ kind: 'pglite', dataDir: null });
  await seedPrincipals(node);
});
afterAll(async () => node?.close());

describe('an agent the registry does not know', () => {
  it('is denied, and recorded once as discovered by the decision API, naming the caller and a fingerprint of its token', async () => {
    expect((await ask('ghost-bot')).body).toMatchObject({ decision: false, context: { layer: 'token', code: 'AGENT_UNKNOWN' } });
    // Asked again (before or after the discovery is recorded): denied, and not recorded twice.
    for (let i = 0; i < 3; i++) expect((await ask('ghost-bot')).body.decision).toBe(false);
    await settle();
    const found = (await discovered()).filter((a) => a.id === 'ghost-bot');
    expect(found).toHaveLength(1);
    expect(found[0]).toMatchObject({ status: 'discovered', discovery: { source: 'decision-api', seenBy: 'pep-1', fingerprint: expect.stringMatching(/^sha256:[0-9a-f]{16}$/) } });
    expect(found[0]!.discovery.firstSeen).toBe(found[0]!.discovery.lastSeen);
    const events = await node.store.readStream('agent/ghost-bot');
    expect(events.map((e) => [e.type, e.metadata?.actor])).toEqual([['AgentDiscovered', 'decision-api:pep-1']]);
    // Still unknown as an active agent: denied as not active from now on, and not recorded again.
    expect((await ask('ghost-bot')).body.context.code).toBe('AGENT_NOT_ACTIVE');
    // The operator may register it as any discovered agent.
    expect((await node.api('GET', '/v1/agents/ghost-bot')).body).toMatchObject({ status: 'discovered' });
  });

  it('ids the registry would not take are not recorded; nor is a flood of new ids beyond a trickle', async () => {
    const before = (await discovered()).length;
    for (const id of ['a/b', 'x'.repeat(129), 'nul\u0000id', '', 'sp ace']) expect((await ask(id)).status, JSON.stringify(id)).toBe(200);
    await settle();
    expect((await discovered()).length).toBe(before);
    // 200 distinct ids at once: each denied, a bounded number recorded (10 at once, then 10 per second per node).
    const started = Date.now();
    const answers = await Promise.all(Array.from({ length: 200 }, (_, i) => ask(`flood-${i}`)));
    expect(answers.every((a) => a.body.decision === false)).toBe(true);
    // Recorded after the answers: wait for the first (a busy machine takes longer than a settle).
    const flooded = async () => (await discovered()).filter((a) => a.id.startsWith('flood-')).length;
    for (let i = 0; i < 100 && (await flooded()) === 0; i++) await settle();
    await settle();
    const recorded = await flooded();
    const seconds = (Date.now() - started) / 1000;
    expect(recorded).toBeGreaterThan(0);
    expect(recorded).toBeLessThanOrEqual(Math.floor(10 + 10 * seconds) + 1);
    expect(recorded).toBeLessThan(200);
  });
});
