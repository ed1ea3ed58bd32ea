import type { EvaluationRequest } from '../authz/engine.ts';

// What a decision says an agent used, as the baselines learn it: the action, the resource as
// `Type::"id"` and the resource's parents as the request's entities give them. Bounded: names
// are cut at 256 characters, at most 8 parents are read.

/** Longest name (`Type::"id"`) kept in a baseline or a finding. */
export const MAX_NAME = 256;
/** Parents of the resource looked at (in the request's entities). */
const MAX_PARENTS = 8;

/** Decided on what the agent asked for: not refused before its token was trusted, nor for want of policies. */
export const countsAsOwn = (d: { layer: string; code?: string | null }): boolean =>
  d.layer !== 'subject' && d.layer !== 'token' && d.layer !== 'policy-set' && d.code !== 'POLICY_EVALUATION_ERROR';

type Ref = { type?: unknown; id?: unknown } | null | undefined;

export const uid = (e: Ref): string | null => {
  const { type, id } = e ?? {};
  return typeof type === 'string' && typeof id === 'string' ? `${type}::${JSON.stringify(id)}`.slice(0, MAX_NAME) : null;
};

/** The resource (`Type::"id"`), then its parents as the request's entities give them. */
export function namesUsed(request: EvaluationRequest): string[] {
  const { type, id } = request.resource;
  const names = [uid(request.resource)!];
  const entities = (request.context as { entities?: unknown } | undefined)?.entities;
  if (!Array.isArray(entities)) return names;
  // Compared field by field: no name is built for the entities that are not the resource.
  const own = entities.find((e) => (e as { uid?: Ref } | null)?.uid?.type === type && (e as { uid: Ref }).uid?.id === id) as { parents?: unknown } | undefined;
  if (!Array.isArray(own?.parents)) return names;
  for (const parent of own.parents.slice(0, MAX_PARENTS)) {
    const name = uid(parent as Ref);
    if (name !== null) names.push(name);
  }
  return names;
}
