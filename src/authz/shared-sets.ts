import * as cedar from './cedar.ts';
import type { EntityUid } from '../registry/cedar-entities.ts';
import { asHuman, preparedForm, survivesJson, type CombinedInput, type CombinedLayer, type PolicyEntry } from './combined.ts';
import { jsonOf } from './call-inputs.ts';
import { entityKey } from './engine.ts';
import { answer, type LayerResult } from './layer-result.ts';
import type { CompiledPolicySet } from './policy-set.ts';
import { Lru, preparedFor } from './preparsed-slots.ts';
import { scopeHits } from './slices.ts';

// Sets shared by every agent that can match the same policies and links the same templates.
//
// An agent's ceiling and grants are links of templates: each differs from another link of
// the same template only in the values of its slots, and slots appear only in scopes. The
// principal slot is always the agent, the principal of every call about it. So a template
// can go into a shared set once, as a static policy with its slots taken out of its scopes;
// Cedar evaluates everything else of it (action, types, conditions) and Leash tests what
// remains of each link, `resource == ?resource` or `resource in ?resource`, on the entities
// the same call reads (the resource and its ancestors). A link is satisfied exactly when its
// template's shared policy is and its slot holds; it fails to evaluate exactly when the
// shared policy does and its slot holds (Cedar tests a scope before the conditions).
//
// So an agent asked about for the first time finds its sets prepared: the node holds a few
// shared sets, not two per agent (100,000 agents' own sets would take about 2.8 GB in
// cedar-wasm's memory, which never shrinks). Forbid templates stay in per-agent sets: a shared
// forbid that holds for another link would hide the permits Cedar reports for this one.

type Scope = { op: string; slot?: string; entity?: unknown; entity_type?: string; in?: { slot?: string; entity?: unknown } };

/** A scope without its slot: `?principal` or `?resource` becomes any, `is T in ?slot` becomes `is T`. */
function unslot<S>(scope: S): S {
  const s = scope as Scope;
  if (s.slot !== undefined) return { op: 'All' } as S;
  if (s.op === 'is' && s.in?.slot !== undefined) return { op: 'is', entity_type: s.entity_type } as S;
  return scope;
}

const unslottedForms = new WeakMap<PolicyEntry, cedar.PolicyJson>();

/** The template as the one static policy every link of it shares. */
export function unslotted(entry: PolicyEntry): cedar.PolicyJson {
  let json = unslottedForms.get(entry);
  if (!json) unslottedForms.set(entry, (json = { ...entry.json, principal: unslot(entry.json.principal), resource: unslot(entry.json.resource) }));
  return json;
}

const shareable = new WeakMap<PolicyEntry, boolean>();

/** Can this template's links share one policy? A permit whose JSON form is exact (see survivesJson). */
export function shareableTemplate(entry: PolicyEntry | undefined): entry is PolicyEntry {
  if (!entry) return false;
  let ok = shareable.get(entry);
  if (ok === undefined) shareable.set(entry, (ok = entry.json.effect === 'permit' && survivesJson(entry.json)));
  return ok;
}

const uidOf = (value: unknown): EntityUid | null => {
  const v = (value !== null && typeof value === 'object' && '__entity' in value ? (value as { __entity: unknown }).__entity : value) as Partial<EntityUid> | null;
  return v && typeof v.type === 'string' && typeof v.id === 'string' ? { type: v.type, id: v.id } : null;
};

/**
 * Does the link's resource slot hold for `resource`, whose ancestors (entity keys) are
 * `ancestors`, as Cedar reads its scope: `==` the value, `in` (and `is T in`) the value or an
 * entity below it. A template without a resource slot holds everywhere.
 */
export function resourceSlotHolds(entry: PolicyEntry, values: Record<string, unknown>, resource: EntityUid, ancestors: ReadonlySet<string>): boolean {
  const scope = entry.json.resource as Scope;
  const slot = scope.slot ?? scope.in?.slot;
  if (slot === undefined) return true;
  const value = uidOf(values[slot]);
  if (!value) return false; // checked when linked (template-links.ts); never holds rather than guess
  const key = entityKey(value);
  if (key === entityKey(resource)) return true;
  return scope.op !== '==' && ancestors.has(key);
}

/**
 * Cedar's answer with each shared template policy replaced by the ids of the links it stands
 * for whose slot holds (none: the policy did not apply), and other ids renamed by `ids`. An
 * allow left without a satisfied permit is a deny: every shared policy is a permit.
 */
