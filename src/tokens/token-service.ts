import { randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import { detailsOf } from '../authz/details.ts';
import { entitiesFor } from '../authz/engine.ts';
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
import { MAX_TOKEN_CHARS } from './verify.ts';

// POST /oauth/token: an agent authenticates with a client assertion and asks for a token
// that carries the authorization details it names. Every entry must lie within its ceiling:
// one that does not refuses the request, never a narrower token.

export const CLIENT_CREDENTIALS = 'client_credentials';
export const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';

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
}

export class TokenService {
  private prunedAt = 0;

  constructor(private readonly deps: TokenServiceDeps) {}

  /** A token for the request, or an OAuthError saying why not. */
  async issue(form: TokenForm, now = new Date()): Promise<TokenResponse> {
    if (form.grant_type !== CLIENT_CREDENTIALS) {
      throw new OAuthError('unsupported_grant_type', `grant_type must be ${CLIENT_CREDENTIALS}`);
    }
    let ticket: number;
    try {
      ticket = await this.deps.admit();
    } catch {
      throw new OAuthError('temporarily_unavailable', 'this node cannot read the event log right now');
    }
    try {
      return await this.clientCredentials(form, now);
    } finally {
      this.deps.release(ticket);
    }
  }

  private async clientCredentials(form: TokenForm, now: Date): Promise<TokenResponse> {
    const { registry } = this.deps;
    // 1. Who asks: the client assertion, checked against the agent's pins, used once.
    if (form.client_assertion_type !== ASSERTION_TYPE || form.client_assertion === undefined) {
      throw new OAuthError('invalid_client', `client authentication needs client_assertion_type=${ASSERTION_TYPE} and a client_assertion`);
    }
    const assertion = await verifyClientAssertion(form.client_assertion, {
      audiences: [this.deps.issuer, this.deps.tokenEndpoint], agentOf: (id) => registry.agents.get(id), now, clientId: form.client_id,
    });
    if (!assertion.ok) throw new OAuthError('invalid_client', assertion.description);
    await this.claim(assertion.agentId, assertion.jti, assertion.acceptableUntil, now);

    // 2. The agent as the registry has it now (it may have changed while the signature was checked).
    const found = registry.agents.get(assertion.agentId);
    if (!found?.record.credentials) throw new OAuthError('invalid_client', 'no registered agent with pinned keys has this id');
    const { record: agent, version } = found;
    if (agent.status !== 'active') throw new OAuthError('unauthorized_client', `the agent is ${agent.status}; only an active agent gets tokens`);

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
