import * as cedar from './cedar.ts';
import type { EntityUid } from '../registry/cedar-entities.ts';
import { entityKey } from './engine.ts';
import { jsonOf } from './call-inputs.ts';
import { preparedFor } from './preparsed-slots.ts';

// One Cedar call for the ceiling, agent and human layers of an agent decision (SPEC §3).
//
// Cedar decides for one principal per call, but the human layer asks about H while the other
// two ask about A. So each agent gets its own small policy set in which every policy keeps
// its layer in its id: the ceiling and ordinary policies that can apply to A, as written, and
// the ordinary policies that can apply to H, rewritten so that `principal` reads H from
// elsewhere (and its scope becomes a condition): from `principal.owner` when H is the agent's
// owner (the schema declares `owner: Human`), else from `context.__leash_human`. A derived
// schema declares that attribute on every action's context; strict validation against the
// operator's own schema means no policy can name it, and a set that uses `context` as a whole
// value (where the extra attribute would show) is not combined for delegated requests. On an allow, Cedar's diagnostics list every
// satisfied permit, which tells whether each layer allowed on its own. Slicing by principal
// keeps the set to the policies whose scope can match A or H, so the cost does not grow with
// the policies written for others.

export type Scope = cedar.PrincipalConstraint;
type Json = unknown;

/** A static policy or template as compiled: its Cedar JSON form and its layer annotation. */
export interface PolicyEntry {
  id: string;
  text: string;
  json: cedar.PolicyJson;
  layer: string | null;
}

/** The context attribute that carries a delegating human in combined calls. */
export const HUMAN_ATTR = '__leash_human';
/** Where the human-layer copies find H: the agent's owner, or the context attribute. */
export type HumanVia = 'owner' | 'context';
const humanVars: Record<HumanVia, Json> = {
  owner: { '.': { left: { Var: 'principal' }, attr: 'owner' } },
  context: { '.': { left: { Var: 'context' }, attr: HUMAN_ATTR } },
};

/** Replaces variables throughout an expression; literal values are left untouched. */
function substitute(node: Json, vars: Record<string, Json>): Json {
  if (Array.isArray(node)) return node.map((n) => substitute(n, vars));
  if (typeof node !== 'object' || node === null) return node;
  const obj = node as Record<string, Json>;
  const keys = Object.keys(obj);
  if (keys.length === 1 && keys[0] === 'Var' && typeof obj.Var === 'string') return vars[obj.Var] ?? node;
  const out: Record<string, Json> = {};
  for (const k of keys) out[k] = k === 'Value' ? obj[k] : substitute(obj[k], vars);
  return out;
}

const uidValue = (e: cedar.EntityUidJson): Json => ({ Value: { __entity: '__entity' in e ? e.__entity : e } });

/** A principal scope as a condition on `subject` (the same test Cedar makes on the scope). */
function scopeCondition(scope: Scope, subject: Json): Json | null {
  const entityOf = (c: { entity?: cedar.EntityUidJson; slot?: string }) => {
    if (!c.entity) throw new Error('a slot cannot become a condition');
    return uidValue(c.entity);
  };
  switch (scope.op) {
    case 'All':
      return null;
    case '==':
      return { '==': { left: subject, right: entityOf(scope as { entity?: cedar.EntityUidJson }) } };
    case 'in':
      return { in: { left: subject, right: entityOf(scope as { entity?: cedar.EntityUidJson }) } };
    case 'is': {
      const is = scope as { entity_type: string; in?: { entity?: cedar.EntityUidJson } };
      return { is: { left: subject, entity_type: is.entity_type, ...(is.in ? { in: entityOf(is.in) } : {}) } };
    }
  }
}

/** The human-layer copy of a policy: `principal` read from elsewhere, its scope a condition. */
export function asHuman(json: cedar.PolicyJson, via: HumanVia): cedar.PolicyJson {
  const humanVar = humanVars[via];
  const conditions = json.conditions.map((c) => ({ ...c, body: substitute(c.body, { principal: humanVar }) })) as cedar.Clause[];
  const scope = scopeCondition(json.principal, humanVar);
  return {
    ...json,
    principal: { op: 'All' },
    conditions: scope ? [{ kind: 'when', body: scope } as cedar.Clause, ...conditions] : conditions,
  };
}

