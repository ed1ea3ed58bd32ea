import { randomUUID } from 'node:crypto';
import { DELEGATE_ACTION, delegateDecision, uncoveredPair } from '../authz/delegation.ts';
import type { DecisionCaches } from '../authz/decision-caches.ts';
import { detailsOf, type CedarDetail } from '../authz/details.ts';
import { entitiesFor, entityKey } from '../authz/engine.ts';
import { GRANT_CLAIM, grantCovering } from '../authz/token-layer.ts';
import { isLeashError } from '../errors.ts';
import type { AgentRecord } from '../registry/agent.ts';
import { GRANT_TOKEN_TYPE, grantExchange } from './grant-exchange.ts';
import { ACCESS_TOKEN_SECONDS } from './node-signer.ts';
import { OAuthError } from './oauth-error.ts';
import { checkCeiling, readDetails } from './requested-details.ts';
import { tokenSettings } from './settings.ts';
import type { Authenticated, TokenForm, TokenResponse, TokenServiceDeps } from './token-service.ts';
import { MAX_TOKEN_CHARS, verifyLeashToken } from './verify.ts';

// Token exchange for a sub-agent (RFC 8693): the parent agent A hands part of its own Leash
// token on to a sub-agent B, which proves who it is with an assertion of its own (the actor
// token). The outcome, whichever it is, is a recorded decision.

export const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token' as const;
export const JWT_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
/** How a token exchange is kept in the decision log (replay leaves these records out: see replay.ts). */
export const EXCHANGE_RECORD_KIND = 'token-exchange';
export const DELEGATION_LAYER = 'delegation';

/** What the exchange needs of the token service: its deps, client authentication and audiences. */
export interface ExchangeParty {
  deps: TokenServiceDeps;
  /** The client, authenticated by its assertion, whatever its status (an inactive one's exchange is refused, and recorded). */
  authenticateClient(form: TokenForm, now: Date): Promise<Authenticated>;
  /** An assertion checked against its agent's pins and used once (any status). */
  authenticate(assertion: string, now: Date): Promise<Authenticated>;
  audienceOf(resource: string | undefined): string;
  /** Ceiling verdicts remembered across requests. */
  caches: DecisionCaches;
}

/** An authenticated client that is not active gets nothing (`AGENT_NOT_ACTIVE` where the refusal is recorded). */
export function refuseInactiveClient({ record }: Authenticated): void {
  if (record.status !== 'active') throw new OAuthError('unauthorized_client', `the agent is ${record.status}; only an active agent gets tokens`, 'AGENT_NOT_ACTIVE');
}

/**
 * Token exchange for a sub-agent (RFC 8693): the client A hands on part of its own Leash token
 * to the agent B that signed the actor token. Every outcome after A has authenticated is a
 * recorded decision (layer `delegation`), and a token leaves only once its record is durable.
 */
export async function exchange(party: ExchangeParty, form: TokenForm, now: Date): Promise<TokenResponse> {
  if (form.subject_token_type === GRANT_TOKEN_TYPE) return grantExchange(party, form, now);
  if (form.subject_token_type !== ACCESS_TOKEN_TYPE) throw new OAuthError('invalid_request', `subject_token_type must be ${ACCESS_TOKEN_TYPE} (a parent's token) or ${GRANT_TOKEN_TYPE} (a human's grant)`);
  if (form.subject_token === undefined || form.subject_token.length === 0) throw new OAuthError('invalid_request', 'subject_token is required');
  if (form.actor_token_type !== JWT_TOKEN_TYPE) throw new OAuthError('invalid_request', `actor_token_type must be ${JWT_TOKEN_TYPE}`);
  if (form.actor_token === undefined || form.actor_token.length === 0) throw new OAuthError('invalid_request', 'actor_token is required: the sub-agent\'s own signed assertion');
  if (form.authorization_details === undefined) throw new OAuthError('invalid_request', 'authorization_details is required');
  const parent = await party.authenticateClient(form, now);
  const record: ExchangeRecord = { parent: parent.record.id, child: null, requested: form.authorization_details, subject: null, reasons: [] };
  try {
    const issued = await delegate(party, form, parent, record, now);
    await recordExchange(party.deps, record, now, null);
    return issued;
  } catch (err) {
    if (err instanceof OAuthError && err.error !== 'temporarily_unavailable' && err.error !== 'server_error') await recordExchange(party.deps, record, now, err.code ?? err.error);
    throw err;
  }
}

