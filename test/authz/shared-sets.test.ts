import { readFileSync } from 'node:fs';
import { SignJWT } from 'jose';
import { describe, expect, it } from 'vitest';
import { evaluateAgent } from '../../src/authz/agent-decision.ts';
import { DecisionCaches } from '../../src/authz/decision-caches.ts';
import { compilePolicySet } from '../../src/authz/policy-set.ts';
import { slotStats } from '../../src/authz/preparsed-slots.ts';
import { resourceSlotHolds, shareableTemplate } from '../../src/authz/shared-sets.ts';
import { handFedView, testIssuer } from '../support/agent-fixture.ts';

// Agents whose links differ only in their slot values share their prepared sets: a node of
// many agents holds a few sets, not two per agent. (That the shared sets decide exactly as
// per-layer calls do is the property of combined.test.ts, which runs agents of every kind.)

const schema = readFileSync(new URL('../../cedar/schema.cedarschema', import.meta.url), 'utf8');
const policies = `
@id("agents-read") permit (principal in Group::"agents", action == Action::"read", resource);
@id("owners-work") permit (principal in Group::"owners", action in [Action::"read", Action::"write"], resource);
@id("no-secrets") forbid (principal, action, resource in Folder::"secret");
@id("ceiling-folder") @layer("ceiling") permit (principal, action in [Action::"read", Action::"write"], resource in ?resource);
@id("grant-read") permit (principal == ?principal, action == Action::"read", resource in ?resource);
@id("no-write") forbid (principal == ?principal, action == Action::"write", resource in ?resource);
`;
const folder = (id: string) => ({ type: 'Folder', id });
const { keys, credentials } = await testIssuer();
const { view, apply } = handFedView();
apply('group', 'agents', 1, 'GroupRegistered', { id: 'agents', parents: [] });
apply('group', 'owners', 1, 'GroupRegistered', { id: 'owners', parents: [] });
apply('human', 'alice', 1, 'HumanRegistered', { id: 'alice', email: 'alice@example.com', groups: ['owners'] });
const register = (id: string, grants: { template: string; values: Record<string, unknown> }[]) => {
  apply('agent', id, 1, 'AgentRegistered', {
    id, owner: 'alice', purpose: 'test', provenance: { model: 'm', modelVersion: '1', environment: 'test' }, trustScore: 50,
    groups: ['agents'], tags: [], credentials, ceiling: { template: 'ceiling-folder', values: { '?resource': folder(`home-${id}`) } },
  });
  apply('agent', id, 2, 'AgentAuthorized', { grants, tokensNotBefore: new Date(Date.now() - 60_000).toISOString() });
};
const AGENTS = 40;
for (let i = 0; i < AGENTS; i++) register(`a${i}`, [{ template: 'grant-read', values: { '?resource': folder(`reads-a${i}`) } }]);
for (let i = 0; i < 3; i++) register(`f${i}`, [{ template: 'no-write', values: { '?resource': folder(`locked-f${i}`) } }]);

const set = compilePolicySet({ schema, policies }, 1);
const caches = new DecisionCaches();

/** Agent `id` reads a document in its reads folder (inside its home folder, its ceiling); the decision both ways. */
async function read(id: string, doc: string) {
  const now = Math.floor(Date.now() / 1000);
  const token = await new SignJWT({ authorization_details: [{ type: 'leash:cedar', actions: ['read'], resourceIn: folder(`home-${id}`) }] })
    .setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setIssuer(credentials.issuer).setAudience('leash').setSubject(id).setIssuedAt(now).setExpirationTime(now + 120).sign(keys.privateKey);
  const entities = [
    { uid: folder(`home-${id}`), attrs: {}, parents: [] },
    { uid: folder(`reads-${id}`), attrs: {}, parents: [folder(`home-${id}`)] },
    { uid: { type: 'Document', id: doc }, attrs: {}, parents: [folder(`reads-${id}`)] },
  ];
  const request = { subject: { type: 'agent', id, properties: { token } }, action: { name: 'read' }, resource: { type: 'Document', id: doc }, context: { entities } };
  const got = await evaluateAgent(request, set, view, new Date(), { caches });
  expect(got).toEqual(await evaluateAgent(request, set, view, new Date(), { combined: false }));
  return got;
}

const setsHeld = () => slotStats().sources.get(set.preparsedId) ?? 0;

