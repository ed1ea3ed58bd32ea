import { LeashError } from '../errors.ts';
import type { AgentRecord } from '../registry/agent.ts';
import type { CedarEntity, EntityUid } from '../registry/cedar-entities.ts';
import { jsonOf, literalsOf, slimRegistryEntities } from './call-inputs.ts';
import type { RegistryState } from '../registry/registry-view.ts';
import { ceilingSetFor } from './combined.ts';
import type { DecisionCaches } from './decision-caches.ts';
import { ancestorsOf, type CedarDetail } from './details.ts';
import { actionUid, entityKey, hierarchySize, reachableEntities, referencedUids } from './engine.ts';
import { ancestorsIn, linked, preparsed, union, type Call, type Link } from './layer-calls.ts';
import { sharedCeilingFor } from './shared-sets.ts';
import type { LayerResult } from './layer-result.ts';
import { CEILING, type CompiledPolicySet } from './policy-set.ts';
import { bindPrincipal, linkFits } from './template-links.ts';

// An agent's ceiling (SPEC §3 layer 3): the `@layer("ceiling")` policies plus the agent's
// linked ceiling template, and the check that every entry of a token's details lies within
// it. A decision asks both; the token endpoint asks the second before it issues a token.

export interface AgentCeiling {
  /** The agent's ceiling link, `?principal` bound to the agent. */
  link: Link['link'];
  id: string;
  /** The agent's ancestors in the entities the calls read. */
  ancestors: Set<string>;
  /**
   * The ceiling decided for a call, principal = the agent; `schemaName`: another prepared
   * schema of the same policy set (the slim one, for slimmed registry entities).
   */
  ask(call: Call, validate: boolean, schemaName?: string): LayerResult;
  /** Can `ask` take another schema (false on the reference path, which reads the schema itself)? */
  slims: boolean;
}

export type CeilingRefusal = 'NO_CEILING' | 'CEILING_TEMPLATE_MISSING' | 'CEILING_LINK_INVALID';

/**
 * The agent's ceiling, ready to ask; or why it has none that can be used. `combined: false`:
 * the reference path (the shared ceiling policies and a stateless link, decided as one).
 */
export function ceilingOf(
  policies: CompiledPolicySet, agent: AgentRecord, agentVersion: number, entities: Map<string, CedarEntity>, combined = true,
): { ok: true; ceiling: AgentCeiling } | { ok: false; code: CeilingRefusal } {
  if (!agent.ceiling) return { ok: false, code: 'NO_CEILING' };
  if (policies.templates[agent.ceiling.template]?.layer !== CEILING) return { ok: false, code: 'CEILING_TEMPLATE_MISSING' };
  // Checked when it was linked; a later policy set may have changed the template's slots.
  if (!linkFits(policies, agent.ceiling, 'ceiling')) return { ok: false, code: 'CEILING_LINK_INVALID' };
  const A: EntityUid = { type: 'Agent', id: agent.id };
  const link = bindPrincipal(policies, agent.ceiling, A);
  const id = `ceiling:${agent.id}`;
  const ancestors = ancestorsOf(entities, A);
  // The agent's ceiling policies and link from a set shared with the agents alike (shared-sets.ts),
  // else as a set of its own; the reference path (and a set that cannot be prepared) takes the
  // union of the ceiling policies and a stateless link.
  const shared = combined ? sharedCeilingFor(policies, A, ancestors, { ...link, newId: id }) : null;
  const set = combined && !shared ? ceilingSetFor(policies, { uid: A, version: agentVersion, ancestors }, { ...link, newId: id }) : null;
  const links = [{ link, newId: id }];
  const ask = (c: Call, validate: boolean, schemaName = policies.schemaName) =>
    shared ? shared(c, validate, ancestorsIn(c.entities, c.resource), schemaName)
    : set ? preparsed(policies, set, A, c, validate, links, undefined, schemaName)
    : union(preparsed(policies, policies.ceilingPreparsedId, A, c, validate), linked(policies, links, A, c, validate));
  return { ok: true, ceiling: { link, id, ancestors, ask, slims: combined } };
}

/**
 * The beyond-ceiling check makes one Cedar call per (target, action) pair of the token, each
 * parsing the request's entities: pairs × (entities + ancestor links) is bounded by this.
 * Measured: a 62-level chain of folders with 64 pairs held the event loop for 0.5 s.
 */
const MAX_CEILING_CHECK_WORK = 10_000;