/**
 * The form a policy (or template) is prepared from at run time: its JSON, which cedar-wasm
 * takes without parsing (an agent's own set prepared in about half the time: BENCHMARKS.md),
 * unless that form would change it (see `survivesJson`); then the text. Both give Cedar the
 * same policy.
 */
export function preparedForm(entry: Pick<PolicyEntry, 'text' | 'json'>): cedar.Policy {
  let form = forms.get(entry.json);
  if (form === undefined) forms.set(entry.json, (form = survivesJson(entry.json) ? entry.json : entry.text));
  return form;
}
const forms = new WeakMap<object, cedar.Policy>();

/**
 * Can the policy be rewritten through its JSON form without changing it? cedar-wasm hands
 * that form to JavaScript, where integer literals beyond 2^53 lose digits.
 */
export function survivesJson(json: cedar.PolicyJson): boolean {
  const ok = (node: Json): boolean => {
    if (typeof node === 'number') return Number.isSafeInteger(node);
    if (Array.isArray(node)) return node.every(ok);
    if (typeof node === 'object' && node !== null) return Object.values(node).every(ok);
    return true;
  };
  return ok(json);
}

/**
 * Does the policy read `context` only attribute by attribute (`context.x`, `context has x`),
 * never the added attribute, and never `context` as a whole value? Then it cannot tell a
 * combined call from a plain one.
 */
export function readsContextByAttribute(json: cedar.PolicyJson): boolean {
  const ok = (node: Json): boolean => {
    if (Array.isArray(node)) return node.every(ok);
    if (typeof node !== 'object' || node === null) return true;
    const obj = node as Record<string, Json>;
    for (const [k, v] of Object.entries(obj)) {
      if (k === 'Value') continue;
      if (k === 'Var' && v === 'context') return false; // reached only when not an attribute access
      if ((k === '.' || k === 'has') && typeof v === 'object' && v !== null) {
        const { left, attr } = v as { left?: Record<string, Json>; attr?: unknown };
        if (left && left.Var === 'context' && Object.keys(left).length === 1) {
          if (attr === HUMAN_ATTR) return false;
          continue;
        }
      }
      if (!ok(v)) return false;
    }
    return true;
  };
  return json.conditions.every((c) => ok(c.body));
}

const plainUid = (e: cedar.EntityUidJson) => ('__entity' in e ? e.__entity : e) as EntityUid;

/** Can this principal scope match `p`, whose ancestors (keys) are `ancestors`? Exact for static scopes. */
export function scopeCanMatch(scope: Scope, p: EntityUid, ancestors: Set<string>): boolean {
  const isOrIn = (e: cedar.EntityUidJson) => {
    const k = entityKey(plainUid(e));
    return k === entityKey(p) || ancestors.has(k);
  };
  switch (scope.op) {
    case 'All':
      return true;
    case '==': {
      const s = scope as { entity?: cedar.EntityUidJson };
      return s.entity ? entityKey(plainUid(s.entity)) === entityKey(p) : true;
    }
    case 'in': {
      const s = scope as { entity?: cedar.EntityUidJson };
      return s.entity ? isOrIn(s.entity) : true;
    }
    case 'is': {
      const s = scope as { entity_type: string; in?: { entity?: cedar.EntityUidJson } };
      return s.entity_type === p.type && (!s.in?.entity || isOrIn(s.in.entity));
    }
  }
}

/**
 * The schema used for combined calls: the operator's, with `__leash_human: Human` added to every
 * action's context. Null when that cannot be done plainly (namespaces, a context that is not a
 * record); then the layers are decided one call at a time.
 */
export function combinedSchema(schema: cedar.SchemaJson<string>): cedar.SchemaJson<string> | null {
  if (Object.keys(schema).some((n) => n !== '')) return null;
  const root = schema[''];
  if (!root?.entityTypes?.Human) return null;
  const common = (root.commonTypes ?? {}) as Record<string, unknown>;
  const actions: Record<string, unknown> = {};
  for (const [name, action] of Object.entries(root.actions ?? {})) {
    const applies = (action as { appliesTo?: { context?: Record<string, unknown> } }).appliesTo;
    if (!applies) {
      actions[name] = action;
      continue;
    }
    let context = applies.context ?? { type: 'Record', attributes: {} };
    const ref = context.type === 'EntityOrCommon' ? context.name : context.type;
    if (typeof ref === 'string' && ref !== 'Record' && common[ref]) context = common[ref] as Record<string, unknown>;
    if (context.type !== 'Record') return null;
    const attributes = (context.attributes ?? {}) as Record<string, unknown>;
    if (HUMAN_ATTR in attributes) return null;
    const extended = { ...context, attributes: { ...attributes, [HUMAN_ATTR]: { type: 'Entity', name: 'Human' } } };
    actions[name] = { ...action, appliesTo: { ...applies, context: extended } };
  }
  return { '': { ...root, actions } } as cedar.SchemaJson<string>;
}