async function delegate(party: ExchangeParty, form: TokenForm, parent: Authenticated, out: ExchangeRecord, now: Date): Promise<TokenResponse> {
  const { deps } = party;
  const { registry } = deps;
  const A = parent.record;
  const grant = (code: string, why: string) => new OAuthError('invalid_grant', why, code);
  const details = (code: string, why: string) => new OAuthError('invalid_authorization_details', why, code);
  const agentOf = (id: string) => registry.agents.get(id);

  // 1. A active; the subject token: Leash's, A's own (A acting), every agent above A active.
  refuseInactiveClient(parent);
  const subject = await verifyLeashToken(form.subject_token!, deps.leash, A.id, agentOf, now);
  if (!subject.ok) throw grant(subject.code, `the subject_token is not a usable Leash access token of the client (${subject.code})`);
  out.subject = { jti: subject.claims.jti, sub: subject.claims.sub, act: subject.claims.act, exp: subject.claims.exp };
  if (subject.standing !== 'active') throw new OAuthError('unauthorized_client', 'the client is not active', 'AGENT_NOT_ACTIVE');
  if (subject.chain.some((id) => agentOf(id)?.record.status !== 'active')) throw grant('DELEGATION_CHAIN_BROKEN', 'an agent above the client in the subject_token\'s delegation chain is not active');
  // Whom the chain acts for: the human the subject token names, who must be A's owner (as a
  // decision requires), or, for a token under a grant, the human whose grant to the agent at the
  // top of the chain is still in force and covers it. The child's token names the same grant,
  // so revoking it stops the whole chain.
  const underGrant = subject.claims[GRANT_CLAIM];
  const top = subject.chain.at(-1) ?? A.id;
  if (underGrant !== undefined) {
    const covering = typeof underGrant === 'string' && subject.onBehalfOf !== null && grantCovering(registry, subject.onBehalfOf, top, subject.claims.authorization_details, now, underGrant);
    if (!covering) throw grant('DELEGATION_NOT_GRANTED', 'the subject_token\'s grant is no longer in force, or does not cover it');
  } else if (subject.onBehalfOf !== null && subject.onBehalfOf !== A.owner) {
    throw grant('DELEGATION_NOT_GRANTED', 'the subject_token acts for a human who is not the client\'s owner');
  }
  const human = subject.onBehalfOf ?? A.owner;
  if (!human) throw grant('TOKEN_UNKNOWN_HUMAN', 'the client acts for no human');

  // 2. The sub-agent: its own assertion, used once; active; not already in the chain.
  // A refused actor token is a refused grant, not a failed client authentication: A did authenticate.
  let child: Authenticated;
  try {
    child = await party.authenticate(form.actor_token!, now);
  } catch (err) {
    if (err instanceof OAuthError && err.error === 'invalid_client') throw grant('ACTOR_TOKEN_INVALID', `the actor_token: ${err.description}`);
    throw err;
  }
  const B = child.record;
  out.child = B.id;
  if (B.status !== 'active') throw grant('AGENT_NOT_ACTIVE', `the sub-agent is ${B.status}; only an active agent gets tokens`);
  // B's token will act for this human, which a decision honours for B's owner, or under the
  // grant for a sub-agent of the grant's agent's owner (it helps the agent the grant is to): a
  // token it could never use is not issued.
  const chainOwner = underGrant !== undefined ? agentOf(top)?.record.owner : human;
  if (B.owner !== chainOwner) throw grant('DELEGATION_NOT_GRANTED', underGrant !== undefined ? 'the sub-agent\'s owner is not the owner of the agent the grant is to' : 'the sub-agent\'s owner is not the human the delegation chain acts for');
  if (B.id === A.id || subject.chain.includes(B.id)) throw grant('DELEGATION_CYCLE', 'the sub-agent is already in the delegation chain');
  const depth = 2 + subject.chain.length; // B, A, and the agents above A
  if (depth > tokenSettings().maxDelegationDepth) throw grant('DELEGATION_TOO_DEEP', `the delegation chain would have more than ${tokenSettings().maxDelegationDepth} agents`);

  // 3. The delegate decision: Cedar, principal A, resource B.
  const policies = deps.policies();
  if (!policies) throw new OAuthError('temporarily_unavailable', 'no policy set is loaded, so the delegation cannot be decided');
  out.policyVersion = policies.version;
  const decided = delegateDecision(policies, registry, A.id, B.id);
  out.reasons = decided.result.reasons;
  if (!decided.declared) throw grant('DELEGATION_DENIED', `the schema declares no ${DELEGATE_ACTION} action for agents, so no agent may delegate`);
  if (!decided.result.allow) throw grant(decided.result.errored ? 'POLICY_EVALUATION_ERROR' : 'DELEGATION_DENIED', `no policy lets the client delegate to this agent (Action::"${DELEGATE_ACTION}")`);

  // 4. What for: exactly what was asked, within A's token and within B's ceiling (refused whole, never narrowed).
  const held = detailsOf(subject.claims.authorization_details);
  if (!held.ok) throw grant(held.code, 'the subject_token\'s authorization_details cannot be read');
  const entries = requestedWithin(party, form.authorization_details, { held: held.details, heldBy: 'the subject_token', code: 'DETAILS_BEYOND_SUBJECT_TOKEN' }, B, child.version, 'the sub-agent\'s ceiling');

  // 5. The token: the human as sub, B acting, A's chain above it; never outliving A's token.
  const audience = party.audienceOf(form.resource);
  const iat = Math.floor(now.getTime() / 1000);
  const exp = Math.min(iat + Math.min(ACCESS_TOKEN_SECONDS, B.credentials!.maxTokenLifetimeSeconds), subject.claims.exp!);
  const parentAct = subject.claims.act ?? { sub: A.id };
  const claims = {
    iss: deps.issuer, sub: human, aud: audience, client_id: A.id, iat, exp, jti: randomUUID(), act: { sub: B.id, act: parentAct }, authorization_details: entries,
    ...(underGrant !== undefined ? { [GRANT_CLAIM]: underGrant } : {}),
  };
  const token = await deps.signer.sign(claims, now);
  if (token === null) throw new OAuthError('temporarily_unavailable', 'this node has no signing key it may use right now');
  if (token.length > MAX_TOKEN_CHARS) throw details('DETAILS_MALFORMED', 'authorization_details is too large for a token');
  out.issued = { jti: claims.jti, exp };
  return { access_token: token, token_type: 'Bearer', expires_in: Math.max(0, exp - iat), authorization_details: entries, issued_token_type: ACCESS_TOKEN_TYPE };
}

