import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { SignJWT } from 'jose';
import { describe, expect, it } from 'vitest';
import { evaluateAgent } from '../../src/authz/agent-decision.ts';
import { DecisionCaches } from '../../src/authz/decision-caches.ts';
import { compilePolicySet } from '../../src/authz/policy-set.ts';
import type { EvaluationRequest } from '../../src/authz/engine.ts';
import { handFedView, testIssuer } from '../support/agent-fixture.ts';

// Agent decisions take one Cedar call for the ceiling, agent and human layers (src/authz/
// combined.ts) and fall back to one call per layer when that call cannot say which layer
// refused. Both must give the same decision, layer, reasons and errors for every request.

const schema = readFileSync(new URL('../../cedar/schema.cedarschema', import.meta.url), 'utf8');
const policies = `
@id("agents-read-invoices") permit (principal in Group::"finance-agents", action == Action::"read", resource in Folder::"invoices");
@id("finance-reads-invoices") permit (principal in Group::"finance", action == Action::"read", resource in Folder::"invoices");
@id("alice-writes") permit (principal == Human::"alice", action == Action::"write", resource in Folder::"invoices") when { principal.email like "*@example.com" };
@id("humans-read-reports") permit (principal is Human, action == Action::"read", resource in Folder::"reports");
@id("trusted-agents-read-reports") permit (principal is Agent in Group::"finance-agents", action == Action::"read", resource in Folder::"reports") when { principal.trustScore >= 50 };
@id("owner-in-finance") permit (principal is Agent, action == Action::"read", resource in Folder::"invoices") when { principal has owner && principal.owner in Group::"finance" };
@id("test-agents-read-reports") permit (principal is Agent, action == Action::"read", resource in Folder::"reports") when { principal.provenance.environment == "test" && principal.tags.isEmpty() };
@id("no-secrets") forbid (principal, action, resource in Folder::"secret");
@id("eve-not-reports") forbid (principal == Human::"eve", action, resource in Folder::"reports");
@id("overflow-errors") forbid (principal, action == Action::"write", resource) when { context has amount && context.amount * 4000000000000000 > 0 };
@id("big-writes") forbid (principal in Group::"finance", action == Action::"write", resource) when { context has amount && context.amount > 100 };
@id("ceiling-no-locked") @layer("ceiling") forbid (principal, action == Action::"write", resource in Folder::"locked");
@id("ceiling-reports") @layer("ceiling") permit (principal is Agent, action == Action::"read", resource in Folder::"reports") when { principal.status == "active" };
@id("ceiling-folder") @layer("ceiling") permit (principal, action in [Action::"read", Action::"write"], resource in ?resource);
@id("grant-write-folder") permit (principal, action == Action::"write", resource in ?resource);
@id("grant-read-doc") permit (principal == ?principal, action == Action::"read", resource == ?resource);
@id("grant-read-docs-in") permit (principal in ?principal, action == Action::"read", resource is Document in ?resource) when { context has amount && context.amount * 4000000000000000 > 0 };
@id("grant-no-write") forbid (principal == ?principal, action == Action::"write", resource in ?resource);
`;

const folder = (id: string) => ({ type: 'Folder', id });
const entities = [
  { uid: folder('invoices'), attrs: {}, parents: [] },
  { uid: folder('secret'), attrs: {}, parents: [folder('invoices')] },
  { uid: folder('locked'), attrs: {}, parents: [folder('invoices')] },
  { uid: folder('reports'), attrs: {}, parents: [] },
  ...['d1:invoices', 's1:secret', 'l1:locked', 'r1:reports'].map((s) => {
    const [id, parent] = s.split(':');
    return { uid: { type: 'Document', id: id! }, attrs: {}, parents: [folder(parent!)] };
  }),
];