/** Does the schema declare `Agent.owner` as a `Human`, so that `principal.owner` is the owner? */
export function ownerIsHuman(schema: cedar.SchemaJson<string>): boolean {
  if (Object.keys(schema).some((n) => n !== '')) return false;
  const agent = schema['']?.entityTypes?.Agent as { shape?: { attributes?: Record<string, { type?: string; name?: string }> } } | undefined;
  const owner = agent?.shape?.attributes?.owner;
  return !!owner && (owner.type === 'Entity' || owner.type === 'EntityOrCommon') && owner.name === 'Human' && !!schema['']?.entityTypes?.Human;
}

/** Every attribute name any of these policies reads (`x.attr`, `x has attr`), on anything. */
export function namedAttributes(entries: PolicyEntry[]): Set<string> {
  const names = new Set<string>(['owner']); // the owner variant's human copies read principal.owner
  const walk = (node: Json): void => {
    if (Array.isArray(node)) return node.forEach(walk);
    if (typeof node !== 'object' || node === null) return;
    for (const [k, v] of Object.entries(node as Record<string, Json>)) {
      if (k === 'Value') continue;
      if ((k === '.' || k === 'has') && typeof (v as { attr?: unknown })?.attr === 'string') names.add((v as { attr: string }).attr);
      walk(v);
    }
  };
  for (const e of entries) walk(e.json.conditions);
  return names;
}

/**
 * The schema with every top-level attribute of the registry's entity types optional, so that
 * registry entities can be handed to Cedar without the attributes no policy names (they
 * cannot change a decision; parsing them is most of a call's cost). Also returns the entity
 * types that were relaxed; a caller's own entity of such a type is decided the long way.
 */
export function slimSchema(schema: cedar.SchemaJson<string>, registryTypes: string[]): { schema: cedar.SchemaJson<string>; types: Set<string> } | null {
  if (Object.keys(schema).some((n) => n !== '')) return null;
  const root = schema[''];
  if (!root) return null;
  const types = new Set<string>();
  const entityTypes: Record<string, unknown> = {};
  for (const [name, type] of Object.entries(root.entityTypes ?? {})) {
    const shape = (type as { shape?: { type?: string; attributes?: Record<string, Record<string, unknown>> } }).shape;
    if (!registryTypes.includes(name) || shape?.type !== 'Record' || !shape.attributes) {
      entityTypes[name] = type;
      continue;
    }
    const attributes = Object.fromEntries(Object.entries(shape.attributes).map(([a, t]) => [a, { ...t, required: false }]));
    entityTypes[name] = { ...type, shape: { ...shape, attributes } };
    types.add(name);
  }
  return { schema: { '': { ...root, entityTypes } } as cedar.SchemaJson<string>, types };
}

/** The entity with only the attributes some policy names. */
export function slimEntity<E extends { uid: EntityUid; attrs: Record<string, unknown>; parents: EntityUid[] }>(e: E, named: Set<string>): E {
  const attrs: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(e.attrs)) if (named.has(k)) attrs[k] = v;
  return { ...e, attrs };
}

/** The caller's context with the human added; null if the caller already uses that name. */
export function withHuman(context: Record<string, unknown>, human: EntityUid): cedar.Context | null {
  if (HUMAN_ATTR in context) return null;
  return { ...context, [HUMAN_ATTR]: { type: human.type, id: human.id } } as cedar.Context;
}

export type CombinedLayer = 'ceiling' | 'agent' | 'human';

/** A per-agent set in cedar-wasm's preparsed store, and what each of its policy ids stands for. */
export interface CombinedSet {
  preparsedId: string;
  /** Unique to this set: slots (and so preparsed ids) are reused once a set is evicted. */
  generation: number;
  origin: Map<string, { layer: CombinedLayer; id: string; forbid: boolean }>;
}

export interface CombinedInput {
  agent: { uid: EntityUid; version: number; ancestors: Set<string> };
  human: { uid: EntityUid; ancestors: Set<string>; via: HumanVia };
  /** The agent's ceiling link and grant links, with the ids decisions name them by. */
  ceiling: { template: string; values: Record<string, unknown>; newId: string };
  grants: { template: string; values: Record<string, unknown>; newId: string }[];
}

