import * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import { LeashError } from '../errors.ts';
import type { CedarEntity, EntityUid } from '../registry/cedar-entities.ts';
import type { RegistryView } from '../registry/registry-view.ts';
import type { CompiledPolicySet } from './policy-set.ts';

// Decisions for one AuthZEN request. This slice decides plain (non-agent) subjects against
// the ordinary policies (SPEC §3, last paragraph); agent subjects are denied until the token,
// details, ceiling and agent layers exist, so nothing is ever allowed for an agent yet.

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

export type Layer = 'subject' | 'token' | 'policy-set';

export interface Decision {
  decision: boolean;
  layer: Layer;
  /** Ids of the policies that decided (every satisfied permit on an allow, forbids on a deny). */
  reasons: string[];
  /** Policies that failed to evaluate (they count as not applying). */
  errors: string[];
  policyVersion: number;
  position: number;
}

const builtinTypes: Record<string, string> = { agent: 'Agent', human: 'Human', group: 'Group' };
const ENTITY_TYPE = /^[A-Za-z_][A-Za-z0-9_]*(::[A-Za-z_][A-Za-z0-9_]*)*$/;

export function cedarType(authzenType: string, aliases: Record<string, string> = {}): string {
  const type = aliases[authzenType] ?? builtinTypes[authzenType] ?? authzenType;
  if (!ENTITY_TYPE.test(type)) throw new LeashError('VALIDATION_FAILED', `type ${JSON.stringify(authzenType)} is not a valid Cedar entity type`);
  return type;
}

/** The registry record as a Cedar entity, for the types the registry owns. */
function registryEntity(view: RegistryView, uid: EntityUid): CedarEntity | undefined {
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
 * Only the entities this request can reach: the principal and resource (from the registry
 * when it holds them, else from `properties`), their group ancestors, and `context.entities`.
 */
function entitiesFor(view: RegistryView, request: EvaluationRequest, principal: EntityUid, resource: EntityUid): CedarEntity[] {
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
  for (const [uid, given] of [[principal, request.subject], [resource, request.resource]] as const) {
    const fromRegistry = registryEntity(view, uid);
    if (fromRegistry) {
      registered.add(key(uid));
      addWithAncestors(fromRegistry);
    } else if (given.properties && !out.has(key(uid))) {
      out.set(key(uid), { uid, attrs: given.properties, parents: [] });
    }
  }
  const extra = request.context?.entities;
  if (extra !== undefined) {
    if (!Array.isArray(extra)) throw new LeashError('VALIDATION_FAILED', 'context.entities must be an array of Cedar entities');
    for (const e of extra as CedarEntity[]) {
      const uid = e?.uid;
      if (!uid || typeof uid.type !== 'string' || typeof uid.id !== 'string') throw new LeashError('VALIDATION_FAILED', 'each context.entities item needs uid.type and uid.id');
      // A caller may describe other entities, never rewrite what the registry says.
      if (registered.has(key(uid)) || registryEntity(view, uid)) {
        throw new LeashError('VALIDATION_FAILED', `context.entities cannot redefine the registered entity ${uid.type}::"${uid.id}"`);
      }
      if (out.has(key(uid))) throw new LeashError('VALIDATION_FAILED', `context.entities repeats ${uid.type}::"${uid.id}"`);
      out.set(key(uid), { uid, attrs: e.attrs ?? {}, parents: e.parents ?? [] });
    }
  }
  return [...out.values()];
}

export function evaluate(request: EvaluationRequest, policies: CompiledPolicySet | null, view: RegistryView): Decision {
  const base = { errors: [] as string[], policyVersion: policies?.version ?? 0, position: view.position };
  const aliases = policies?.source.aliases ?? {};
  const principal = { type: cedarType(request.subject.type, aliases), id: request.subject.id };
  const resource = { type: cedarType(request.resource.type, aliases), id: request.resource.id };
  if (principal.type === 'Agent') return { ...base, decision: false, layer: 'token', reasons: [] };
  if (!policies) return { ...base, decision: false, layer: 'policy-set', reasons: [] };

  const { entities: _entities, ...context } = request.context ?? {};
  const answer = cedar.statefulIsAuthorized({
    principal,
    action: { type: 'Action', id: request.action.name },
    resource,
    context: context as cedar.Context,
    entities: entitiesFor(view, request, principal, resource) as cedar.Entities,
    preparsedPolicySetId: policies.preparsedId,
    preparsedSchemaName: policies.schemaName,
    validateRequest: false,
  });
  if (answer.type === 'failure') {
    throw new LeashError('VALIDATION_FAILED', `the request does not fit the schema: ${answer.errors.map((e) => e.message).join('; ')}`);
  }
  const { decision, diagnostics } = answer.response;
  return {
    ...base,
    decision: decision === 'allow',
    layer: 'subject',
    reasons: diagnostics.reason,
    errors: diagnostics.errors.map((e) => `${e.policyId}: ${e.error.message}`),
  };
}