const { keys, credentials } = await testIssuer();
const { view, apply } = handFedView();
apply('group', 'finance', 1, 'GroupRegistered', { id: 'finance', parents: [] });
apply('group', 'finance-agents', 1, 'GroupRegistered', { id: 'finance-agents', parents: [] });
apply('human', 'alice', 1, 'HumanRegistered', { id: 'alice', email: 'alice@example.com', groups: ['finance'] });
apply('human', 'eve', 1, 'HumanRegistered', { id: 'eve', email: 'eve@evil.test', groups: [] });
apply('human', 'bob', 1, 'HumanRegistered', { id: 'bob', email: 'bob@example.com', groups: ['finance'] });
type Grant = string | { template: string; values: Record<string, unknown> };
const agents: Record<string, { owner: string; groups: string[]; trustScore: number; ceiling: string; grants?: Grant[] }> = {
  bot: { owner: 'alice', groups: ['finance-agents'], trustScore: 70, ceiling: 'invoices' },
  'bot-eve': { owner: 'eve', groups: ['finance-agents'], trustScore: 70, ceiling: 'invoices' },
  'bot-low-trust': { owner: 'bob', groups: ['finance-agents'], trustScore: 10, ceiling: 'reports' },
  'bot-writer': { owner: 'alice', groups: [], trustScore: 50, ceiling: 'invoices', grants: ['invoices'] },
  // Grants of every slot form, two of one template, one outside the ceiling, one whose condition can fail.
  'bot-multi': {
    owner: 'alice', groups: ['finance-agents'], trustScore: 70, ceiling: 'invoices',
    grants: ['reports', 'invoices', { template: 'grant-read-doc', values: { '?resource': { type: 'Document', id: 'd1' } } }, { template: 'grant-read-docs-in', values: { '?resource': folder('reports') } },
      { template: 'grant-read-docs-in', values: { '?resource': folder('invoices') } }],
  },
  // A grant of a forbid template: this agent's links are not shared (shared-sets.ts).
  'bot-forbid': { owner: 'alice', groups: [], trustScore: 50, ceiling: 'invoices', grants: ['invoices', { template: 'grant-no-write', values: { '?resource': { type: 'Document', id: 'd1' } } }] },
};
for (const [id, a] of Object.entries(agents)) {
  apply('agent', id, 1, 'AgentRegistered', {
    id, owner: a.owner, purpose: 'test', provenance: { model: 'm', modelVersion: '1', environment: 'test' }, trustScore: a.trustScore,
    groups: a.groups, tags: [], credentials, ceiling: { template: 'ceiling-folder', values: { '?resource': folder(a.ceiling) } },
  });
  const grants = (a.grants ?? []).map((g) => (typeof g === 'string' ? { template: 'grant-write-folder', values: { '?resource': folder(g) } } : g));
  apply('agent', id, 2, 'AgentAuthorized', { grants, tokensNotBefore: new Date(Date.now() - 60_000).toISOString() });
}

const set = compilePolicySet({ schema, policies }, 1);

async function token(agent: string, human: string | null, details: unknown): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const claims = { authorization_details: details, ...(human ? { act: { sub: agent } } : {}) };
  return new SignJWT(claims).setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setIssuer(credentials.issuer).setAudience('leash')
    .setSubject(human ?? agent).setIssuedAt(now).setExpirationTime(now + 120).sign(keys.privateKey);
}

/** The decision, or the error's code when the request is refused as bad input. */
async function both(request: EvaluationRequest) {
  const run = (combined: boolean) =>
    evaluateAgent(request, set, view, new Date(), { combined, caches: combined ? new DecisionCaches() : undefined }).catch((e: { code?: string }) => ({ error: e.code }));
  return { combined: await run(true), layered: await run(false) };
}

