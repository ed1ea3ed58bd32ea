import { hash } from 'node:crypto';
import { canonicalJson } from '../canonical-json.ts';
import type { EntityUid } from '../registry/cedar-entities.ts';
import type { RegistryState } from '../registry/registry-view.ts';
import type { ApproverSpec } from './approver-spec.ts';
import { approvalStatus, type ApprovalBinding, type ApprovalRecord } from './approval.ts';

// The approval gate of an agent decision (SPEC §5.3), pure so that replay decides it exactly as
// the node did. A layer whose only satisfied permits are marked `@approval(...)` allows only with
// a human's approval of this very request. The request names one with `context.approvalId`:
// approved, bound to the same agent, action, resource and context, unexpired and unused, it
// allows (the node then spends it, once across all nodes); otherwise the answer says why not.

/**
 * How long past its expiry an approval is still known to decisions (and the node's memory): a
 * day. After that, naming it is naming nothing (APPROVAL_NOT_MATCHING), here and in replay alike;
 * its stream keeps it for the audit trail.
 */
export const APPROVAL_RETENTION_MS = 24 * 3600_000;

/** Whether an approval is past its retention at `now` (gone from decisions and the node's memory). */
export const pastRetention = (a: Pick<ApprovalRecord, 'expiresAt'>, now: Date): boolean => now.getTime() >= Date.parse(a.expiresAt) + APPROVAL_RETENTION_MS;

/** The context member a PEP repeats the request with; never part of what Cedar sees or the digest. */
export const APPROVAL_ID = 'approvalId';

/** What a gated decision carries to the node (which records the approval or spends it). */
export interface ApprovalAsk {
  /** request: record a new approval (or reuse a pending one for the same request); pending: this one is not answered yet; use: spend it. */
  outcome: 'request' | 'pending' | 'use';
  id?: string;
  expiresAt?: string;
  binding: ApprovalBinding;
  human: string;
  approvers: string[];
  policies: string[];
}

/** A layer of an allowed decision: its satisfied permits. */
export interface GateLayer {
  layer: 'ceiling' | 'agent' | 'human';
  reasons: string[];
}

/**
 * The `@approval` permits that alone allowed some layer, with their approvers; null when every
 * layer allowed without one. Within a layer any of its permits' approvers may approve; two
 * layers held back by different approvers would each need their own, which one approval cannot
 * give: `ambiguous`, and the request is refused.
 */
export function gateOf(approvals: ReadonlyMap<string, ApproverSpec>, layers: readonly GateLayer[]): { layer: GateLayer['layer']; policies: string[]; specs: ApproverSpec[]; ambiguous: boolean } | null {
  if (approvals.size === 0) return null;
  let gated: { layer: GateLayer['layer']; policies: string[]; specs: ApproverSpec[]; ambiguous: boolean } | null = null;
  for (const l of layers) {
    if (l.reasons.length === 0 || !l.reasons.every((id) => approvals.has(id))) continue;
    const specs = [...new Set(l.reasons.map((id) => approvals.get(id)!))].sort();
    if (!gated) gated = { layer: l.layer, policies: [...l.reasons], specs, ambiguous: false };
    else {
      gated.policies.push(...l.reasons);
      if (!sameList(gated.specs, specs)) gated.ambiguous = true;
    }
  }
  if (gated) gated.policies = [...new Set(gated.policies)].sort();
  return gated;
}

/**
 * sha256, as canonical JSON, of what Cedar decides on besides the agent, the human, the action
 * and the resource's uid: the context (`approvalId` left out) and the resource's `properties`
 * (its attributes, for a resource the registry does not hold).
 */
export function contextDigest(context: Record<string, unknown> | undefined, resourceProperties: Record<string, unknown> | undefined): string {
  const { [APPROVAL_ID]: _id, ...rest } = context ?? {};
  return hash('sha256', canonicalJson({ context: rest, resource: resourceProperties ?? null }), 'hex');
}

export const sameBinding = (a: ApprovalBinding, b: ApprovalBinding): boolean => bindingKey(a) === bindingKey(b);

/** One key per bound request (the view finds a pending approval for a request by it). */
export const bindingKey = (b: ApprovalBinding): string => JSON.stringify([b.agent, b.human, b.action, b.resource.type, b.resource.id, b.contextDigest]);

