import * as cedar from './cedar.ts';
import { LeashError } from '../errors.ts';
import { carried, unescapeValue } from '../exact-json.ts';
import { preparsed } from './layer-calls.ts';
import type { CedarEntity, EntityUid } from '../registry/cedar-entities.ts';
import type { RegistryState } from '../registry/registry-view.ts';
import type { CompiledPolicySet } from './policy-set.ts';
import { APPROVAL_ID, type ApprovalAsk } from '../approvals/gate.ts';

// Decisions for one AuthZEN request about a plain (non-agent) subject: the ordinary policies,
// once (SPEC §3, last paragraph). Agents go through agent-decision.ts.

export interface AuthzenEntity {
  type: string;
  id: string;
  properties?: Record<string, unknown>;
}

export interface EvaluationRequest {
  subject: AuthzenEntity;
  action: { name: string; properties?: Record<string, unknown> };
  resource: AuthzenEntity;
  context?: Record<string, unknown>;
}

export type Layer = 'subject' | 'token' | 'details' | 'ceiling' | 'agent' | 'human' | 'all' | 'policy-set';

export interface Decision {
  decision: boolean;
  layer: Layer;
  /** Ids of the policies that decided (every satisfied permit on an allow, forbids on a deny). */
  reasons: string[];
  /** Policies that failed to evaluate: a permit counts as not applying, a forbid denies (code POLICY_EVALUATION_ERROR). */
  errors: string[];
  /** Why a token or details check refused (e.g. TOKEN_EXPIRED, DETAILS_BEYOND_CEILING). */
  code?: string;
  /** The verified token's claims, for the decision log (never the token itself). */
  claims?: Record<string, unknown>;
  /** A token refused for what its claims hold: the claims, escaped (exact-json.ts), for the log only. */
  refusedClaims?: Record<string, unknown>;
  policyVersion: number;
  position: number;
  /** A decision the approval gate took (approvals/gate.ts): the approval to record, or to spend. */
  approval?: ApprovalAsk;
  /** For a quarantined agent: what would have been decided. Recorded, never told to the caller. */
  shadow?: { decision: boolean; layer: Layer; reasons: string[]; code?: string };
}

const builtinTypes: Record<string, string> = { agent: 'Agent', human: 'Human', group: 'Group' };
const ENTITY_TYPE = /^[A-Za-z_][A-Za-z0-9_]*(::[A-Za-z_][A-Za-z0-9_]*)*$/;

const QUALIFIED_ACTION = /^((?:[A-Za-z_][A-Za-z0-9_]*::)+)?Action::("(?:[^"\\]|\\.)*")$/;

/**
 * The Cedar action an AuthZEN action name stands for: `read` is `Action::"read"`; a name that
 * is itself a Cedar action uid (`Shop::Action::"buy"`, as a namespaced schema declares its
 * actions) is that action. A plain name that happens to look like one is read as one.
 */
export function actionUid(name: string): EntityUid {
  // A name holding NUL arrives escaped (exact-json.ts): read as sent, its id escaped again.
  const sent = unescapeValue(name);
  const m = typeof sent === 'string' ? QUALIFIED_ACTION.exec(sent) : null;
  if (m) {
    try {
      const id = JSON.parse(m[2]!) as string;
      return { type: `${m[1] ?? ''}Action`, id: carried(id) };
    } catch {
      // not a JSON-style string literal: the name as it is
    }
  }
  return { type: 'Action', id: name };
}

export function cedarType(authzenType: string, aliases: Record<string, string> = {}): string {
  const type = aliases[authzenType] ?? builtinTypes[authzenType] ?? authzenType;
  if (!ENTITY_TYPE.test(type)) throw new LeashError('VALIDATION_FAILED', `type ${JSON.stringify(authzenType)} is not a valid Cedar entity type`);
  return type;
}

/** The registry record as a Cedar entity, for the types the registry owns. */
export function registryEntity(view: RegistryState, uid: EntityUid): CedarEntity | undefined {
  switch (uid.type) {
    case 'Agent':
      return view.agents.get(uid.id)?.entity;
    case 'Human':
      return view.humans.get(uid.id)?.entity;
    case 'Group':
      return view.groups.get(uid.id)?.entity;
    default:
      return undefined;
  }
}

const key = (uid: EntityUid) => `${uid.type}::${JSON.stringify(uid.id)}`;

