import { randomUUID } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import type { DecisionLog } from '../audit/decision-log.ts';
import { actionUid, entitiesFor } from '../authz/engine.ts';
import { preparsed } from '../authz/layer-calls.ts';
import type { CompiledPolicySet } from '../authz/policy-set.ts';
import { LeashError } from '../errors.ts';
import type { EntityUid } from '../registry/cedar-entities.ts';
import type { RegistryState } from '../registry/registry-view.ts';
import { isApprover } from '../approvals/gate.ts';

// An admin call made with a human's token is itself a Cedar decision: principal the human,
// action `Action::"admin:<verb>"`, resource what the call acts on, decided by the policies
// marked `@layer("admin")` and nothing else, and recorded in the decision log. Without any
// admin policy a human may still look at what is their own. The operator token is the
// break-glass way in: it is not decided, and the events it causes say so.

/** Who is calling an admin route (set by the access check, access.ts). */
export type Caller = { kind: 'operator' } | { kind: 'human'; id: string };

/** What an admin route asks of Cedar: the verb and the resource, read from the matched route's params and body. */
export interface AdminAsk {
  verb: string;
  resource: EntityUid;
  /** The approval the call answers or reads (approvals routes): its approvers may, without any policy. */
  approval?: string;
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The admin decision this route asks for a human caller; a route without it takes the operator token only. */
    admin?: (request: FastifyRequest) => AdminAsk;
  }
  interface FastifyRequest {
    caller?: Caller;
    /** A human caller's admin decision, once made: what allowed it (`own:*` for what is their own). */
    adminReasons?: string[];
  }
}

/** How an admin decision is kept in the decision log (replay leaves these records out: see replay.ts). */
export const ADMIN_RECORD_KIND = 'admin';
export const ADMIN_LAYER = 'admin';

/** `Leash::"approvals"`: every approval, for listing them. */
export const APPROVALS = 'approvals';

/** `Leash::"<id>"`: what a call acts on when it is not one agent, human or group. */
export const leashResource = (id: string): EntityUid => ({ type: 'Leash', id });

/** Admin decisions as routes declare them: on a `Leash::"<id>"`, or on the entity the route's `:id` names. */
export const adminOn = {
  leash: (verb: string, id: string) => (): AdminAsk => ({ verb, resource: leashResource(id) }),
  param: (verb: string, type: 'Agent' | 'Human' | 'Group') => (request: FastifyRequest): AdminAsk => ({ verb, resource: { type, id: (request.params as { id: string }).id } }),
};

/** The actor an event records: the human, or the operator token. */
export const actorOf = (caller: Caller | undefined): string => (caller?.kind === 'human' ? `human:${caller.id}` : 'operator');

export interface AdminDecision {
  allow: boolean;
  reasons: string[];
  /** Why not, for the record and the 403. */
  code: string | null;
}

/**
 * What is a human's own without any policy: to look at themselves (their grants too) and the
 * agents they own, to give and withdraw their own grants, and to see and answer the approvals
 * addressed to them (and list them: the list then holds theirs only).
 */
function ownRule(registry: RegistryState, human: string, ask: AdminAsk): string | null {
  const self = ask.resource.type === 'Human' && ask.resource.id === human;
  if (self && (ask.verb === 'grant' || ask.verb === 'revoke-grant')) return 'own:grants';
  if (ask.verb === 'list' && ask.resource.type === 'Leash' && ask.resource.id === APPROVALS) return 'own:approvals';
  const approval = ask.approval === undefined ? undefined : registry.approvals.get(ask.approval)?.record;
  if (approval && (ask.verb === 'approve' || ask.verb === 'read') && isApprover(registry, human, approval)) return 'own:approval';
  if (ask.verb !== 'read') return null;
  if (self) return 'own:self';
  if (ask.resource.type === 'Agent' && registry.agents.get(ask.resource.id)?.record.owner === human) return 'own:agent';
  return null;
}