/** What the combined sets are built from: compiled policies and templates with their layers. */
export interface CombinableSource {
  preparsedId: string;
  /** Attribute names the policies read, and the entity types whose other attributes may be left out. */
  namedAttributes: Set<string>;
  slimTypes: Set<string>;
  statics: PolicyEntry[];
  templateEntries: Record<string, PolicyEntry>;
  ceilingLayer: string;
}

/** The combined set for this agent and human under this policy version, built on first use. */
export function combinedSetFor(source: CombinableSource, input: CombinedInput): CombinedSet | null {
  const { agent, human } = input;
  // The grants are in the key, not only the agent's version: a what-if decides one agent
  // version with other grants (audit/replay.ts `withGrants`), and must never share its set.
  // As JSON: ancestors' types come from callers as they are, so no separator is safe.
  const key = JSON.stringify([
    'combined', entityKey(agent.uid), agent.version, [...agent.ancestors].sort(), entityKey(human.uid), human.via, [...human.ancestors].sort(),
    input.grants.map((g) => `${JSON.stringify(g.template)}${jsonOf(g.values)}`),
  ]);
  return preparedFor(source.preparsedId, key, () => {
    const origin: CombinedSet['origin'] = new Map();
    const staticPolicies: Record<string, cedar.Policy> = {};
    for (const p of source.statics) {
      const ceiling = p.layer === source.ceilingLayer;
      if (scopeCanMatch(p.json.principal, agent.uid, agent.ancestors)) {
        const id = `${ceiling ? 'c' : 'a'}:${p.id}`;
        staticPolicies[id] = preparedForm(p);
        origin.set(id, { layer: ceiling ? 'ceiling' : 'agent', id: p.id, forbid: p.json.effect === 'forbid' });
      }
      if (!ceiling && scopeCanMatch(p.json.principal, human.uid, human.ancestors)) {
        staticPolicies[`h:${p.id}`] = asHuman(p.json, human.via);
        origin.set(`h:${p.id}`, { layer: 'human', id: p.id, forbid: p.json.effect === 'forbid' });
      }
    }
    const templates: Record<string, cedar.Policy> = {};
    const templateLinks: cedar.TemplateLink[] = [];
    const link = (layer: 'ceiling' | 'agent', l: CombinedInput['ceiling']) => {
      const entry = source.templateEntries[l.template];
      if (!entry) return;
      const templateId = `${layer === 'ceiling' ? 'c' : 'a'}:${entry.id}`;
      templates[templateId] ??= preparedForm(entry);
      const newId = `${layer === 'ceiling' ? 'c' : 'a'}:${l.newId}`;
      templateLinks.push({ templateId, newId, values: l.values as Record<string, cedar.EntityUid> });
      origin.set(newId, { layer, id: l.newId, forbid: entry.json.effect === 'forbid' });
    };
    link('ceiling', input.ceiling);
    for (const g of input.grants) link('agent', g);
    return { policies: { staticPolicies, templates, templateLinks }, extra: { origin } };
  });
}

/**
 * One agent's ceiling layer as one preparsed set: the ceiling policies whose principal scope
 * can match the agent, and its linked ceiling template, under the ids decisions name them by.
 * One stateful call instead of a stateless one that parses the schema and template each time.
 */
export function ceilingSetFor(source: CombinableSource, agent: CombinedInput['agent'], ceiling: CombinedInput['ceiling']): string | null {
  const key = JSON.stringify(['ceiling', entityKey(agent.uid), agent.version, [...agent.ancestors].sort()]);
  return preparedFor(source.preparsedId, key, () => {
    const staticPolicies: Record<string, cedar.Policy> = {};
    for (const p of source.statics) {
      if (p.layer === source.ceilingLayer && scopeCanMatch(p.json.principal, agent.uid, agent.ancestors)) staticPolicies[p.id] = preparedForm(p);
    }
    const entry = source.templateEntries[ceiling.template]!;
    return {
      policies: { staticPolicies, templates: { [entry.id]: preparedForm(entry) }, templateLinks: [{ templateId: entry.id, newId: ceiling.newId, values: ceiling.values as Record<string, cedar.EntityUid> }] },
      extra: {},
    };
  })?.preparsedId ?? null;
}