export function renamed(raw: cedar.AuthorizationAnswer, ids: (cedarId: string) => string[]): cedar.AuthorizationAnswer {
  if (raw.type === 'failure') return raw;
  const { decision, diagnostics } = raw.response;
  const reason = diagnostics.reason.flatMap(ids);
  const errors = diagnostics.errors.flatMap((e) => ids(e.policyId).map((policyId) => ({ ...e, policyId })));
  return { ...raw, response: { decision: decision === 'allow' && reason.length === 0 ? 'deny' : decision, diagnostics: { reason, errors } } };
}

type Source = Pick<CompiledPolicySet, 'preparsedId' | 'ceilingPreparsedId' | 'layers' | 'templateEntries'>;

/** How many principals' set keys each policy version remembers. */
const SET_KEYS = 10_000;
const setKeys = new WeakMap<Source, Lru<string, string>>();
const ceilingKeys = new WeakMap<Source, Lru<string, string>>();
type Link = CombinedInput['ceiling'];

/** A combined set as one call uses it: what its ids stand for, and its answers as decisions read them. */
export interface CallSet {
  preparsedId: string;
  /** The layer, decision id and effect of an id in the renamed answer. */
  origin(id: string): { layer: CombinedLayer; id: string; forbid: boolean } | undefined;
  /** Everything besides Cedar's inputs that the renamed answer depends on, for remembering it. */
  memoKey: string;
  rename(raw: cedar.AuthorizationAnswer): cedar.AuthorizationAnswer;
}

/**
 * The combined set for this agent and human (combined.ts), shared: the policies whose scope
 * can match the agent or the human, and the agent's templates without their slots. Null when
 * a template cannot be shared (then the agent gets a set of its own) or Cedar refuses the set.
 * `resource` and its `ancestors` are the call's: its links are tested against them.
 */
export function sharedCombinedSetFor(source: Source, input: CombinedInput, resource: EntityUid, ancestors: ReadonlySet<string>): CallSet | null {
  const { agent, human, ceiling, grants } = input;
  const ceilingEntry = source.templateEntries[ceiling.template];
  const grantEntries = grants.map((g) => source.templateEntries[g.template]);
  if (!shareableTemplate(ceilingEntry) || !grantEntries.every(shareableTemplate)) return null;
  const ordinary = source.layers.get(source.preparsedId)!;
  const ceilings = source.layers.get(source.ceilingPreparsedId)!;
  const templates = [...new Set(grants.map((g) => g.template))].sort();
  // Which set is found from the scopes that can match (below); which scopes can match, from
  // the principals and their ancestors, remembered by those.
  // (Each part as JSON: entity types a caller sends are read raw, so no separator is safe.)
  const principals = JSON.stringify([entityKey(agent.uid), [...agent.ancestors], entityKey(human.uid), human.via, [...human.ancestors], ceiling.template, templates]);
  let keys = setKeys.get(source);
  if (!keys) setKeys.set(source, (keys = new Lru(SET_KEYS)));
  let key = keys.get(principals);
  if (key === undefined) {
    key = JSON.stringify(['shared', scopeHits(ordinary, agent.uid, agent.ancestors), scopeHits(ceilings, agent.uid, agent.ancestors), human.via, scopeHits(ordinary, human.uid, human.ancestors), ceiling.template, templates]);
    keys.set(principals, key);
  }
  const setKey = key;
  const set = preparedFor(source.preparsedId, key, () => {
    const [, agentHits, ceilingHits, , humanHits] = JSON.parse(setKey) as [string, string[], string[], string, string[]];
    const origin = new Map<string, { layer: CombinedLayer; id: string; forbid: boolean }>();
    const staticPolicies: Record<string, cedar.Policy> = {};
    const add = (id: string, layer: CombinedLayer, p: PolicyEntry, form: cedar.Policy) => {
      staticPolicies[id] = form;
      origin.set(id, { layer, id: p.id, forbid: p.json.effect === 'forbid' });
    };
    for (const b of ceilingHits) for (const p of ceilings.get(b)!) add(`c:${p.id}`, 'ceiling', p, preparedForm(p));
    for (const b of agentHits) for (const p of ordinary.get(b)!) add(`a:${p.id}`, 'agent', p, preparedForm(p));
    for (const b of humanHits) for (const p of ordinary.get(b)!) add(`h:${p.id}`, 'human', p, asHuman(p.json, human.via));
    // Shared template policies are named apart (`tc:`, `ta:`): the answer never reports them as such.
    staticPolicies[`tc:${ceilingEntry.id}`] = unslotted(ceilingEntry);
    for (const t of templates) staticPolicies[`ta:${t}`] = unslotted(source.templateEntries[t]!);
    return { policies: { staticPolicies }, extra: { origin } };
  });
  if (!set) return null;

  const links = new Map<string, { layer: CombinedLayer; id: string; forbid: boolean }>();
  const standsFor = new Map<string, string[]>();
  const holding = (cedarId: string, as: string, layer: CombinedLayer, entry: PolicyEntry, link: Link) => {
    let ids = standsFor.get(cedarId);
    if (!ids) standsFor.set(cedarId, (ids = []));
    if (!resourceSlotHolds(entry, link.values, resource, ancestors)) return;
    ids.push(as);
    links.set(as, { layer, id: link.newId, forbid: false });
  };
  // The links by ids of their own (`lc:`, `la:`), apart from every policy's in the set.
  holding(`tc:${ceilingEntry.id}`, `lc:${ceiling.newId}`, 'ceiling', ceilingEntry, ceiling);
  grants.forEach((g, i) => holding(`ta:${g.template}`, `la:${g.newId}`, 'agent', grantEntries[i]!, g));
  return {
    preparsedId: set.preparsedId,
    origin: (id) => set.origin.get(id) ?? links.get(id),
    memoKey: `${set.generation}\n${JSON.stringify(entityKey(agent.uid))}\n${[ceiling, ...grants].map((l) => `${JSON.stringify([l.template, l.newId])}${jsonOf(l.values)}`).join('\n')}`,
    rename: (raw) => renamed(raw, (id) => standsFor.get(id) ?? [id]),
  };
}