/**
 * Only the entities this request can reach: each named entity (from the registry when it
 * holds it, else from its AuthZEN `properties`), their group ancestors, and `context.entities`.
 */
export function entitiesFor(view: RegistryState, named: { uid: EntityUid; given?: AuthzenEntity }[], extra: unknown): Map<string, CedarEntity> {
  const out = new Map<string, CedarEntity>();
  const registered = new Set<string>();
  const addWithAncestors = (entity: CedarEntity) => {
    const pending = [entity];
    while (pending.length > 0) {
      const e = pending.pop()!;
      if (out.has(key(e.uid))) continue;
      out.set(key(e.uid), e);
      for (const parent of e.parents) {
        const p = registryEntity(view, parent);
        if (p) {
          registered.add(key(parent));
          pending.push(p);
        }
      }
    }
  };
  for (const { uid, given } of named) {
    const fromRegistry = registryEntity(view, uid);
    if (fromRegistry) {
      registered.add(key(uid));
      addWithAncestors(fromRegistry);
    } else if (given?.properties && !out.has(key(uid))) {
      out.set(key(uid), { uid, attrs: given.properties, parents: [] });
    }
  }
  if (extra !== undefined) {
    if (!Array.isArray(extra)) throw new LeashError('VALIDATION_FAILED', 'context.entities must be an array of Cedar entities');
    for (const e of extra as CedarEntity[]) {
      const uid = e?.uid;
      if (!uid || typeof uid.type !== 'string' || typeof uid.id !== 'string') throw new LeashError('VALIDATION_FAILED', 'each context.entities item needs uid.type and uid.id');
      if (!ENTITY_TYPE.test(uid.type)) throw new LeashError('VALIDATION_FAILED', 'a context.entities item has a uid.type that is not a Cedar entity type');
      // A caller may describe other entities, never rewrite what the registry says.
      if (registered.has(key(uid)) || registryEntity(view, uid)) {
        throw new LeashError('VALIDATION_FAILED', `context.entities cannot redefine the registered entity ${uid.type}::"${uid.id}"`);
      }
      if (out.has(key(uid))) throw new LeashError('VALIDATION_FAILED', `context.entities repeats ${uid.type}::"${uid.id}"`);
      const tags = e.tags !== undefined ? { tags: e.tags } : {};
      const parents = Array.isArray(e.parents) ? e.parents : [];
      if (parents.some((p) => typeof p !== 'object' || p === null || typeof p.type !== 'string' || typeof p.id !== 'string' || !ENTITY_TYPE.test(p.type))) {
        throw new LeashError('VALIDATION_FAILED', `each parent of ${uid.type}::"${uid.id}" in context.entities needs a Cedar entity type and a string id`);
      }
      out.set(key(uid), { uid, attrs: e.attrs ?? {}, parents, ...tags });
    }
  }
  hierarchies.set(out, checkHierarchy(out));
  return out;
}

const hierarchies = new WeakMap<Map<string, CedarEntity>, number>();

/**
 * What the entities a caller lists in `context.entities` cost each Cedar call that reads them
 * (their count and ancestor links among themselves), for bounding a batch before it is decided.
 * Malformed lists cost nothing here: each decision refuses them.
 */
export function contextEntitiesCost(extra: unknown): number {
  if (!Array.isArray(extra)) return 0;
  const map = new Map<string, CedarEntity>();
  for (const e of extra as CedarEntity[]) {
    if (typeof e?.uid?.type === 'string' && typeof e.uid.id === 'string') map.set(key(e.uid), { uid: e.uid, attrs: {}, parents: Array.isArray(e.parents) ? e.parents : [] });
  }
  try {
    return map.size + checkHierarchy(map);
  } catch {
    return map.size + MAX_HIERARCHY_LINKS; // each decision refuses it; the batch pays for the check only
  }
}

/** What Cedar reads of these entities on every call, roughly: the entities and their ancestor links. */
export function hierarchySize(entities: Map<string, CedarEntity>): number {
  return entities.size + (hierarchies.get(entities) ?? 0);
}

/**
 * Most ancestor links a request's entities may add up to (each entity's ancestors, counted
 * per entity). Cedar works out that closure on every call, and a long chain of parents in
 * `context.entities` costs it the square of its length: 760 levels in a 64 KB body took a
 * second a call. A real hierarchy (a document, its folders, a user's groups) is far below.
 */
