import { decodeJwt, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import type { Kysely } from 'kysely';
import { delegationRefusal } from '../authz/token-layer.ts';
import type { FenceResult } from '../cluster/cluster.ts';
import { isLeashError } from '../errors.ts';
import type { RegistryView } from '../registry/registry-view.ts';
import { streamId } from '../registry/streams.ts';
import type { CommandHandler } from '../service/command-handler.ts';
import { claimAssertionJti } from '../store/assertion-jtis.ts';
import type { EventStore } from '../store/event-store.ts';
import type { Database } from '../store/events.table.ts';
import { readActChain } from './act-chain.ts';
import { ASSERTION_TYPE, verifyClientAssertion } from './client-assertion.ts';
import { verifyJwt } from './jwt.ts';
import { OAuthError } from './oauth-error.ts';
import { MAX_CLOCK_SKEW_SECONDS } from './pins.ts';
import { isRevocableJti, revokedTokenAggregate } from './revoked-token-stream.ts';
import type { RevokedTokens } from './revoked-tokens.ts';
import { tokenSettings } from './settings.ts';
import { MAX_TOKEN_CHARS, type TokenVerifier } from './verify.ts';

// POST /oauth/revoke (RFC 7009) and POST /oauth/introspect (RFC 7662) for Leash's own access
// tokens. A revocation is an event on the token's own stream, broadcast and fenced like an
// agent's revocation; introspection asks the decision path's own verification.

type Claims = JWTPayload & Record<string, unknown>;

/** Who asks for a revocation: the operator (its bearer token, checked by the route), or an agent by client assertion. */
export type Revoker = { kind: 'operator' } | { kind: 'agent'; form: Partial<Record<string, string>> };

export interface TokenRevocationDeps {
  issuer: string;
  /** What a client assertion's `aud` may be: the issuer, the token endpoint, the revocation endpoint. */
  assertionAudiences: string[];
  registry: RegistryView;
  revoked: RevokedTokens;
  /** Leash's keys (every node's): a token is revoked only once its signature is Leash's. */
  keys: JWTVerifyGetKey;
  /** The decision path's verifier (`tokenVerifier(leashTokens(…))`): introspection and decisions cannot disagree. */
  verify: TokenVerifier;
  db: Kysely<Database>;
  store: EventStore;
  commands: CommandHandler;
  fence: (position: number) => Promise<FenceResult>;
  admit: () => Promise<number>;
  release: (ticket: number) => void;
  log: (fields: Record<string, unknown>, message: string) => void;
}

export type Introspection = { active: false } | ({ active: true; token_type: 'Bearer' } & Record<string, unknown>);

/** The claims an active token's introspection shows (RFC 7662 §2.2, RFC 9396 §9.1, RFC 8693 `act`). */
const SHOWN = ['iss', 'sub', 'aud', 'client_id', 'iat', 'nbf', 'exp', 'jti', 'authorization_details', 'act'] as const;

export class TokenRevocation {
  constructor(private readonly deps: TokenRevocationDeps) {}

  /**
   * Revokes the token from the moment this resolves, on every live node (the fence); a token
   * that is not a usable Leash token, or is revoked already, is answered the same (RFC 7009
   * §2.2). Returns the fence when something is (or was already) revoked.
   */
  async revoke(form: Partial<Record<string, string>>, by: Revoker, now = new Date()): Promise<FenceResult | null> {
    const token = form.token;
    if (token === undefined || token.length === 0) throw new OAuthError('invalid_request', 'token is required');
    const agent = by.kind === 'agent' ? await this.authenticate(by.form, now) : null;
    const ticket = await this.admitted();
    let position: number | null;
    try {
      const claims = await this.leashClaims(token, now);
      if (claims === null) return null; // not Leash's, badly signed, or expired: nothing anyone accepts
      if (agent !== null && !issuedTo(claims).includes(agent)) {
        throw new OAuthError('unauthorized_client', 'this token was not issued to the authenticated client');
      }
      position = this.deps.revoked.positionOf(claims.jti as string, now.getTime()) ?? null;
      if (position === null) position = await this.append(claims, agent === null ? 'operator' : `agent:${agent}`, now);
    } finally {
      this.deps.release(ticket);
    }
    // From here on no live node accepts the jti (or the ones that did not confirm have stopped trusting their caches).
    return this.deps.fence(position);
  }

  /** RFC 7662: the token's claims while a decision would get past layer `token` with it; otherwise `{active: false}`. */
  async introspect(token: string | undefined, now = new Date()): Promise<Introspection> {
    if (token === undefined || token.length === 0) throw new OAuthError('invalid_request', 'token is required');
    const inactive: Introspection = { active: false };
    if (token.length > MAX_TOKEN_CHARS) return inactive;
    let unverified: Claims;
    try {
      unverified = decodeJwt(token);
    } catch {
      return inactive;
    }
    // Leash's own tokens only: the verifier would check anything else against an agent's pins.
    if (unverified.iss !== this.deps.issuer) return inactive;
    const acting = readActChain(unverified, tokenSettings().maxDelegationDepth);
    if (!acting.ok || acting.acting === null) return inactive;
    const ticket = await this.admitted();
    try {
      const { registry } = this.deps;
      const checked = await this.deps.verify(token, acting.acting, (id) => registry.agents.get(id), now);
      // Quarantined: every decision is a deny. Grace: decisions still allow (and say so), so it is active.
      if (!checked.ok || checked.standing === 'quarantined' || delegationRefusal(checked, registry, now) !== null) return inactive;
      const shown: Record<string, unknown> = {};
      for (const name of SHOWN) if (checked.claims[name] !== undefined) shown[name] = checked.claims[name];
      return { active: true, ...shown, token_type: 'Bearer' };
    } finally {
      this.deps.release(ticket);
    }
  }

  /** The agent a client assertion authenticates (its jti used once, cluster-wide), or invalid_client. */
  private async authenticate(form: Partial<Record<string, string>>, now: Date): Promise<string> {
    if (form.client_assertion_type !== ASSERTION_TYPE || form.client_assertion === undefined) {
      throw new OAuthError('invalid_client', `client authentication needs client_assertion_type=${ASSERTION_TYPE} and a client_assertion, or the operator token`);
    }
    const { registry } = this.deps;
    const assertion = await verifyClientAssertion(form.client_assertion, {
      audiences: this.deps.assertionAudiences, agentOf: (id) => registry.agents.get(id), now, clientId: form.client_id,
    });
    if (!assertion.ok) throw new OAuthError('invalid_client', assertion.description);
    let first: boolean;
    try {
      first = await claimAssertionJti(this.deps.db, assertion.agentId, assertion.jti, assertion.acceptableUntil, now);
    } catch (err) {
      this.deps.log({ err: (err as Error).message }, 'recording a client assertion\'s jti failed');
      throw new OAuthError('temporarily_unavailable', 'the client assertion could not be recorded');
    }
    if (!first) throw new OAuthError('invalid_client', 'this client assertion (its jti) has been used before');
    return assertion.agentId;
  }

  /** Caught up first when this node has reason to doubt its view (the decision API's admission). */
  private async admitted(): Promise<number> {
    try {
      return await this.deps.admit();
    } catch {
      throw new OAuthError('temporarily_unavailable', 'this node cannot read the event log right now');
    }
  }

  /**
   * The claims of a token Leash signed that some node could still accept: Leash's issuer and
   * keys, not past its exp plus its agent's leeway. Null for anything else (RFC 7009: an
   * invalid token is answered 200). A token from another issuer is not Leash's to revoke:
   * refused, so nobody takes a 200 to mean it no longer works.
   */
  private async leashClaims(token: string, now: Date): Promise<Claims | null> {
    if (token.length > MAX_TOKEN_CHARS) return null;
    let iss: unknown;
    try {
      iss = decodeJwt(token).iss;
    } catch {
      return null;
    }
    if (iss !== this.deps.issuer) {
      throw new OAuthError('unsupported_token_type', 'only access tokens Leash issued can be revoked here; revoke the agent or rotate its keys for others');
    }
    const verified = await verifyJwt(token, {
      keys: this.deps.keys, algorithms: ['ES256'], issuer: this.deps.issuer, clockSkewSeconds: MAX_CLOCK_SKEW_SECONDS, requiredClaims: ['exp', 'iat', 'aud', 'jti'], typ: 'at+jwt',
    }, now);
    if (!verified.ok || !isRevocableJti(verified.claims.jti)) return null;
    const { claims } = verified;
    const acting = readActChain(claims, tokenSettings().maxDelegationDepth);
    const skew = (acting.ok && acting.acting !== null && this.deps.registry.agents.get(acting.acting)?.record.credentials?.clockSkewSeconds) || 0;
    if (claims.exp! + Math.max(skew, 0) < now.getTime() / 1000) return null;
    return claims;
  }

  private async append(claims: Claims, revokedBy: string, now: Date): Promise<number> {
    const jti = claims.jti as string;
    try {
      const result = await this.deps.commands.handle(revokedTokenAggregate, jti, { type: 'RevokeToken', data: { jti, exp: claims.exp!, revokedBy }, metadata: { now } }, { now, actor: revokedBy, ...(revokedBy === 'operator' ? { breakGlass: true } : {}) });
      return result.position;
    } catch (err) {
      // Revoked by another call a moment ago (perhaps on another node): fenced at that revocation's position.
      if (!(isLeashError(err) && err.code === 'ALREADY_EXISTS')) throw err;
      const [first] = await this.deps.store.readStream(streamId(revokedTokenAggregate.streamType, jti), 1);
      if (!first) throw err;
      return first.position;
    }
  }
}

/** The agents a token was issued to: the one acting with it, and the client that asked for it (RFC 7009 §2.1). */
function issuedTo(claims: Claims): string[] {
  const acting = readActChain(claims, tokenSettings().maxDelegationDepth);
  return [acting.ok ? acting.acting : null, typeof claims.client_id === 'string' ? claims.client_id : null].filter((a): a is string => a !== null);
}
