import type { EvaluationRequest } from '../authz/engine.ts';
import { PolicyHistory } from '../authz/policy-view.ts';
import { GRANT_CLAIM, grantCovering } from '../authz/token-layer.ts';
import type { GrantRecord } from '../registry/grants.ts';
import type { ApprovalRecord } from '../approvals/approval.ts';
import type { RecordedRequest } from './decision-log.ts';
import { RegistryHistory, type RegistryState } from '../registry/registry-view.ts';
import { agentAggregate } from '../registry/streams.ts';
import { actors } from '../tokens/verify.ts';
import type { StoredDecision } from './decision-log.ts';
import type { AuditSource } from './source.ts';

// SPEC §8 trace: for one recorded decision, who acted for whom (human → agent → sub-agent),
// the lifecycle events that had shaped each agent's state when it was made, and the policy
// version that decided it. Everything comes from the record and the event log up to the
// decision's position.

export interface TraceLink {
  type: 'Human' | 'Agent' | string;
  id: string;
  /** initiator: the human the work is for; delegate: an agent that passed the work on; actor: the subject that asked. */
  role: 'initiator' | 'delegate' | 'actor';
  /** How this link is known: the verified token's claims, or the registry (the agent's owner). */
  from: 'token' | 'registry' | 'request';
}

export interface TraceEvent {
  position: number;
  at: string;
  type: string;
  actor: string | null;
  /** The event's reason, revocation mode, grace period or grants, when it has them (never key material). */
  detail: Record<string, unknown>;
}

export interface AgentAtDecision {
  id: string;
  /** The agent's state when the decision was made (null: not registered then). */
  status: string | null;
  owner: string | null;
  version: number;
  events: TraceEvent[];
}

export interface Trace {
  decision: Omit<StoredDecision, 'at' | 'prevHash'> & { at: string };
  chain: TraceLink[];
  agents: AgentAtDecision[];
  policy: { version: number; position: number; sha256: string } | null;
  /** True when the token was refused before its claims could be trusted: the chain is the registry's view only. */
  tokenUnverified: boolean;
  /** The human's grant the token acted under (not the agent's owner), as it stood at the decision: who consented, when, to what. */
  grant: (GrantRecord & { human: string }) | null;
  /** The approval the decision asked for or spent, as it stood when the decision was made: who approved, when, and why. */
  approval: ApprovalRecord | null;
}

const DETAIL_KEYS = ['reason', 'mode', 'gracePeriodSeconds', 'grants', 'ceiling', 'owner', 'tokensNotBefore', 'detector', 'severity', 'evidence', 'response'];

function detailOf(data: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(DETAIL_KEYS.filter((k) => data[k] !== undefined).map((k) => [k, data[k]]));
}

/** Who acted for whom, from the initiator to the subject that asked. */
function chainOf(request: EvaluationRequest, ownerOf: (agent: string) => string | null): { chain: TraceLink[]; unverified: boolean } {
  const subject = request.subject ?? { type: '', id: '' };
  const token = subject.properties?.token as { claims?: Record<string, unknown> } | undefined;
  const isAgent = subject.type === 'agent' || subject.type === 'Agent' || token !== undefined;
  if (!isAgent) return { chain: [{ type: subject.type, id: subject.id, role: 'actor', from: 'request' }], unverified: false };
  const claims = token?.claims;
  if (!claims) {
    const owner = ownerOf(subject.id);
    return {
      chain: [...(owner ? [{ type: 'Human', id: owner, role: 'initiator' as const, from: 'registry' as const }] : []), { type: 'Agent', id: subject.id, role: 'actor', from: 'request' }],
      unverified: true,
    };
  }
  const { acting, onBehalfOf, chain } = actors(claims);
  const actor = acting ?? subject.id;
  // Nested `act` claims run from the most recent actor back: the earliest delegate is last.
  const delegates = [...chain].reverse();
  const initiator = onBehalfOf ?? ownerOf(delegates[0] ?? actor);
  return {
    chain: [
      ...(initiator ? [{ type: 'Human', id: initiator, role: 'initiator' as const, from: onBehalfOf ? ('token' as const) : ('registry' as const) }] : []),
      ...delegates.map((id) => ({ type: 'Agent', id, role: 'delegate' as const, from: 'token' as const })),
      { type: 'Agent', id: actor, role: 'actor', from: 'token' },
    ],
    unverified: false,
  };
}

export async function traceDecision(source: AuditSource, id: string): Promise<Trace | undefined> {
  const d = await source.decision(id);
  if (!d) return undefined;
  const registry = new RegistryHistory();
  const policies = new PolicyHistory();
  const agentEvents = new Map<string, TraceEvent[]>();
  const prefix = `${agentAggregate.streamType}/`;
  outer: for await (const page of source.events()) {
    for (const e of page) {
      if (e.position > d.logPosition) break outer;
      registry.apply(e);
      policies.apply(e);
      if (!e.streamId.startsWith(prefix)) continue;
      const agent = e.streamId.slice(prefix.length);
      if (!agentEvents.has(agent)) agentEvents.set(agent, []);
      agentEvents.get(agent)!.push({ position: e.position, at: e.at.toISOString(), type: e.type, actor: e.metadata?.actor ?? null, detail: detailOf(e.data ?? {}) });
    }
  }
  const state = registry.at(d.logPosition);
  const { chain, unverified } = chainOf(d.request as EvaluationRequest, (agent) => state.agents.get(agent)?.record.owner ?? null);
  const agents = chain.filter((l) => l.type === 'Agent').map((l): AgentAtDecision => {
    const a = state.agents.get(l.id);
    return { id: l.id, status: a?.record.status ?? null, owner: a?.record.owner ?? null, version: a?.version ?? 0, events: agentEvents.get(l.id) ?? [] };
  });
  const { at, prevHash: _prevHash, ...rest } = d;
  return { decision: { ...rest, at: at.toISOString() }, chain, agents, policy: policies.describe(d.policyVersion) ?? null, tokenUnverified: unverified, grant: grantOf(d, chain, state), approval: approvalOf(d, state) };
}

/** The approval named by the record (asked for, or spent): as of the decision's position, or just after it for one it asked for. */
function approvalOf(d: StoredDecision, state: RegistryState): ApprovalRecord | null {
  const id = (d.request as RecordedRequest).approval?.id;
  return id === undefined ? null : state.approvals.get(id)?.record ?? null;
}

/** For a token acting for a human who is not the acting agent's owner, or naming a grant: the grant that honoured it then. */
function grantOf(d: StoredDecision, chain: TraceLink[], state: RegistryState): Trace['grant'] {
  const claims = ((d.request as EvaluationRequest).subject?.properties?.token as { claims?: Record<string, unknown> } | undefined)?.claims;
  const initiator = chain.find((l) => l.role === 'initiator' && l.from === 'token');
  // The grant is to the agent at the top of the chain (a sub-agent works under its parent's grant).
  const top = chain.find((l) => l.type === 'Agent');
  const named = claims?.[GRANT_CLAIM];
  // The owner's token names a grant only when Leash issued it for one (token-layer.ts).
  if (!claims || !initiator || !top || (state.agents.get(top.id)?.record.owner === initiator.id && typeof named !== 'string')) return null;
  const grant = grantCovering(state, initiator.id, top.id, claims.authorization_details, d.at, typeof named === 'string' ? named : undefined);
  return grant ? { ...grant, human: initiator.id } : null;
}
