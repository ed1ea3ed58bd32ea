import type { RegistryState } from '../registry/registry-view.ts';
import type { TokenCheck } from '../tokens/verify.ts';

// The token layer's checks past the token itself: who the verified token acts for, and whether
// every agent above the acting one still stands. The decision path and introspection both ask
// this, so a token introspection calls active is one a decision gets past layer `token` with.

type Accepted = Extract<TokenCheck, { ok: true }>;

export type DelegationRefusal = 'DELEGATION_CHAIN_BROKEN' | 'DELEGATION_NOT_GRANTED' | 'TOKEN_UNKNOWN_HUMAN';

/** Why the token layer refuses a verified token, or null when it lets it through. */
export function delegationRefusal(token: Accepted, view: RegistryState): DelegationRefusal | null {
  const recordOf = (id: string) => view.agents.get(id)?.record;
  // Every agent that delegated down to this one must still be live.
  if (token.chain.some((id) => recordOf(id)?.status !== 'active')) return 'DELEGATION_CHAIN_BROKEN';
  const agent = recordOf(token.actingAgent)!;
  // A token may say it acts for a human (`sub` beside `act`), but the agent signs its own
  // tokens: it may not pick whom it is checked against. Until humans grant delegations, the
  // only human an agent acts for is its owner.
  if (token.onBehalfOf !== null && token.onBehalfOf !== agent.owner) return 'DELEGATION_NOT_GRANTED';
  if (!agent.owner || !view.humans.has(agent.owner)) return 'TOKEN_UNKNOWN_HUMAN';
  return null;
}
