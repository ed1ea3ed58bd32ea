import { randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { DecisionLog } from '../audit/decision-log.ts';
import { DELEGATE_ACTION, delegateDecision, uncoveredPair } from '../authz/delegation.ts';
import { detailsOf } from '../authz/details.ts';
import { entitiesFor, entityKey } from '../authz/engine.ts';
import type { CompiledPolicySet } from '../authz/policy-set.ts';
import { ceilingOf, withinCeiling } from '../authz/within-ceiling.ts';
import { isLeashError } from '../errors.ts';
import { findUnsafeValue } from '../json-limits.ts';
import type { AgentRecord } from '../registry/agent.ts';
import type { EntityUid } from '../registry/cedar-entities.ts';
import type { RegistryState } from '../registry/registry-view.ts';
import { claimAssertionJti, pruneAssertionJtis } from '../store/assertion-jtis.ts';
import type { Database } from '../store/events.table.ts';
import { ASSERTION_TYPE, verifyClientAssertion } from './client-assertion.ts';
import { ACCESS_TOKEN_SECONDS, type NodeSigner } from './node-signer.ts';
import { OAuthError } from './oauth-error.ts';
import { tokenSettings } from './settings.ts';
import { MAX_TOKEN_CHARS, verifyLeashToken, type LeashTokens } from './verify.ts';

// POST /oauth/token: an agent authenticates with a client assertion and asks for a token
// that carries the authorization details it names. Every entry must lie within its ceiling:
// one that does not refuses the request, never a narrower token.

export const CLIENT_CREDENTIALS = 'client_credentials';
export const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token' as const;
export const JWT_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
/** How a token exchange is kept in the decision log (replay leaves these records out: see replay.ts). */
export const EXCHANGE_RECORD_KIND = 'token-exchange';
export const DELEGATION_LAYER = 'delegation';

/** `authorization_details` as sent, at most this many characters (the token must stay within MAX_TOKEN_CHARS). */
export const MAX_DETAILS_CHARS = 8_192;
/** Deep enough for any entry Leash reads (entries are 2 levels down, targets 3). */
const MAX_DETAILS_DEPTH = 16;
const MAX_RESOURCE_CHARS = 2_048;
const PRUNE_EVERY_MS = 60_000;

/** The form's parameters, each given at most once (the parser refuses repeats). */
export type TokenForm = Partial<Record<string, string>>;

export interface TokenResponse {
  access_token: string;
  token_type: 'Bearer';
  expires_in: number;
  authorization_details: unknown[];
  /** Token exchange only (RFC 8693 §2.2.1). */
  issued_token_type?: typeof ACCESS_TOKEN_TYPE;
}

export interface TokenServiceDeps {
  issuer: string;
  tokenEndpoint: string;
  /** `aud` when the request names no `resource` (LEASH_TOKEN_AUDIENCE). */
  defaultAudience: string;
  registry: RegistryState;
  policies: () => CompiledPolicySet | null;
  db: Kysely<Database>;
  signer: NodeSigner;
  /** Around the work: the node caught up first when it has reason to doubt its view (the decision API's admission). */
  admit: () => Promise<number>;
  release: (ticket: number) => void;
  log: (fields: Record<string, unknown>, message: string) => void;
  /** Leash's own tokens: a token exchange's subject token must be one. */
  leash: LeashTokens;
  /** Where every token exchange is recorded as a decision. */
  decisions: DecisionLog;
  nodeId: string;
}

export class TokenService {
  private prunedAt = 0;

  constructor(private readonly deps: TokenServiceDeps) {}

  /** A token for the request, or an OAuthError saying why not. */
  async issue(form: TokenForm, now = new Date()): Promise<TokenResponse> {
    if (form.grant_type !== CLIENT_CREDENTIALS && form.grant_type !== TOKEN_EXCHANGE) {
      throw new OAuthError('unsupported_grant_type', `grant_type must be ${CLIENT_CREDENTIALS} or ${TOKEN_EXCHANGE}`);
    }
    let ticket: number;
    try {
      ticket = await this.deps.admit();
    } catch {
      throw new OAuthError('temporarily_unavailable', 'this node cannot read the event log right now');
    }
    try {
      return form.grant_type === TOKEN_EXCHANGE ? await this.exchange(form, now) : await this.clientCredentials(form, now);
    } finally {
      this.deps.release(ticket);
    }
  }

  /** A client assertion (the client's, or a token exchange's actor token), checked against the agent's pins and used once. */
  private async authenticate(assertionValue: string, now: Date, clientId?: string): Promise<{ record: AgentRecord; version: number }> {
    const { registry } = this.deps;
    const assertion = await verifyClientAssertion(assertionValue, {
      audiences: [this.deps.issuer, this.deps.tokenEndpoint], agentOf: (id) => registry.agents.get(id), now, clientId,
    });
    if (!assertion.ok) throw new OAuthError('invalid_client', assertion.description);
    await this.claim(assertion.agentId, assertion.jti, assertion.acceptableUntil, now);
    // The agent as the registry has it now (it may have changed while the signature was checked).
    const found = registry.agents.get(assertion.agentId);
    if (!found?.record.credentials) throw new OAuthError('invalid_client', 'no registered agent with pinned keys has this id');
    return found;
  }

  /** Who asks: the client assertion (RFC 7523 §2.2); the agent must be active. */
  private async client(form: TokenForm, now: Date): Promise<{ record: AgentRecord; version: number }> {
    if (form.client_assertion_type !== ASSERTION_TYPE || form.client_assertion === undefined) {
      throw new OAuthError('invalid_client', `client authentication needs client_assertion_type=${ASSERTION_TYPE} and a client_assertion`);
    }
    const found = await this.authenticate(form.client_assertion, now, form.client_id);
    if (found.record.status !== 'active') throw new OAuthError('unauthorized_client', `the agent is ${found.record.status}; only an active agent gets tokens`);
    return found;
  }

  private async clientCredentials(form: TokenForm, now: Date): Promise<TokenResponse> {
    const { registry } = this.deps;
    // 1–2. Who asks, as the registry has it now.
    const { record: agent, version } = await this.client(form, now);

    // 3. What for: details within the ceiling, for one audience.
    const entries = readDetails(form.authorization_details);
    const audience = this.audienceOf(form.resource);
    const policies = this.deps.policies();
    if (!policies) throw new OAuthError('temporarily_unavailable', 'no policy set is loaded, so the ceiling cannot be checked');
    checkCeiling(policies, registry, agent, version, entries);

    // 4. The token (RFC 9068).
    const lifetime = Math.min(ACCESS_TOKEN_SECONDS, agent.credentials!.maxTokenLifetimeSeconds);
    const iat = Math.floor(now.getTime() / 1000);
    const claims = {
      iss: this.deps.issuer, sub: agent.id, aud: audience, client_id: agent.id, iat, exp: iat + lifetime, jti: randomUUID(), authorization_details: entries,
    };
    const token = await this.deps.signer.sign(claims, now);
    if (token === null) throw new OAuthError('temporarily_unavailable', 'this node has no signing key it may use right now');
    // Longer than the decision API reads: it could never be used.
    if (token.length > MAX_TOKEN_CHARS) throw new OAuthError('invalid_authorization_details', 'authorization_details is too large for a token');
    return { access_token: token, token_type: 'Bearer', expires_in: lifetime, authorization_details: entries };
  }

  /**
   * Token exchange for a sub-agent (RFC 8693): the client A hands on part of its own Leash token
   * to the agent B that signed the actor token. Every outcome after A has authenticated is a
   * recorded decision (layer `delegation`), and a token leaves only once its record is durable.
   */
  private async exchange(form: TokenForm, now: Date): Promise<TokenResponse> {
    if (form.subject_token_type !== ACCESS_TOKEN_TYPE) throw new OAuthError('invalid_request', `subject_token_type must be ${ACCESS_TOKEN_TYPE}`);
    if (form.subject_token === undefined || form.subject_token.length === 0) throw new OAuthError('invalid_request', 'subject_token is required');
    if (form.actor_token_type !== JWT_TOKEN_TYPE) throw new OAuthError('invalid_request', `actor_token_type must be ${JWT_TOKEN_TYPE}`);
    if (form.actor_token === undefined || form.actor_token.length === 0) throw new OAuthError('invalid_request', 'actor_token is required: the sub-agent\'s own signed assertion');
    if (form.authorization_details === undefined) throw new OAuthError('invalid_request', 'authorization_details is required');
    const parent = await this.client(form, now);
    const record: ExchangeRecord = { parent: parent.record.id, child: null, requested: form.authorization_details, subject: null, reasons: [] };
    try {
      const issued = await this.delegate(form, parent, record, now);
      await this.record(record, now, null);
      return issued;
    } catch (err) {
      if (err instanceof OAuthError && err.error !== 'temporarily_unavailable' && err.error !== 'server_error') await this.record(record, now, err.code ?? err.error);
      throw err;
    }
  }

  private async delegate(form: TokenForm, parent: { record: AgentRecord; version: number }, out: ExchangeRecord, now: Date): Promise<TokenResponse> {
    const { registry } = this.deps;
    const A = parent.record;
    const grant = (code: string, why: string) => new OAuthError('invalid_grant', why, code);
    const details = (code: string, why: string) => new OAuthError('invalid_authorization_details', why, code);
    const agentOf = (id: string) => registry.agents.get(id);

    // 1. The subject token: Leash's, A's own (A acting), every agent above A active.
    const subject = await verifyLeashToken(form.subject_token!, this.deps.leash, A.id, agentOf, now);
    if (!subject.ok) throw grant(subject.code, `the subject_token is not a usable Leash access token of the client (${subject.code})`);
    out.subject = { jti: subject.claims.jti, sub: subject.claims.sub, act: subject.claims.act, exp: subject.claims.exp };
    if (subject.standing !== 'active') throw new OAuthError('unauthorized_client', 'the client is not active', 'AGENT_NOT_ACTIVE');
    if (subject.chain.some((id) => agentOf(id)?.record.status !== 'active')) throw grant('DELEGATION_CHAIN_BROKEN', 'an agent above the client in the subject_token\'s delegation chain is not active');
    // Whom the chain acts for: the human the subject token names, who must be A's owner (as a decision requires).
    if (subject.onBehalfOf !== null && subject.onBehalfOf !== A.owner) throw grant('DELEGATION_NOT_GRANTED', 'the subject_token acts for a human who is not the client\'s owner');
    const human = subject.onBehalfOf ?? A.owner;
    if (!human) throw grant('TOKEN_UNKNOWN_HUMAN', 'the client acts for no human');

    // 2. The sub-agent: its own assertion, used once; active; not already in the chain.
    const child = await this.authenticate(form.actor_token!, now);
    const B = child.record;
    out.child = B.id;
    if (B.status !== 'active') throw grant('AGENT_NOT_ACTIVE', `the sub-agent is ${B.status}; only an active agent gets tokens`);
    if (B.id === A.id || subject.chain.includes(B.id)) throw grant('DELEGATION_CYCLE', 'the sub-agent is already in the delegation chain');
    const depth = 2 + subject.chain.length; // B, A, and the agents above A
    if (depth > tokenSettings().maxDelegationDepth) throw grant('DELEGATION_TOO_DEEP', `the delegation chain would have more than ${tokenSettings().maxDelegationDepth} agents`);

    // 3. The delegate decision: Cedar, principal A, resource B.
    const policies = this.deps.policies();
    if (!policies) throw new OAuthError('temporarily_unavailable', 'no policy set is loaded, so the delegation cannot be decided');
    out.policyVersion = policies.version;
    const decided = delegateDecision(policies, registry, A.id, B.id);
    out.reasons = decided.result.reasons;
    if (!decided.declared) throw grant('DELEGATION_DENIED', `the schema declares no ${DELEGATE_ACTION} action for agents, so no agent may delegate`);
    if (!decided.result.allow) throw grant(decided.result.errored ? 'POLICY_EVALUATION_ERROR' : 'DELEGATION_DENIED', `no policy lets the client delegate to this agent (Action::"${DELEGATE_ACTION}")`);

    // 4. What for: exactly what was asked, within A's token and within B's ceiling (refused whole, never narrowed).
    let entries: unknown[];
    try {
      entries = readDetails(form.authorization_details);
    } catch (err) {
      if (err instanceof OAuthError) throw details('DETAILS_MALFORMED', err.description);
      throw err;
    }
    const requested = detailsOf(entries);
    const held = detailsOf(subject.claims.authorization_details);
    if (!requested.ok) throw details('DETAILS_MALFORMED', requested.detail);
    if (!held.ok) throw grant(held.code, 'the subject_token\'s authorization_details cannot be read');
    const targets = requested.details.map((d) => ({ uid: d.resource ?? d.resourceIn! }));
    let entities;
    try {
      entities = entitiesFor(registry, targets, undefined);
    } catch (err) {
      if (isLeashError(err)) throw details('DETAILS_MALFORMED', err.message);
      throw err;
    }
    const missing = uncoveredPair(held.details, requested.details, entities);
    if (missing) throw details('DETAILS_BEYOND_SUBJECT_TOKEN', `the subject_token does not cover ${missing.action} on ${entityKey(missing.target)}; the request is refused whole, never narrowed`);
    try {
      checkCeiling(policies, registry, B, child.version, entries);
    } catch (err) {
      if (err instanceof OAuthError) throw details('DETAILS_BEYOND_CEILING', `${err.description} (the sub-agent's ceiling)`);
      throw err;
    }

    // 5. The token: the human as sub, B acting, A's chain above it; never outliving A's token.
    const audience = this.audienceOf(form.resource);
    const iat = Math.floor(now.getTime() / 1000);
    const exp = Math.min(iat + Math.min(ACCESS_TOKEN_SECONDS, B.credentials!.maxTokenLifetimeSeconds), subject.claims.exp!);
    const parentAct = subject.claims.act ?? { sub: A.id };
    const claims = {
      iss: this.deps.issuer, sub: human, aud: audience, client_id: A.id, iat, exp, jti: randomUUID(), act: { sub: B.id, act: parentAct }, authorization_details: entries,
    };
    const token = await this.deps.signer.sign(claims, now);
    if (token === null) throw new OAuthError('temporarily_unavailable', 'this node has no signing key it may use right now');
    if (token.length > MAX_TOKEN_CHARS) throw details('DETAILS_MALFORMED', 'authorization_details is too large for a token');
    out.issued = { jti: claims.jti, exp };
    return { access_token: token, token_type: 'Bearer', expires_in: Math.max(0, exp - iat), authorization_details: entries, issued_token_type: ACCESS_TOKEN_TYPE };
  }

  /**
   * The exchange as a decision: principal A, `delegate`, resource B (null: the actor token did
   * not authenticate), layer `delegation`. Never a token: the subject token's identifying claims only.
   */
  private async record(r: ExchangeRecord, now: Date, code: string | null): Promise<void> {
    const { registry } = this.deps;
    const request = {
      kind: EXCHANGE_RECORD_KIND,
      subject: { type: 'Agent', id: r.parent }, action: { name: DELEGATE_ACTION }, resource: r.child === null ? null : { type: 'Agent', id: r.child },
      context: { requested: r.requested, subjectToken: r.subject, ...(r.issued ? { issued: r.issued } : {}) },
    };
    try {
      await this.deps.decisions.record({
        id: randomUUID(), nodeId: this.deps.nodeId, at: now, request, decision: code === null, layer: DELEGATION_LAYER, code, reasons: [...r.reasons].sort(),
        policyVersion: r.policyVersion ?? this.deps.policies()?.version ?? 0, logPosition: registry.position,
      });
    } catch (err) {
      this.deps.log({ err: (err as Error).message }, 'recording a token exchange failed');
      throw new OAuthError('temporarily_unavailable', 'the exchange could not be recorded durably, so it is not given');
    }
  }

  /** The assertion's jti, recorded once across the cluster; a second use is a replay. */
  private async claim(agentId: string, jti: string, until: Date, now: Date): Promise<void> {
    let first: boolean;
    try {
      first = await claimAssertionJti(this.deps.db, agentId, jti, until, now);
    } catch (err) {
      this.deps.log({ err: (err as Error).message }, 'recording a client assertion\'s jti failed');
      throw new OAuthError('temporarily_unavailable', 'the client assertion could not be recorded');
    }
    if (!first) throw new OAuthError('invalid_client', 'this client assertion (its jti) has been used before');
    if (now.getTime() - this.prunedAt >= PRUNE_EVERY_MS) {
      this.prunedAt = now.getTime();
      pruneAssertionJtis(this.deps.db, now).catch((err: Error) => this.deps.log({ err: err.message }, 'pruning expired client assertion jtis failed'));
    }
  }

  /** RFC 8707: an absolute URI without a fragment becomes `aud`; none, the default audience. */
  private audienceOf(resource: string | undefined): string {
    const fallback = this.deps.defaultAudience;
    if (resource === undefined || resource === fallback) return fallback;
    const bad = () => new OAuthError('invalid_target', 'resource must be an absolute URI without a fragment');
    if (resource.length > MAX_RESOURCE_CHARS || /[\s\x00-\x1f\x7f]/.test(resource) || resource.includes('#')) throw bad();
    try {
      new URL(resource);
    } catch {
      throw bad();
    }
    return resource;
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

/** The request's `authorization_details`, read as a decision reads a token's (details.ts). */
function readDetails(raw: string | undefined): unknown[] {
  if (raw === undefined) throw new OAuthError('invalid_request', 'authorization_details is required');
  const refuse = (why: string) => new OAuthError('invalid_authorization_details', why);
  if (raw.length > MAX_DETAILS_CHARS) throw refuse(`authorization_details is longer than ${MAX_DETAILS_CHARS} characters`);
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    throw refuse('authorization_details is not JSON');
  }
  const unsafe = findUnsafeValue(value, MAX_DETAILS_DEPTH);
  if (unsafe) throw refuse(`authorization_details ${unsafe.why}`);
  const parsed = detailsOf(value);
  if (!parsed.ok) throw refuse(parsed.detail);
  // The token carries the entries as sent (nothing dropped, nothing added); bounded in bytes too.
  if (Buffer.byteLength(JSON.stringify(value)) > MAX_DETAILS_CHARS) throw refuse(`authorization_details is larger than ${MAX_DETAILS_CHARS} bytes`);
  return value as unknown[];
}

/**
 * Every entry within the agent's ceiling, asked as a decision asks it, with what the registry
 * knows: no request context, and only registered entities (a target's place in a hierarchy
 * the registry does not hold is unknown here; the decision asks again with the PEP's).
 */
function checkCeiling(policies: CompiledPolicySet, registry: RegistryState, agent: AgentRecord, version: number, entries: unknown[]): void {
  const details = detailsOf(entries);
  if (!details.ok) throw new OAuthError('invalid_authorization_details', details.detail);
  const refuse = (why: string) => new OAuthError('invalid_authorization_details', why);
  const A: EntityUid = { type: 'Agent', id: agent.id };
  let entities;
  try {
    entities = entitiesFor(registry, [{ uid: A }, ...details.details.map((d) => ({ uid: d.resource ?? d.resourceIn! }))], undefined);
  } catch (err) {
    if (isLeashError(err)) throw refuse(err.message);
    throw err;
  }
  const found = ceilingOf(policies, agent, version, entities);
  if (!found.ok) throw refuse(`the agent has no ceiling that can be checked (${found.code}), so no entry lies within it`);
  let inside;
  try {
    inside = withinCeiling({ policies, agent, agentVersion: version, ceiling: found.ceiling, details, entities, context: {} });
  } catch (err) {
    if (isLeashError(err)) throw refuse(err.message);
    throw err;
  }
  if (inside.ok) return;
  if (inside.code === 'DETAILS_MALFORMED') throw refuse(inside.errors[0] ?? 'authorization_details names what the schema does not know');
  if (inside.code === 'POLICY_EVALUATION_ERROR') throw refuse('a ceiling policy could not be evaluated for an entry, so it is not shown to lie within the ceiling');
  throw refuse('an entry asks for more than the agent\'s ceiling allows; the request is refused whole, never narrowed');
}