describe('sets shared between agents', () => {
  it('40 agents, each with a ceiling and a grant of its own, decide on the sets the first one prepared', async () => {
    const first = await read('a0', 'd-0');
    expect(first).toMatchObject({ decision: true, layer: 'all', reasons: ['agents-read', 'ceiling:a0', 'grant:a0:0', 'owners-work'] });
    const held = setsHeld();
    expect(held).toBeGreaterThan(0);
    for (let i = 1; i < AGENTS; i++) {
      const d = await read(`a${i}`, `d-${i}`);
      expect(d.reasons).toEqual(['agents-read', `ceiling:a${i}`, `grant:a${i}:0`, 'owners-work']);
    }
    expect(setsHeld()).toBe(held);
  });

  it('an agent whose link is a forbid template gets sets of its own', async () => {
    await read('f0', 'e-0');
    const held = setsHeld();
    await read('f1', 'e-1');
    await read('f2', 'e-2');
    expect(setsHeld()).toBe(held + 2);
    expect(shareableTemplate(set.templateEntries['no-write'])).toBe(false);
    expect(shareableTemplate(set.templateEntries['grant-read'])).toBe(true);
  });

  it("a link's resource slot is tested as Cedar reads its scope", () => {
    const template = (resource: string) => compilePolicySet({ schema, policies: `@id("t") permit (principal == ?principal, action, ${resource});` }, 2).templateEntries.t!;
    const doc = { type: 'Document', id: 'd' };
    const ancestors = new Set(['Folder::"reads"', 'Folder::"home"']);
    const equal = template('resource == ?resource');
    const inside = template('resource in ?resource');
    const typed = template('resource is Document in ?resource');
    expect(resourceSlotHolds(equal, { '?resource': doc }, doc, ancestors)).toBe(true);
    expect(resourceSlotHolds(equal, { '?resource': folder('home') }, doc, ancestors)).toBe(false);
    expect(resourceSlotHolds(inside, { '?resource': folder('home') }, doc, ancestors)).toBe(true);
    expect(resourceSlotHolds(inside, { '?resource': { __entity: folder('home') } }, doc, ancestors)).toBe(true);
    expect(resourceSlotHolds(inside, { '?resource': doc }, doc, ancestors)).toBe(true);
    expect(resourceSlotHolds(inside, { '?resource': folder('elsewhere') }, doc, ancestors)).toBe(false);
    // Same id, another type: not the same entity.
    expect(resourceSlotHolds(inside, { '?resource': { type: 'Folder', id: 'd' } }, doc, new Set())).toBe(false);
    expect(resourceSlotHolds(typed, { '?resource': folder('reads') }, doc, ancestors)).toBe(true);
    // A value that is not an entity (never made by a checked link) never holds.
    expect(resourceSlotHolds(inside, { '?resource': 'Folder::"home"' }, doc, ancestors)).toBe(false);
    expect(resourceSlotHolds(inside, {}, doc, ancestors)).toBe(false);
    expect(resourceSlotHolds(template('resource'), {}, doc, ancestors)).toBe(true);
  });
});

describe('sets shared between agents, attacked', () => {
  // A ceiling forbid for group g1; the agent is in a group x the registry does not hold, which
  // a caller may describe (with its parents). A parent type holding a newline once read, in a
  // key, like two parents: the set prepared for it lacked the forbid, for every later caller.
  const attacked = compilePolicySet({ schema, policies: `
@id("agents-read") permit (principal, action == Action::"read", resource);
@id("ceiling-no-g1") @layer("ceiling") forbid (principal in Group::"g1", action, resource);
@id("ceiling-folder") @layer("ceiling") permit (principal, action in [Action::"read", Action::"write"], resource in ?resource);
@id("grant-read") permit (principal == ?principal, action == Action::"read", resource in ?resource);
` }, 3);
  apply('group', 'g1', 1, 'GroupRegistered', { id: 'g1', parents: [] });
  apply('group', 'g2', 1, 'GroupRegistered', { id: 'g2', parents: [] });
  apply('agent', 'x0', 1, 'AgentRegistered', {
    id: 'x0', owner: 'alice', purpose: 'test', provenance: { model: 'm', modelVersion: '1', environment: 'test' }, trustScore: 50,
    groups: ['x'], tags: [], credentials, ceiling: { template: 'ceiling-folder', values: { '?resource': folder('home') } },
  });
  apply('agent', 'x0', 2, 'AgentAuthorized', { grants: [{ template: 'grant-read', values: { '?resource': folder('home') } }], tokensNotBefore: new Date(Date.now() - 60_000).toISOString() });

  it('a parent type that is not a Cedar type is refused, and cannot make later decisions skip a forbid', async () => {
    const now = Math.floor(Date.now() / 1000);
    const token = await new SignJWT({ authorization_details: [{ type: 'leash:cedar', actions: ['read'], resourceIn: folder('home') }] })
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setIssuer(credentials.issuer).setAudience('leash').setSubject('x0').setIssuedAt(now).setExpirationTime(now + 120).sign(keys.privateKey);
    const request = (parents: unknown[]) => ({
      subject: { type: 'agent', id: 'x0', properties: { token } }, action: { name: 'read' }, resource: { type: 'Document', id: 'd' },
      context: { entities: [{ uid: { type: 'Group', id: 'x' }, attrs: {}, parents }, { uid: folder('home'), attrs: {}, parents: [] }, { uid: { type: 'Document', id: 'd' }, attrs: {}, parents: [folder('home')] }] },
    });
    const legit = request([{ type: 'Group', id: 'g1' }, { type: 'Group', id: 'g2' }]);
    const reference = await evaluateAgent(legit, attacked, view, new Date(), { combined: false });
    expect(reference).toMatchObject({ decision: false, code: 'DETAILS_BEYOND_CEILING', reasons: ['ceiling-no-g1'] });
    for (const type of ['Group::"g2"\nGroup', 'Group::"g2",Group', 'Group x', '']) {
      await expect(evaluateAgent(request([{ type, id: 'g1' }]), attacked, view, new Date(), { caches })).rejects.toMatchObject({ code: 'VALIDATION_FAILED' });
    }
    // The entity's own type too.
    const ownType = request([]);
    (ownType.context.entities[0]!.uid as { type: string }).type = 'Group\nGroup';
    await expect(evaluateAgent(ownType, attacked, view, new Date(), { caches })).rejects.toMatchObject({ code: 'VALIDATION_FAILED', message: expect.stringContaining('not a Cedar entity type') });
    expect(await evaluateAgent(legit, attacked, view, new Date(), { caches })).toEqual(reference);
    expect(await evaluateAgent(legit, attacked, view, new Date(), {})).toEqual(reference);
  });
});
