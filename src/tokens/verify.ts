import { decodeJwt, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import type { AgentRecord, CredentialPins } from '../registry/agent.ts';
import { readActChain } from './act-chain.ts';
import { pinnedKeys, reject, verifyJwt, type JwtCheck, type TokenRejection, type Verified } from './jwt.ts';
import { tokenSettings } from './settings.ts';
import { VerifiedTokenCache } from './token-cache.ts';

/** Who acted for whom, for showing a recorded token (decisions use readActChain's strict reading). */
export { actors } from './act-chain.ts';

export type { TokenRejection } from './jwt.ts';

// An agent's bearer token at a decision: the JWT step (jwt.ts) with the agent's pins or
// Leash's own keys, then the registry's checks (lifecycle, rotation, delegation).

export type TokenCheck =
  | {
      ok: true;
      claims: JWTPayload & Record<string, unknown>;
      actingAgent: string;
      onBehalfOf: string | null;
      chain: string[];
      /** `grace`: revoked gracefully, a token from before the revocation, within the grace period; `quarantined`: decided, then denied. */
      standing: 'active' | 'grace' | 'quarantined';
      /** The acting agent's version whose state decided (0: not registered). */
      agentVersion: number;
      /**
       * Issued by Leash (its keys checked it), not signed by the agent: its `iss` is not the
       * agent's pinned issuer, and a token of the agent's own never carries another `iss`.
       * (An agent pinned to Leash's own issuer has no tokens of its own: all of its count.)
       */
      leashIssued: boolean;
    }
  /** `claims` when the signature checked out and a later check refused (the decision log keeps them). */
  | { ok: false; code: TokenRejection; detail: string; claims?: JWTPayload & Record<string, unknown>; agentVersion?: number };

type Rejected = Extract<TokenCheck, { ok: false }>;

export type AgentLookup = (id: string) => { record: AgentRecord; version: number } | undefined;

/** How a decision checks its subject's token: live, the JWT itself; in replay, what the log kept of it. */
export type TokenVerifier = (token: unknown, subjectId: string, agentOf: AgentLookup, now: Date, cache?: VerifiedTokenCache) => Promise<TokenCheck>;

/** The longest token the decision API reads (and so the longest Leash issues). */
export const MAX_TOKEN_CHARS = 16_384;

/**
 * Leash's own access tokens (issued at /oauth/token): the issuer they carry and the keys of
 * every node (the JWKS projection). A token with this `iss` is checked against these keys
 * only, whatever the agent pinned: no agent can sign as Leash.
 */
export interface LeashTokens {
  issuer: string;
  keys: JWTVerifyGetKey;
  /** Whether this jti was revoked (POST /oauth/revoke); asked on every use, cached verification or not. */
  revoked?: (jti: string, nowMs: number) => boolean;
}

/**
 * Verifies an agent's bearer JWT (SPEC §3 layer 1): signature, `iss`, `aud`, `alg` in the
 * allow-list, `exp`/`nbf` with leeway, `exp` not before `iat`, lifetime ≤ the maximum, a
 * well-formed `act` chain within LEASH_MAX_DELEGATION_DEPTH, issued after the last rotation or
 * revocation, naming `subjectId` as the acting agent, and the agent `active`. `agentOf` looks
 * the agent up in the registry. The signature and the registered claims are checked against
 * the agent's pins, or, for a token Leash issued (`leash`), against Leash's keys (see
 * `leashCheck`); everything after that is the same for both.
 */
export function tokenVerifier(leash: LeashTokens | null): TokenVerifier {
  return async (token, subjectId, agentOf, now, cache) => {
    if (typeof token !== 'string' || token.length === 0) return reject('TOKEN_MISSING', 'subject.properties.token is required for an agent');
    if (token.length > MAX_TOKEN_CHARS) return reject('TOKEN_MALFORMED', 'the token is too long');
    return checkAgentToken(subjectId, agentOf, now, async (pins, agentId, version) => {
      const cacheKey = cache ? VerifiedTokenCache.key(token, agentId, version) : '';
      const cached = cache?.get(cacheKey, now.getTime());
      if (cached) return notRevoked(leash, cached, now);
      const check = leash && issuerOf(token) === leash.issuer ? leashCheck(leash, pins) : pinnedCheck(pins);
      const verified = await verifyJwt(token, check, now);
      if (verified.ok && cache) cache.set(cacheKey, verified.claims, (verified.claims.exp! + pins.clockSkewSeconds) * 1000, token.length);
      return verified.ok ? notRevoked(leash, verified.claims, now) : verified;
    });
  };
}

/**
 * A Leash token whose jti was revoked is refused, with its claims kept for the record. Only
 * Leash's own tokens: verified claims carry Leash's issuer exactly when Leash's keys checked
 * them (`issuerOf` chose the keys by it), and only their jtis are Leash's to revoke.
 */
function notRevoked(leash: LeashTokens | null, claims: JWTPayload & Record<string, unknown>, now: Date): Verified {
  if (leash?.revoked && claims.iss === leash.issuer && typeof claims.jti === 'string' && leash.revoked(claims.jti, now.getTime())) {
    return { ...reject('TOKEN_REVOKED', 'this token has been revoked'), claims };
  }
  return { ok: true, claims };
}

/**
 * A token Leash issued, and nothing else: its `iss` must be Leash's and it is checked against
 * Leash's keys only, then as a decision checks it (the agent `subjectId` acting, live, the
 * `act` chain well formed and within LEASH_MAX_DELEGATION_DEPTH). The token endpoint asks this
 * of a token-exchange's subject token.
 */
export async function verifyLeashToken(token: string, leash: LeashTokens, subjectId: string, agentOf: AgentLookup, now: Date): Promise<TokenCheck> {
  if (token.length === 0 || token.length > MAX_TOKEN_CHARS) return reject('TOKEN_MALFORMED', 'the token is missing or too long');
  const issuer = issuerOf(token);
  if (issuer === NOT_A_JWT) return reject('TOKEN_MALFORMED', 'the token is not a JWT');
  if (issuer !== leash.issuer) return reject('TOKEN_WRONG_ISSUER', 'the token was not issued by Leash');
  return checkAgentToken(subjectId, agentOf, now, async (pins) => {
    const verified = await verifyJwt(token, leashCheck(leash, pins), now);
    return verified.ok ? notRevoked(leash, verified.claims, now) : verified;
  });
}

/** Tokens checked against the agent's pins only (tests, and callers without Leash's keys). */
export const verifyAgentToken: TokenVerifier = tokenVerifier(null);

const NOT_A_JWT = Symbol('not a JWT');

/** The unverified `iss`, to choose the keys by: whatever it says, the signature then decides. */
function issuerOf(token: string): unknown {
  try {
    return decodeJwt(token).iss;
  } catch {
    return NOT_A_JWT;
  }
}

const pinnedCheck = (pins: CredentialPins): JwtCheck => ({
  keys: pinnedKeys(pins), algorithms: pins.algorithms, issuer: pins.issuer, audience: pins.audience, clockSkewSeconds: pins.clockSkewSeconds, requiredClaims: ['exp', 'iat'],
});

/**
 * A Leash access token (RFC 9068): ES256 by a key in Leash's JWKS, `typ: at+jwt`, Leash's
 * issuer, and `aud`, `jti` present. Its audience is the resource it was issued for (RFC 8707),
 * which the resource server checks; the agent's leeway and lifetime bound apply as to its own
 * tokens (the lifetime in `checkLifecycle`).
 */
const leashCheck = (leash: LeashTokens, pins: CredentialPins): JwtCheck => ({
  keys: leash.keys, algorithms: ['ES256'], issuer: leash.issuer, clockSkewSeconds: pins.clockSkewSeconds, requiredClaims: ['exp', 'iat', 'aud', 'jti'], typ: 'at+jwt',
});

/**
 * The registry's part around the signature step: the agent must exist with pins; then its
 * lifecycle, read after the (asynchronous) signature step. Should the agent change meanwhile,
 * the check starts again with its new state, so one state decides throughout.
 */
async function checkAgentToken(
  subjectId: string, agentOf: AgentLookup, now: Date, signature: (pins: CredentialPins, agentId: string, version: number) => Promise<Verified>,
): Promise<TokenCheck> {
  for (;;) {
    const found = agentOf(subjectId);
    if (!found) return { ...reject('AGENT_UNKNOWN', 'no such agent'), agentVersion: 0 };
    const agent = found.record;
    if (!agent.credentials) return { ...reject('AGENT_NOT_ACTIVE', `the agent is ${agent.status}`), agentVersion: found.version };
    const verified = await signature(agent.credentials, agent.id, found.version);
    if (agentOf(subjectId) !== found) continue;
    if (!verified.ok) return { ...verified, agentVersion: found.version };
    return checkLifecycle(verified.claims, subjectId, found, now);
  }
}

/**
 * Replay (SPEC §8). The decision log keeps what a token proved, never the token: its claims
 * once the signature and registered claims checked out. With claims, only the signature step
 * is taken from the record; the agent's existence, rotation and standing are decided again
 * against the registry as it was. Without claims the token failed before that: its recorded
 * refusal stands (a signature cannot be checked again without the token).
 */
export function recordedTokenVerifier(recordedCode: string | null): TokenVerifier {
  return async (token, subjectId, agentOf, now) => {
    if (token === undefined) return reject('TOKEN_MISSING', 'subject.properties.token is required for an agent');
    const claims = (token as { claims?: unknown } | null)?.claims;
    // A revoked jti is not part of the registry replay folds: that refusal stands as recorded.
    if (recordedCode === 'TOKEN_REVOKED' && typeof claims === 'object' && claims !== null) {
      return { ...reject('TOKEN_REVOKED', 'as recorded: the token had been revoked'), claims: claims as JWTPayload & Record<string, unknown>, agentVersion: agentOf(subjectId)?.version ?? 0 };
    }
    if (typeof claims !== 'object' || claims === null) {
      return reject((recordedCode ?? 'TOKEN_MALFORMED') as TokenRejection, 'as recorded: the token was refused before its claims could be trusted');
    }
    return checkAgentToken(subjectId, agentOf, now, async () => ({ ok: true, claims: claims as JWTPayload & Record<string, unknown> }));
  };
}

/** The cheap checks, run on every request, cached token or not. */
function checkLifecycle(claims: JWTPayload & Record<string, unknown>, subjectId: string, found: { record: AgentRecord; version: number }, now: Date): TokenCheck {
  const { record: agent, version: agentVersion } = found;
  const pins = agent.credentials!;
  // Past the signature: a refusal keeps the claims, so the decision log (and replay) can show why.
  const refuse = (code: TokenRejection, detail: string): Rejected => ({ ...reject(code, detail), claims, agentVersion });
  const skewMs = pins.clockSkewSeconds * 1000;
  const iatMs = claims.iat! * 1000;
  if (iatMs > now.getTime() + skewMs) return refuse('TOKEN_NOT_YET_VALID', 'the token is issued in the future');
  // Its own code, not TOKEN_MALFORMED: each claim is well formed, they contradict each other
  // (and exp - iat, negative, would pass the lifetime bound below). exp == iat is allowed:
  // zero lifetime, usable only within the clock-skew leeway.
  if (claims.exp! < claims.iat!) return refuse('TOKEN_LIFETIME_INVALID', 'the token expires before it is issued');
  if (claims.exp! - claims.iat! > pins.maxTokenLifetimeSeconds) {
    return refuse('TOKEN_LIFETIME_TOO_LONG', `the token lives longer than ${pins.maxTokenLifetimeSeconds} s`);
  }
  // Who the token is for, read strictly: a malformed or too long `act` chain is refused here,
  // with the claims kept, rather than read as far as it goes.
  const delegation = readActChain(claims, tokenSettings().maxDelegationDepth);
  if (!delegation.ok) return refuse(delegation.code, delegation.detail);
  // An agent that is not live says so, whenever its token was issued.
  const standing = standingOf(agent, claims, now);
  if (!standing) return refuse('AGENT_NOT_ACTIVE', `the agent is ${agent.status}`);
  // Tokens issued before the last authorize, rotation or revocation never verify again.
  // (iat has whole seconds, so the comparison does too.)
  if (agent.tokensNotBefore && claims.iat! < Math.floor(Date.parse(agent.tokensNotBefore) / 1000)) {
    return refuse('TOKEN_ISSUED_BEFORE_ROTATION', 'the token was issued before the agent\'s last rotation or revocation');
  }
  const { acting, onBehalfOf, chain } = delegation;
  if (acting === null || acting !== subjectId) return refuse('TOKEN_SUBJECT_MISMATCH', 'the token\'s acting agent is not subject.id');
  return { ok: true, claims, actingAgent: acting, onBehalfOf, chain, standing, agentVersion, leashIssued: claims.iss !== pins.issuer };
}

/** SPEC §6 modes: besides an active agent, who may still be decided for. */
function standingOf(agent: AgentRecord, claims: JWTPayload, now: Date): 'active' | 'grace' | 'quarantined' | null {
  if (agent.status === 'active') return 'active';
  if (agent.status === 'quarantined') return 'quarantined';
  const r = agent.revocation;
  if (agent.status !== 'revoked' || r?.mode !== 'graceful') return null;
  const revokedAt = Date.parse(r.at);
  // Work already under way (a token issued by the second of the revocation) may finish; nothing new starts.
  const inGrace = now.getTime() < revokedAt + (r.gracePeriodSeconds ?? 0) * 1000 && claims.iat! <= Math.floor(revokedAt / 1000);
  return inGrace ? 'grace' : null;
}