export function decideAdmin(policies: CompiledPolicySet | null, registry: RegistryState, human: string, ask: AdminAsk): AdminDecision {
  // The own-rule stands in for a permit, no more: an admin forbid still wins over it.
  const own = ownRule(registry, human, ask);
  const ownAllow: AdminDecision | null = own ? { allow: true, reasons: [own], code: null } : null;
  if (!policies) return ownAllow ?? { allow: false, reasons: [], code: 'NO_POLICY_SET' };
  const H: EntityUid = { type: 'Human', id: human };
  let result;
  try {
    const entities = entitiesFor(registry, [{ uid: H }, { uid: ask.resource }], undefined);
    result = preparsed(policies, policies.adminPreparsedId, H, { action: actionUid(`admin:${ask.verb}`), resource: ask.resource, context: {}, entities: [...entities.values()] }, true);
  } catch (err) {
    // The schema does not declare this admin action for a human and this resource: no policy can allow it.
    if (err instanceof LeashError && err.code === 'VALIDATION_FAILED') return ownAllow ?? { allow: false, reasons: [], code: 'ADMIN_ACTION_UNDECLARED' };
    throw err;
  }
  // Nothing forbade it (no satisfied forbid, none that failed to evaluate): what is one's own is allowed.
  if (ownAllow && (result.allow || (result.reasons.length === 0 && !result.errored))) return ownAllow;
  if (result.allow) return { allow: true, reasons: result.reasons, code: null };
  return { allow: false, reasons: result.reasons, code: result.errored ? 'POLICY_EVALUATION_ERROR' : 'ADMIN_DENIED' };
}

export interface AdminDeps {
  registry: RegistryState;
  /** Catches this node's registry up with the log (an approval asked for on another node a moment ago). */
  sync?: () => Promise<void>;
  policies: () => CompiledPolicySet | null;
  decisions: DecisionLog;
  nodeId: string;
}

/**
 * For a preHandler: a human caller's admin call decided and recorded before the route runs; a
 * refusal is a 403 naming the layer and the policies. The record is durable before the call
 * goes on, allowed or not: an admin call nobody can account for does not happen.
 */
export async function authorizeAdmin(deps: AdminDeps, request: FastifyRequest): Promise<void> {
  const caller = request.caller;
  if (caller?.kind !== 'human') return;
  const ask = request.routeOptions.config?.admin;
  if (!ask) throw new LeashError('FORBIDDEN', 'this call takes the operator token; no human may make it', { layer: ADMIN_LAYER, reasons: [] });
  let asked = ask(request);
  if (asked.approval !== undefined && !deps.registry.approvals.has(asked.approval) && deps.sync) {
    await deps.sync();
    asked = ask(request);
  }
  const policies = deps.policies();
  const decided = decideAdmin(policies, deps.registry, caller.id, asked);
  const action = `admin:${asked.verb}`;
  await recordOrRefuse(() => deps.decisions.record({
    id: randomUUID(), nodeId: deps.nodeId, at: new Date(),
    request: { kind: ADMIN_RECORD_KIND, subject: { type: 'Human', id: caller.id }, action: { name: action }, resource: asked.resource, context: { method: request.method, route: request.routeOptions.url } },
    decision: decided.allow, layer: ADMIN_LAYER, code: decided.code, reasons: [...decided.reasons].sort(),
    policyVersion: policies?.version ?? 0, logPosition: deps.registry.position,
  }));
  request.adminReasons = decided.reasons;
  if (!decided.allow) {
    throw new LeashError('FORBIDDEN', `no admin policy lets ${caller.id} do ${action} on ${asked.resource.type}::"${asked.resource.id}"`, {
      layer: ADMIN_LAYER, reasons: decided.reasons, decisionCode: decided.code,
    });
  }
}

async function recordOrRefuse(record: () => Promise<unknown>): Promise<void> {
  try {
    await record();
  } catch {
    throw new LeashError('NOT_READY', 'the admin decision could not be recorded durably, so the call is not made');
  }
}