describe('one Cedar call for the ceiling, agent and human layers', () => {
  it('is available for this schema: for the owner through principal.owner, for delegation through context', () => {
    expect(set.combinedOwnerSchemaName).not.toBeNull();
    expect(set.combinedSchemaName).not.toBeNull();
  });

  it('a set that reads `context` as a whole value is not combined for delegated requests', () => {
    const whole = compilePolicySet({ schema, policies: `${policies}\n@id("exact-context") forbid (principal, action, resource) when { context == context };` }, 2);
    expect(whole.combinedSchemaName).toBeNull();
    expect(whole.combinedOwnerSchemaName).not.toBeNull();
  });

  it('an ordinary policy with an integer literal beyond 2^53 is not rewritten (its JSON form would round it)', () => {
    const big = compilePolicySet({ schema, policies: `${policies}\n@id("big") forbid (principal, action, resource) when { context has amount && context.amount == 9007199254740993 };` }, 3);
    expect(big.combinedOwnerSchemaName).toBeNull();
    expect(big.combinedSchemaName).toBeNull();
  });

  it('names the same layer and policies as one call per layer, on allows and on each kind of deny', async () => {
    const cases: [string, string | null, string, string, Record<string, unknown>][] = [
      ['bot', null, 'read', 'd1', {}], // all allow
      ['bot-eve', null, 'read', 'd1', {}], // human layer refuses (its owner eve is not in finance)
      ['bot-writer', null, 'write', 'd1', {}], // grant + alice-writes
      ['bot-writer', null, 'write', 'd1', { amount: 500 }], // forbid in the ordinary set
      ['bot-writer', null, 'write', 'd1', { amount: 5000 }], // a policy errors (overflow) and a forbid holds
      ['bot-writer', null, 'write', 'l1', {}], // forbid in the ceiling
      ['bot', null, 'write', 'd1', {}], // the agent layer has no permit
      ['bot-low-trust', null, 'read', 'r1', {}], // ceiling allows, agent does not (trust)
      ['bot-multi', null, 'read', 'd1', {}], // a grant of the document itself
      ['bot-multi', null, 'write', 'd1', {}], // the second grant of one template
      ['bot-multi', null, 'read', 'r1', { amount: 5000 }], // outside the ceiling
      ['bot-multi', null, 'read', 'd1', { amount: 5000 }], // one grant's condition fails to evaluate where its slot holds, not where it does not
      ['bot-multi', null, 'read', 'd1', { amount: 1 }],
      ['bot-forbid', null, 'write', 'd1', {}], // a forbid grant holds
      ['bot-forbid', null, 'write', 'l1', {}],
    ];
    const details = (action: string) => [{ type: 'leash:cedar', actions: [action], resourceIn: folder('invoices') }, { type: 'leash:cedar', actions: ['read'], resourceIn: folder('reports') }];
    const seen = new Set<string>();
    for (const [agent, human, action, doc, context] of cases) {
      const ceiling = agents[agent]!.ceiling;
      const tok = await token(agent, human, ceiling === 'reports' ? [{ type: 'leash:cedar', actions: [action], resourceIn: folder('reports') }] : details(action).slice(0, action === 'write' ? 1 : 2));
      const { combined, layered } = await both({ subject: { type: 'agent', id: agent, properties: { token: tok } }, action: { name: action }, resource: { type: 'Document', id: doc }, context: { entities, ...context } });
      expect(combined, `${agent} ${action} ${doc}`).toEqual(layered);
      seen.add('layer' in layered ? `${layered.decision}:${layered.layer}` : 'error');
    }
    // The cases above reach every outcome the combined call has to tell apart.
    expect(seen).toEqual(new Set(['true:all', 'false:human', 'false:agent', 'false:ceiling']));
  });

  it('property: random requests get the same decision, layer, reasons and errors both ways', async () => {
    const uid = fc.constantFrom(folder('invoices'), folder('reports'), folder('secret'), folder('locked'), { type: 'Document', id: 'd1' }, { type: 'Document', id: 'r1' });
    const detail = fc.oneof(
      fc.record({ type: fc.constant('leash:cedar'), actions: fc.subarray(['read', 'write'], { minLength: 1 }), resourceIn: uid }),
      fc.record({ type: fc.constant('leash:cedar'), actions: fc.subarray(['read', 'write'], { minLength: 1 }), resource: uid }),
    );
    const request = fc.record({
      // Weighted towards the agents and requests that can be allowed, so both outcomes are compared often.
      agent: fc.constantFrom('bot', 'bot', 'bot-writer', 'bot-writer', 'bot-eve', 'bot-low-trust', 'bot-multi', 'bot-multi', 'bot-forbid'),
      human: fc.constantFrom(null, null, null, 'alice', 'eve', 'bob'),
      action: fc.constantFrom('read', 'read', 'write'),
      doc: fc.constantFrom('d1', 'd1', 'd1', 'r1', 's1', 'l1', 'x9'),
      covering: fc.constantFrom(true, true, true, false), // most tokens carry an entry for the request, so allows are common
      details: fc.array(detail, { minLength: 1, maxLength: 2 }),
      context: fc.oneof(
        { weight: 3, arbitrary: fc.constant({}) },
        fc.record({ amount: fc.constantFrom(1, 3, 200, 5000, -7) }),
        fc.constant({ __leash_human: { type: 'Human', id: 'alice' } }),
        fc.dictionary(fc.string({ maxLength: 4 }), fc.integer(), { maxKeys: 2 }),
      ),
      // The caller describing an entity of a registry type (without its required attributes) itself.
      // Or a malformed entity of another type that the request cannot reach (refused all the same).
      stray: fc.constantFrom(null, null, null, { uid: { type: 'Agent', id: 'stray' }, attrs: {}, parents: [] }, { uid: { type: 'Group', id: 'finance-agents' }, attrs: {}, parents: [] }, { uid: { type: 'Document', id: 'junk' }, attrs: { label: 5 }, parents: [] }),
    });
    let allows = 0;
    await fc.assert(
      fc.asyncProperty(request, async ({ agent, human, action, doc, covering, details, context, stray }) => {
        const home = entities.find((e) => e.uid.id === doc)?.parents[0] ?? folder('invoices');
        const tok = await token(agent, human, covering ? [{ type: 'leash:cedar', actions: [action], resourceIn: home }, ...details.slice(1)] : details);
        const { combined, layered } = await both({
          subject: { type: 'agent', id: agent, properties: { token: tok } }, action: { name: action }, resource: { type: 'Document', id: doc },
          context: { entities: stray ? [...entities, stray] : entities, ...context },
        });
        expect(combined).toEqual(layered);
        if ('decision' in layered && layered.decision) allows++;
      }),
      { numRuns: 400 },
    );
    // The generator reaches allows, not only early denies: about 37 of 400 on average (seen 25–43),
    // so fewer than 10 would mean the generator broke, not bad luck (binomial tail below 1e-6).
    expect(allows).toBeGreaterThanOrEqual(10);
  });
});