export const MAX_HIERARCHY_LINKS = 1_000;

function checkHierarchy(entities: Map<string, CedarEntity>): number {
  let links = 0;
  for (const e of entities.values()) {
    const seen = new Set<string>();
    const pending = [...e.parents];
    while (pending.length > 0) {
      const k = key(pending.pop()!);
      if (seen.has(k)) continue;
      seen.add(k);
      if (++links > MAX_HIERARCHY_LINKS) {
        throw new LeashError('VALIDATION_FAILED', `the request's entities have more than ${MAX_HIERARCHY_LINKS} ancestor links in all (context.entities nests too deep)`);
      }
      pending.push(...(entities.get(k)?.parents ?? []));
    }
  }
  return links;
}

export const entityKey = key;

export const sameUid = (a: EntityUid, b: EntityUid): boolean => a.type === b.type && a.id === b.id;

/**
 * Every entity uid a JSON value may refer to: `{"__entity": uid}`, or any object with a string
 * `type` and `id` (the implicit form a schema allows). Conservative: a record that merely looks
 * like a uid counts too, which can only keep an entity that is not needed.
 */
export function referencedUids(value: unknown, out: EntityUid[] = []): EntityUid[] {
  if (Array.isArray(value)) {
    for (const v of value) referencedUids(v, out);
  } else if (value !== null && typeof value === 'object') {
    const o = value as Record<string, unknown>;
    if (typeof o.type === 'string' && typeof o.id === 'string') out.push({ type: o.type, id: o.id });
    for (const v of Object.values(o)) referencedUids(v, out);
  }
  return out;
}

/**
 * The entities an evaluation can touch, in the order given: from the roots (principal,
 * resource), the context's values and the entities the policies name literally (`literals`,
 * as keys), through parents and through every reference in the attributes of what is reached.
 * Cedar cannot reach an entity by any other way, so evaluating against these is evaluating
 * against all of them. The cost follows the request's entities, not the policies' literals.
 */
export function reachableEntities(entities: Map<string, CedarEntity>, roots: EntityUid[], context: unknown, literals: ReadonlySet<string>): CedarEntity[] {
  const seen = new Set<string>();
  const pending = [...roots, ...referencedUids(context)];
  for (const [k, e] of entities) if (literals.has(k)) pending.push(e.uid);
  while (pending.length > 0) {
    const k = key(pending.pop()!);
    if (seen.has(k)) continue;
    seen.add(k);
    const e = entities.get(k);
    if (!e) continue;
    pending.push(...e.parents);
    referencedUids(e.attrs, pending);
  }
  return [...entities.values()].filter((e) => seen.has(key(e.uid)));
}

/** A plain (non-agent) subject: evaluated once against the ordinary policies. */
export function evaluate(request: EvaluationRequest, policies: CompiledPolicySet | null, view: RegistryState): Decision {
  const base = { errors: [] as string[], policyVersion: policies?.version ?? 0, position: view.position };
  const aliases = policies?.source.aliases ?? {};
  const principal = { type: cedarType(request.subject.type, aliases), id: request.subject.id };
  const resource = { type: cedarType(request.resource.type, aliases), id: request.resource.id };
  if (!policies) return { ...base, decision: false, layer: 'policy-set', reasons: [] };

  const { entities: _entities, [APPROVAL_ID]: _approvalId, ...context } = request.context ?? {};
  const entities = [...entitiesFor(view, [{ uid: principal, given: request.subject }, { uid: resource, given: request.resource }], request.context?.entities).values()];
  const result = preparsed(policies, policies.preparsedId, principal, { action: actionUid(request.action.name), resource, context: context as Record<string, unknown>, entities }, true);
  // Approvals are for agents' requests: a plain subject that only an `@approval` permit would
  // allow is denied, never allowed without the approval.
  if (result.allow && result.reasons.every((id) => policies.approvals.has(id))) {
    return { ...base, decision: false, layer: 'subject', reasons: result.reasons, errors: result.errors, code: 'APPROVAL_REQUIRED' };
  }
  return {
    ...base,
    decision: result.allow,
    layer: 'subject',
    reasons: result.reasons,
    errors: result.errors,
    ...(result.errored ? { code: 'POLICY_EVALUATION_ERROR' } : {}),
  };
}