/**
 * The details asked for, exactly: every entry within what is held (a parent's token, a grant),
 * and within the ceiling of the agent that will carry the token. Refused whole, never narrowed.
 */
export function requestedWithin(
  party: ExchangeParty, raw: string | undefined, holding: { held: CedarDetail[]; heldBy: string; code: string }, agent: AgentRecord, version: number, whose: string,
): unknown[] {
  const { registry } = party.deps;
  const details = (code: string, why: string) => new OAuthError('invalid_authorization_details', why, code);
  let entries: unknown[];
  try {
    entries = readDetails(raw);
  } catch (err) {
    if (err instanceof OAuthError) throw details('DETAILS_MALFORMED', err.description);
    throw err;
  }
  const requested = detailsOf(entries);
  if (!requested.ok) throw details('DETAILS_MALFORMED', requested.detail);
  let entities;
  try {
    entities = entitiesFor(registry, requested.details.map((d) => ({ uid: d.resource ?? d.resourceIn! })), undefined);
  } catch (err) {
    if (isLeashError(err)) throw details('DETAILS_MALFORMED', err.message);
    throw err;
  }
  const missing = uncoveredPair(holding.held, requested.details, entities);
  if (missing) throw details(holding.code, `${holding.heldBy} does not cover ${missing.action} on ${entityKey(missing.target)}; the request is refused whole, never narrowed`);
  const policies = party.deps.policies();
  if (!policies) throw new OAuthError('temporarily_unavailable', 'no policy set is loaded, so the ceiling cannot be checked');
  try {
    checkCeiling(policies, registry, agent, version, entries, party.caches);
  } catch (err) {
    if (err instanceof OAuthError) throw details('DETAILS_BEYOND_CEILING', `${err.description} (${whose})`);
    throw err;
  }
  return entries;
}

/**
 * The exchange as a decision: principal A, `delegate`, resource B (null: the actor token did
 * not authenticate), layer `delegation`. Never a token: the subject token's identifying claims only.
 */
async function recordExchange(deps: TokenServiceDeps, r: ExchangeRecord, now: Date, code: string | null): Promise<void> {
  const { registry } = deps;
  const request = {
    kind: EXCHANGE_RECORD_KIND,
    subject: { type: 'Agent', id: r.parent }, action: { name: DELEGATE_ACTION }, resource: r.child === null ? null : { type: 'Agent', id: r.child },
    context: { requested: r.requested, subjectToken: r.subject, ...(r.issued ? { issued: r.issued } : {}) },
  };
  try {
    await deps.decisions.record({
      id: randomUUID(), nodeId: deps.nodeId, at: now, request, decision: code === null, layer: DELEGATION_LAYER, code, reasons: [...r.reasons].sort(),
      policyVersion: r.policyVersion ?? deps.policies()?.version ?? 0, logPosition: registry.position,
    });
  } catch (err) {
    deps.log({ err: (err as Error).message }, 'recording a token exchange failed');
    throw new OAuthError('temporarily_unavailable', 'the exchange could not be recorded durably, so it is not given');
  }
}

interface ExchangeRecord {
  parent: string;
  child: string | null;
  /** `authorization_details` as sent (a string: it may not even be JSON). */
  requested: string;
  subject: { jti: unknown; sub: unknown; act: unknown; exp: unknown } | null;
  reasons: string[];
  policyVersion?: number;
  issued?: { jti: string; exp: number };
}