export type WithinCeiling =
  | { ok: true }
  | { ok: false; code: 'DETAILS_MALFORMED' | 'DETAILS_BEYOND_CEILING' | 'POLICY_EVALUATION_ERROR'; reasons: string[]; errors: string[] };

export interface WithinCeilingInput {
  policies: CompiledPolicySet;
  agent: AgentRecord;
  agentVersion: number;
  ceiling: AgentCeiling;
  details: { details: CedarDetail[]; pairs: { target: EntityUid; action: string }[] };
  /** The entities the check may read (the registry's, and a decision request's own). */
  entities: Map<string, CedarEntity>;
  /** The registry they came from: given, its entities go to Cedar with only the attributes policies name. */
  view?: RegistryState;
  context: Record<string, unknown>;
  caches?: DecisionCaches | undefined;
  /** The verified token's claims (the object its cache holds), under which the verdicts are kept too. */
  token?: object;
  /**
   * A decision's own request: when Cedar refuses a pair's question, the request is asked too,
   * so a request that does not fit the schema is the caller's 400, not the token's fault.
   */
  request?: Call;
}

/**
 * Does every (target, action) pair of the details lie within the ceiling? Each pair is asked
 * with its target as the resource; one that is not allowed refuses the whole set (never
 * narrowed). An action or target type the schema does not know is DETAILS_MALFORMED.
 */
export function withinCeiling(input: WithinCeilingInput): WithinCeiling {
  const { policies, agent, agentVersion, ceiling, details, entities, context, caches } = input;
  const A: EntityUid = { type: 'Agent', id: agent.id };
  // One Cedar call per pair, each reading the entities: bounded together, not only each.
  if (details.pairs.length * hierarchySize(entities) > MAX_CEILING_CHECK_WORK) {
    return { ok: false, code: 'DETAILS_MALFORMED', reasons: [], errors: [`the token names ${details.pairs.length} (target, action) pairs, too many to check against entities this large`] };
  }
  // What the check can reach: the agent, the details' targets, and what they lead to. (The
  // requested resource is not among them, so the verdict holds for every resource the token
  // is used on.) The ceiling link's values are literals of the agent's own ceiling.
  const targets = details.details.map((d) => d.resource ?? d.resourceIn!);
  const reachable = reachableEntities(entities, [A, ...targets, ...referencedUids(ceiling.link.values)], context, literalsOf(policies));
  // Registry entities slimmed to what the policies name, as the combined call has them: most of
  // what a call costs Cedar is reading its entities. (Not when the caller described an entity
  // of a registry type itself: the slim schema would not hold it to its required attributes.)
  const slim = ceiling.slims && input.view && policies.slimSchemaName ? slimRegistryEntities(input.view, policies, reachable) : null;
  const checkEntities = slim ?? reachable;
  const schemaName = slim ? policies.slimSchemaName! : policies.schemaName;
  // Each distinct (target, action) pair once (the parser bounds how many), remembered per pair
  // under the exact inputs the check reads (long ones by their sha-256: see decision-caches.ts).
  const checkKey = caches && `${policies.preparsedId}\n${JSON.stringify(agent.id)}\n${agentVersion}\n${JSON.stringify(context)}\n${checkEntities.map(jsonOf).join('\n')}`;
  const verdicts = checkKey ? caches.ceilingVerdicts(agent.id, checkKey, input.token) : new Map<string, LayerResult>();
  for (const { target, action } of details.pairs) {
    const pair = `${entityKey(target)}\n${action}`;
    let inside = verdicts.get(pair);
    if (!inside) {
      try {
        // Not validated as a request: the context is the request's, made for its own action.
        inside = ceiling.ask({ action: actionUid(action), resource: target, context, entities: checkEntities }, false, schemaName);
      } catch (err) {
        if (!(err instanceof LeashError && err.code === 'VALIDATION_FAILED')) throw err;
        // Cedar refused the question. If the request itself does not fit the schema, that is the
        // caller's 400 (this call throws it); otherwise the token names an action or target the
        // schema does not know: malformed details.
        if (input.request) ceiling.ask(input.request, true);
        return { ok: false, code: 'DETAILS_MALFORMED', reasons: [], errors: [err.message] };
      }
      verdicts.set(pair, inside);
    }
    if (!inside.allow) return { ok: false, code: inside.errored ? 'POLICY_EVALUATION_ERROR' : 'DETAILS_BEYOND_CEILING', reasons: inside.reasons, errors: inside.errors };
  }
  return { ok: true };
}
