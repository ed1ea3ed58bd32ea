import { grantInForce, type GrantRecord } from '../registry/grants.ts';
import type { RegistryState } from '../registry/registry-view.ts';
import type { TokenCheck } from '../tokens/verify.ts';
import { atOrAbove, uncoveredPair } from './delegation.ts';
import { detailsOf } from './details.ts';
import { entitiesFor } from './engine.ts';

// The token layer's checks past the token itself: who the verified token acts for, and whether
// every agent above the acting one still stands. The decision path and introspection both ask
// this, so a token introspection calls active is one a decision gets past layer `token` with.

type Accepted = Extract<TokenCheck, { ok: true }>;

/** The claim by which a token Leash issued for a grant names it. */
export const GRANT_CLAIM = 'leash_grant';

export type DelegationRefusal = 'DELEGATION_CHAIN_BROKEN' | 'DELEGATION_NOT_GRANTED' | 'TOKEN_UNKNOWN_HUMAN';

/** Why the token layer refuses a verified token, or null when it lets it through. */
export function delegationRefusal(token: Accepted, view: RegistryState, now: Date): DelegationRefusal | null {
  const recordOf = (id: string) => view.agents.get(id)?.record;
  // Every agent that delegated down to this one must still be live.
  if (token.chain.some((id) => recordOf(id)?.status !== 'active')) return 'DELEGATION_CHAIN_BROKEN';
  const agent = recordOf(token.actingAgent)!;
  // A token may say it acts for a human (`sub` beside `act`), but whoever signed it, the agent
  // may not pick whom it is checked against: it acts for its owner, or for a human who granted
  // it what the token asks for (a grant in force, covering every entry of its details). A token
  // Leash issued for a grant names it (`leash_grant`), and only that grant honours it: even a
  // grant of the agent's owner, whose revocation must stop the token as any grant's does.
  // Under a grant, a chain of agents is honoured only as Leash issued it (the grant's agent
  // handing part on to a sub-agent by token exchange): the grant must be to the agent at the
  // top of the chain. A chain an agent writes into a token of its own claims another agent's
  // grant, and is refused.
  const named = token.claims[GRANT_CLAIM];
  if (named !== undefined || (token.onBehalfOf !== null && token.onBehalfOf !== agent.owner)) {
    const grantor = token.onBehalfOf ?? agent.owner;
    if (named !== undefined && typeof named !== 'string') return 'DELEGATION_NOT_GRANTED';
    const top = token.chain.at(-1) ?? agent.id; // nested `act` runs from the acting agent back: the earliest is last
    if (token.chain.length > 0 && (named === undefined || !token.leashIssued)) return 'DELEGATION_NOT_GRANTED';
    if (!grantor || !grantCovering(view, grantor, top, token.claims.authorization_details, now, named)) return 'DELEGATION_NOT_GRANTED';
  }
  const human = token.onBehalfOf ?? agent.owner;
  if (!human || !view.humans.has(human)) return 'TOKEN_UNKNOWN_HUMAN';
  return null;
}

/**
 * The first of `human`'s grants to `agent` in force at `now` that covers every (target, action)
 * of `details` (as a parent's token must cover a sub-agent's: see uncoveredPair), or null.
 * "Within" reads the registry only.
 */
export function grantCovering(view: RegistryState, human: string, agent: string, details: unknown, now: Date, only?: string): GrantRecord | null {
  const grants = view.humans.get(human)?.record.grants ?? [];
  const wanted = detailsOf(details);
  if (!wanted.ok) return null;
  let entities;
  try {
    entities = entitiesFor(view, wanted.details.map((d) => ({ uid: d.resource ?? d.resourceIn! })), undefined);
  } catch {
    return null;
  }
  const above = atOrAbove(entities);
  for (const g of grants) {
    if (g.agent !== agent || (only !== undefined && g.id !== only) || !grantInForce(g, now)) continue;
    const held = detailsOf(g.authorization_details);
    if (held.ok && uncoveredPair(held.details, wanted.details, entities, above) === null) return g;
  }
  return null;
}
