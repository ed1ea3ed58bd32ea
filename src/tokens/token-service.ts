import { randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { DecisionLog } from '../audit/decision-log.ts';
import { DecisionCaches } from '../authz/decision-caches.ts';
import type { CompiledPolicySet } from '../authz/policy-set.ts';
import type { AgentRecord } from '../registry/agent.ts';
import type { RegistryState, RegistryView } from '../registry/registry-view.ts';
import { claimAssertionJti, pruneAssertionJtis } from '../store/assertion-jtis.ts';
import type { Database } from '../store/events.table.ts';
import { ASSERTION_TYPE, verifyClientAssertion } from './client-assertion.ts';
import { ACCESS_TOKEN_SECONDS, type NodeSigner } from './node-signer.ts';
import { OAuthError } from './oauth-error.ts';
import { checkCeiling, readDetails } from './requested-details.ts';
import { exchange, refuseInactiveClient, type ACCESS_TOKEN_TYPE, type ExchangeParty } from './token-exchange.ts';
import { MAX_TOKEN_CHARS, type LeashTokens } from './verify.ts';

// POST /oauth/token: an agent authenticates with a client assertion and asks for a token
// that carries the authorization details it names. Every entry must lie within its ceiling:
// one that does not refuses the request, never a narrower token.

export const CLIENT_CREDENTIALS = 'client_credentials';
export const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';

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
  /** The registry, and who holds each grant (for a grant's token exchange). */
  registry: RegistryState & Pick<RegistryView, 'grantHolder'>;
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

/** An agent whose assertion authenticated it, as the registry has it now. */
export interface Authenticated {
  record: AgentRecord;
  version: number;
}

export class TokenService implements ExchangeParty {
  private prunedAt = 0;
  /**
   * Ceiling verdicts, as a decision remembers them: an agent asking again for what it asked
   * before (a token per task, the same kind of task) is not asked of Cedar again. Keyed by
   * every input the check reads (policy set, agent version, entities), bounded.
   */
  readonly caches = new DecisionCaches();

  constructor(readonly deps: TokenServiceDeps) {}

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
      return form.grant_type === TOKEN_EXCHANGE ? await exchange(this, form, now) : await this.clientCredentials(form, now);
    } finally {
      this.deps.release(ticket);
    }
  }

  /** A client assertion (the client's, or a token exchange's actor token), checked against the agent's pins and used once. */
  async authenticate(assertionValue: string, now: Date, clientId?: string): Promise<Authenticated> {
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

  /** Who asks: the client assertion (RFC 7523 §2.2), whatever the agent's status. */
  async authenticateClient(form: TokenForm, now: Date): Promise<Authenticated> {
    if (form.client_assertion_type !== ASSERTION_TYPE || form.client_assertion === undefined) {
      throw new OAuthError('invalid_client', `client authentication needs client_assertion_type=${ASSERTION_TYPE} and a client_assertion`);
    }
    return this.authenticate(form.client_assertion, now, form.client_id);
  }

  /** Who asks, authenticated; the agent must be active. */
  async client(form: TokenForm, now: Date): Promise<Authenticated> {
    const found = await this.authenticateClient(form, now);
    refuseInactiveClient(found);
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
    checkCeiling(policies, registry, agent, version, entries, this.caches);

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
  audienceOf(resource: string | undefined): string {
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