describe('the memory of combined answers', () => {
  // Documents that no policy names and nothing else in the request mentions share one answer
  // when they are alike (type, attributes, parents). Every case below would come out wrong if a
  // resource that can be told apart from its lookalikes shared their answer.
  const memoSchema = schema
    .replace('entity Document in [Folder];', 'entity Document in [Folder] { related?: Document, label?: String };')
    .replace('amount?: Long,', 'amount?: Long, target?: Document,');
  const memoPolicies = `${policies}
@id("no-d3") forbid (principal, action, resource == Document::"d3");
@id("target") forbid (principal, action == Action::"read", resource) when { context has target && context.target == resource };
@id("pointed-at") forbid (principal, action == Action::"read", resource) when { Document::"d6" has related && Document::"d6".related == resource };
@id("secret-label") forbid (principal, action, resource) when { resource has label && resource.label == "secret" };
`;
  const memoSet = compilePolicySet({ schema: memoSchema, policies: memoPolicies }, 10);
  const doc = (id: string, attrs: Record<string, unknown> = {}) => ({ uid: { type: 'Document', id }, attrs, parents: [folder('invoices')] });
  const ref = (id: string) => ({ __entity: { type: 'Document', id } });
  const docs = [
    ...entities.filter((e) => e.uid.type === 'Folder'),
    doc('d1'), doc('d2'), doc('d3'), doc('d5', { label: 'secret' }), doc('d6', { related: ref('d7') }), doc('d7'), doc('d8', { label: 'x' }), doc('d9'),
  ];
  apply('agent', 'bot-doc', 1, 'AgentRegistered', {
    id: 'bot-doc', owner: 'alice', purpose: 'test', provenance: { model: 'm', modelVersion: '1', environment: 'test' }, trustScore: 70,
    groups: [], tags: [], credentials, ceiling: { template: 'ceiling-folder', values: { '?resource': folder('invoices') } },
  });
  apply('agent', 'bot-doc', 2, 'AgentAuthorized', { grants: [{ template: 'grant-write-folder', values: { '?resource': { type: 'Document', id: 'd2' } } }], tokensNotBefore: new Date(Date.now() - 60_000).toISOString() });

  const readWrite = [{ type: 'leash:cedar', actions: ['read', 'write'], resourceIn: folder('invoices') }];
  const ask = async (caches: DecisionCaches, agent: string, action: string, id: string, context: Record<string, unknown> = {}, human: string | null = null) => {
    // As a PEP describes them: the resource, its folders, and the documents the policies name (d3, d6 and what d6 refers to).
    const described = docs.filter((e) => e.uid.type === 'Folder' || ['d3', 'd6', 'd7', id].includes(e.uid.id));
    const request = { subject: { type: 'agent', id: agent, properties: { token: await token(agent, human, readWrite) } }, action: { name: action }, resource: { type: 'Document', id }, context: { entities: described, ...context } };
    const remembered = caches.answerStats.remembered;
    const got = await evaluateAgent(request, memoSet, view, new Date(), { caches });
    const reference = await evaluateAgent(request, memoSet, view, new Date(), { combined: false });
    expect(got, `${agent} for ${human ?? 'its owner'} ${action} ${id} ${JSON.stringify(context)}`).toEqual(reference);
    return { decision: got, fromMemory: caches.answerStats.remembered > remembered };
  };

  it('serves a lookalike document from memory, and never a document something can tell apart', async () => {
    const caches = new DecisionCaches();
    expect(await ask(caches, 'bot', 'read', 'd1')).toMatchObject({ decision: { decision: true }, fromMemory: false });
    expect(await ask(caches, 'bot', 'read', 'd2')).toMatchObject({ decision: { decision: true }, fromMemory: true });
    expect(await ask(caches, 'bot', 'read', 'd9')).toMatchObject({ decision: { decision: true }, fromMemory: true });
    // Named by a policy.
    expect(await ask(caches, 'bot', 'read', 'd3')).toMatchObject({ decision: { decision: false, reasons: ['no-d3'] }, fromMemory: false });
    // Referred to by another entity's attribute.
    expect(await ask(caches, 'bot', 'read', 'd7')).toMatchObject({ decision: { decision: false, reasons: ['pointed-at'] }, fromMemory: false });
    // Different attributes.
    expect(await ask(caches, 'bot', 'read', 'd5')).toMatchObject({ decision: { decision: false, reasons: ['secret-label'] }, fromMemory: false });
    // Referred to by the context: the first request's context names another document.
    expect(await ask(caches, 'bot', 'read', 'd1', { target: ref('d2') })).toMatchObject({ decision: { decision: true } });
    expect(await ask(caches, 'bot', 'read', 'd2', { target: ref('d2') })).toMatchObject({ decision: { decision: false, reasons: ['target'] }, fromMemory: false });
    // Named by the agent's own grant: d1 is refused first, d2 (the grant's document) must not share that.
    expect(await ask(caches, 'bot-doc', 'write', 'd1')).toMatchObject({ decision: { decision: false, layer: 'agent' } });
    expect(await ask(caches, 'bot-doc', 'write', 'd2')).toMatchObject({ decision: { decision: true }, fromMemory: false });
    // An answer with evaluation errors (an overflow here) is not shared: a message could name its document.
    expect(await ask(caches, 'bot-writer', 'write', 'd1', { amount: 5000 })).toMatchObject({ decision: { decision: false, errors: [expect.stringContaining('overflow')] } });
    expect(await ask(caches, 'bot-writer', 'write', 'd2', { amount: 5000 })).toMatchObject({ decision: { decision: false }, fromMemory: false });
  });

  it('property: one long-lived memory answers random requests exactly as deciding each afresh', async () => {
    const caches = new DecisionCaches();
    const request = fc.record({
      agent: fc.constantFrom('bot', 'bot', 'bot-doc', 'bot-writer', 'bot-eve', 'bot-multi', 'bot-forbid'),
      // Mostly for the owner; sometimes for a delegating human (the human goes in the context).
      human: fc.constantFrom(null, null, null, 'alice', 'eve', 'bob'),
      action: fc.constantFrom('read', 'read', 'write'),
      doc: fc.constantFrom('d1', 'd2', 'd3', 'd5', 'd6', 'd7', 'd8', 'd9', 's1', 'l1', 'x9'),
      context: fc.oneof(
        { weight: 3, arbitrary: fc.constant({}) },
        fc.record({ target: fc.constantFrom('d1', 'd2', 'd7', 'x9').map(ref) }),
        fc.record({ amount: fc.constantFrom(7, 500, 5000) }),
      ),
    });
    await fc.assert(fc.asyncProperty(request, async ({ agent, human, action, doc: id, context }) => void (await ask(caches, agent, action, id, context, human))), { numRuns: 300 });
    // Lookalikes were asked about often enough for the memory to have answered some of them.
    expect(caches.answerStats.remembered).toBeGreaterThan(20);
  });
});
