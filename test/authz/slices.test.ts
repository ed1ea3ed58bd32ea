import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import * as cedar from '../../src/authz/cedar.ts';
import { preparsed } from '../../src/authz/layer-calls.ts';
import { answer } from '../../src/authz/layer-result.ts';
import { compilePolicySet } from '../../src/authz/policy-set.ts';
import { releaseSource, slotStats } from '../../src/authz/preparsed-slots.ts';
import type { CedarEntity, EntityUid } from '../../src/registry/cedar-entities.ts';
import { wholeSet } from '../bench/whole-set.ts';

// Leash prepares each layer in slices by principal (the policies whose principal scope can
// match it) instead of whole: the answers must be the whole layer's, and a superseded
// version's slices must be given back.

const schema = readFileSync(new URL('../../cedar/schema.cedarschema', import.meta.url), 'utf8');
const policies = `
@id("open") permit (principal, action == Action::"read", resource in Folder::"public");
@id("bot-1") permit (principal == Agent::"bot-1", action == Action::"read", resource in Folder::"f1");
@id("bot-1-not") forbid (principal == Agent::"bot-1", action == Action::"read", resource in Folder::"f1") when { context has amount && context.amount > 5 };
@id("finance") permit (principal in Group::"finance", action == Action::"read", resource in Folder::"f1");
@id("nested") permit (principal in Group::"all-staff", action == Action::"write", resource in Folder::"f1");
@id("humans") permit (principal is Human, action == Action::"read", resource in Folder::"f2");
@id("finance-humans") permit (principal is Human in Group::"finance", action == Action::"write", resource in Folder::"f2");
@id("trusty") permit (principal is Agent, action == Action::"read", resource in Folder::"f2") when { principal.trustScore > 50 };
@id("errs") forbid (principal in Group::"flaky", action == Action::"read", resource) when { context has amount && context.amount * 9223372036854775807 > 1 };
`;

const folder = (id: string) => ({ type: 'Folder', id });
const agent = (id: string, groups: string[], trustScore = 60): CedarEntity => ({
  uid: { type: 'Agent', id }, parents: groups.map((g) => ({ type: 'Group', id: g })),
  attrs: { status: 'active', trustScore, purpose: 'p', provenance: { model: 'm', modelVersion: '1', environment: 'production' }, tags: [] },
});
const human = (id: string, groups: string[]): CedarEntity => ({ uid: { type: 'Human', id }, parents: groups.map((g) => ({ type: 'Group', id: g })), attrs: { email: `${id}@example.com` } });
const group = (id: string, parents: string[] = []): CedarEntity => ({ uid: { type: 'Group', id }, parents: parents.map((g) => ({ type: 'Group', id: g })), attrs: {} });

const entities: CedarEntity[] = [
  group('finance', ['all-staff']), group('all-staff'), group('flaky'),
  agent('bot-1', ['finance']), agent('bot-2', ['flaky'], 10), agent('bot-3', []),
  human('alice', ['finance']), human('bob', []),
  { uid: folder('public'), attrs: {}, parents: [] }, { uid: folder('f1'), attrs: {}, parents: [] }, { uid: folder('f2'), attrs: {}, parents: [] },
  ...['public', 'f1', 'f2'].map((f) => ({ uid: { type: 'Document', id: `d-${f}` }, attrs: {}, parents: [folder(f)] })),
];

describe('policy slices', () => {
  it('answer every request as the whole layer does: decision, reasons and errors', () => {
    const set = compilePolicySet({ schema, policies }, 901);
    const principals: EntityUid[] = ['bot-1', 'bot-2', 'bot-3', 'alice', 'bob'].map((id) => ({ type: id.startsWith('bot') ? 'Agent' : 'Human', id }));
    let compared = 0;
    const outcomes = new Set<string>();
    for (const principal of principals) {
      for (const action of ['read', 'write']) {
        for (const f of ['public', 'f1', 'f2']) {
          for (const context of [{}, { amount: 3 }, { amount: 9 }]) {
            const call = { action: { type: 'Action', id: action }, resource: { type: 'Document', id: `d-${f}` }, context, entities };
            const sliced = preparsed(set, set.preparsedId, principal, call, false);
            const whole = answer(cedar.statefulIsAuthorized({
              principal, action: call.action, resource: call.resource, context: context as cedar.Context, entities: entities as cedar.Entities,
              preparsedPolicySetId: wholeSet(set), preparsedSchemaName: set.schemaName, validateRequest: false,
            }), (id) => set.forbidIds.has(id));
            expect(sliced, `${principal.id} ${action} ${f} ${JSON.stringify(context)}`).toEqual(whole);
            outcomes.add(`${whole.allow}:${whole.reasons.join(',')}:${whole.errored}`);
            compared++;
          }
        }
      }
    }
    expect(compared).toBe(90);
    // The requests reach every kind of outcome: allows by each scope, a forbid, an erroring forbid, nothing.
    for (const id of ['open', 'bot-1', 'bot-1-not', 'finance', 'nested', 'humans', 'finance-humans', 'trusty', 'errs']) {
      expect([...outcomes].some((o) => o.includes(id)), id).toBe(true);
    }
  });

  it('principals that reach the same scopes share one slice; a superseded version gives its slices back', () => {
    const call = { action: { type: 'Action', id: 'read' }, resource: { type: 'Document', id: 'd-public' }, context: {}, entities };
    const v1 = compilePolicySet({ schema, policies }, 902);
    for (const id of ['bot-2', 'bot-3']) preparsed(v1, v1.preparsedId, { type: 'Agent', id }, call, false);
    preparsed(v1, v1.preparsedId, { type: 'Agent', id: 'bot-1' }, call, false);
    // bot-3 (no group, no policy of its own) reaches the open and Agent-typed scopes; bot-2 adds flaky;
    // bot-1 its own and finance's (through all-staff): three slices for three principals, none shared.
    expect(slotStats().sources.get(v1.preparsedId)).toBe(3);
    // Another agent with no group and no policy of its own reaches what bot-3 does: the same slice.
    preparsed(v1, v1.preparsedId, { type: 'Agent', id: 'bot-4' }, { ...call, entities: [...entities, agent('bot-4', [])] }, false);
    expect(slotStats().sources.get(v1.preparsedId)).toBe(3);

    const created = slotStats().created;
    releaseSource(v1.preparsedId);
    expect(slotStats().sources.has(v1.preparsedId)).toBe(false);
    // The next version's slices go into the slots given back: no new ones are made.
    const v2 = compilePolicySet({ schema, policies }, 903);
    for (const id of ['bot-1', 'bot-2', 'bot-3']) preparsed(v2, v2.preparsedId, { type: 'Agent', id }, call, false);
    expect(slotStats().sources.get(v2.preparsedId)).toBe(3);
    expect(slotStats().created).toBe(created);
    // A decision still holding v1 (begun before the switch) prepares again and answers the same.
    const again = preparsed(v1, v1.preparsedId, { type: 'Agent', id: 'bot-1' }, call, false);
    expect(again).toEqual(preparsed(v2, v2.preparsedId, { type: 'Agent', id: 'bot-1' }, call, false));
    expect(again.allow).toBe(true);
  });
});