/**
 * The agent's ceiling layer from a shared set: the ceiling policies whose scope can match it
 * and its ceiling template without slots, its link tested on each call's resource. Null when
 * the template cannot be shared or Cedar refuses the set.
 */
export function sharedCeilingFor(
  source: Source & Pick<CompiledPolicySet, 'forbidIds'>, agent: EntityUid, agentAncestors: ReadonlySet<string>, link: Link,
): ((call: { action: EntityUid; resource: EntityUid; context: Record<string, unknown>; entities: unknown[] }, validate: boolean, resourceAncestors: ReadonlySet<string>, schemaName: string) => LayerResult) | null {
  const entry = source.templateEntries[link.template];
  if (!shareableTemplate(entry)) return null;
  const ceilings = source.layers.get(source.ceilingPreparsedId)!;
  const templateId = `t:${entry.id}`;
  const principal = JSON.stringify([entityKey(agent), [...agentAncestors], entry.id]);
  let keys = ceilingKeys.get(source);
  if (!keys) ceilingKeys.set(source, (keys = new Lru(SET_KEYS)));
  let key = keys.get(principal);
  if (key === undefined) keys.set(principal, (key = JSON.stringify(['shared-ceiling', scopeHits(ceilings, agent, agentAncestors), entry.id])));
  const setKey = key;
  const prepared = () => preparedFor(source.preparsedId, setKey, () => {
    const hits = (JSON.parse(setKey) as [string, string[]])[1];
    const staticPolicies: Record<string, cedar.Policy> = { [templateId]: unslotted(entry) };
    for (const b of hits) for (const p of ceilings.get(b)!) staticPolicies[`c:${p.id}`] = preparedForm(p);
    return { policies: { staticPolicies }, extra: {} };
  });
  if (!prepared()) return null;
  return (call, validate, resourceAncestors, schemaName) => {
    // Looked up right before the call: the slot may have been given to another set since.
    const set = prepared();
    if (!set) return { allow: false, reasons: [], errors: ['the policy set cannot be prepared'], failed: [], errored: true };
    const raw = cedar.statefulIsAuthorized({
      principal: agent, action: call.action, resource: call.resource, context: call.context as cedar.Context, entities: call.entities as cedar.Entities,
      preparsedPolicySetId: set.preparsedId, preparsedSchemaName: schemaName, validateRequest: validate,
    });
    const holds = resourceSlotHolds(entry, link.values, call.resource, resourceAncestors);
    const ids = (id: string) => (id === templateId ? (holds ? [link.newId] : []) : [id.slice('c:'.length)]);
    return answer(renamed(raw, ids), (id) => source.forbidIds.has(id));
  };
}