/** An action as approvers read it: `pay` for `Action::"pay"`, the uid itself in a namespace. */
export const actionName = (action: EntityUid): string => (action.type === 'Action' ? action.id : `${action.type}::${JSON.stringify(action.id)}`);

const sameList = (a: readonly string[], b: readonly string[]) => a.length === b.length && a.every((x, i) => x === b[i]);

/** `human:<owner>` for "owner", the group as written for "group:<id>". */
export function resolveApprovers(specs: readonly ApproverSpec[], owner: string | null | undefined): string[] {
  return [...new Set(specs.flatMap((s) => (s === 'owner' ? (owner ? [`human:${owner}`] : []) : [s])))].sort();
}

/** Whether this human is one of the approval's approvers (a member of an approving group, through its parents too). */
export function isApprover(view: RegistryState, human: string, approval: Pick<ApprovalRecord, 'approvers'>): boolean {
  const record = view.humans.get(human)?.record;
  if (!record) return false;
  if (approval.approvers.includes(`human:${human}`)) return true;
  const seen = new Set<string>();
  const queue = [...record.groups];
  while (queue.length > 0) {
    const g = queue.shift()!;
    if (seen.has(g)) continue;
    seen.add(g);
    if (approval.approvers.includes(`group:${g}`)) return true;
    queue.push(...(view.groups.get(g)?.record.parents ?? []));
  }
  return false;
}

export type Settled =
  | { allow: true; ask: ApprovalAsk }
  | { allow: false; code: 'APPROVAL_REQUIRED' | 'APPROVAL_NOT_MATCHING' | 'APPROVAL_EXPIRED' | 'APPROVAL_DENIED' | 'APPROVAL_AMBIGUOUS'; ask?: ApprovalAsk };

/** Whether an approval was asked of the approvers and for the permits that hold this request back now (a policy may have changed since). */
export const askedOfTheSame = (a: Pick<ApprovalRecord, 'approvers' | 'policies'>, ask: Pick<ApprovalAsk, 'approvers' | 'policies'>): boolean =>
  sameList(a.approvers, ask.approvers) && sameList(a.policies, ask.policies);

/**
 * What the gate decides for a request the policies allow only with an approval: spend the one
 * it names, or say why not (and what to ask the approvers).
 */
export function settle(
  view: RegistryState,
  request: {
    agent: string; human: string; owner: string | null | undefined; action: EntityUid; resource: EntityUid;
    resourceProperties: Record<string, unknown> | undefined; context: Record<string, unknown> | undefined;
  },
  gate: { policies: string[]; specs: ApproverSpec[]; ambiguous: boolean },
  now: Date,
): Settled {
  if (gate.ambiguous) return { allow: false, code: 'APPROVAL_AMBIGUOUS' };
  const binding: ApprovalBinding = {
    agent: request.agent, human: request.human, action: actionName(request.action), resource: { type: request.resource.type, id: request.resource.id },
    contextDigest: contextDigest(request.context, request.resourceProperties),
  };
  const fresh: ApprovalAsk = { outcome: 'request', binding, human: request.human, approvers: resolveApprovers(gate.specs, request.owner), policies: gate.policies };
  const named = request.context?.[APPROVAL_ID];
  if (typeof named !== 'string') return { allow: false, code: 'APPROVAL_REQUIRED', ask: fresh };
  const found = view.approvals.get(named)?.record;
  const approval = found && !pastRetention(found, now) ? found : undefined;
  // Another request, or the same one held back now by other permits or approvers than the approval was asked of.
  if (!approval || !sameBinding(approval, binding) || !askedOfTheSame(approval, fresh)) return { allow: false, code: 'APPROVAL_NOT_MATCHING' };
  const existing = { ...fresh, id: approval.id, expiresAt: approval.expiresAt, approvers: approval.approvers, policies: approval.policies };
  switch (approvalStatus(approval, now)) {
    case 'approved':
      return { allow: true, ask: { ...existing, outcome: 'use' } };
    case 'pending':
      return { allow: false, code: 'APPROVAL_REQUIRED', ask: { ...existing, outcome: 'pending' } };
    case 'expired':
      return { allow: false, code: 'APPROVAL_EXPIRED' };
    case 'denied':
      return { allow: false, code: 'APPROVAL_DENIED' };
    case 'used':
      // Spent: the same request again needs an approval of its own.
      return { allow: false, code: 'APPROVAL_REQUIRED', ask: fresh };
  }
}
