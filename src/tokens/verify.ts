import { createLocalJWKSet, decodeProtectedHeader, errors, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import type { AgentRecord, CredentialPins } from '../registry/agent.ts';
import { readActChain } from './act-chain.ts';
import { KeysUnavailable, remoteKeys } from './remote-keys.ts';
import { tokenSettings } from './settings.ts';
import { VerifiedTokenCache } from './token-cache.ts';

/** Who acted for whom, for showing a recorded token (decisions use readActChain's strict reading). */
export { actors } from './act-chain.ts';

// The only place that verifies JWTs. Every way a token can fail has its own stable code;
// jose's ERR_JWT_* / ERR_JWS_* codes are mapped here and nowhere else.

export type TokenRejection =
  | 'TOKEN_MISSING'
  | 'TOKEN_MALFORMED'
  | 'TOKEN_ALG_NOT_ALLOWED'
  | 'TOKEN_UNKNOWN_KEY'
  | 'TOKEN_BAD_SIGNATURE'
  | 'TOKEN_EXPIRED'
  | 'TOKEN_MISSING_EXP'
  | 'TOKEN_MISSING_IAT'
  | 'TOKEN_NOT_YET_VALID'
  | 'TOKEN_WRONG_ISSUER'
  | 'TOKEN_WRONG_AUDIENCE'
  | 'TOKEN_LIFETIME_TOO_LONG'
  /** `exp` before `iat`: a token that claims to end before it begins is not a token of any lifetime. */
  | 'TOKEN_LIFETIME_INVALID'
  | 'TOKEN_ISSUED_BEFORE_ROTATION'
  | 'TOKEN_SUBJECT_MISMATCH'
  /** Every way of not getting a `jwksUri`'s keys, one code and one detail (see remote-keys.ts). */
  | 'TOKEN_KEYS_UNAVAILABLE'
  /** More agents in the `act` chain than LEASH_MAX_DELEGATION_DEPTH (see act-chain.ts for what is counted). */
  | 'DELEGATION_TOO_DEEP'
  | 'AGENT_UNKNOWN'
  | 'AGENT_NOT_ACTIVE';

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
    }
  /** `claims` when the signature checked out and a later check refused (the decision log keeps them). */
  | { ok: false; code: TokenRejection; detail: string; claims?: JWTPayload & Record<string, unknown>; agentVersion?: number };

type Rejected = Extract<TokenCheck, { ok: false }>;
const reject = (code: TokenRejection, detail: string): Rejected => ({ ok: false, code, detail });

/** The same words for every failure to get the keys: the caller learns nothing of the network behind the URL. */
const KEYS_UNAVAILABLE_DETAIL = 'the agent\'s JWKS could not be fetched';

/** Inline key sets, per pins object: jose imports each key once per set, not per token. */
const localSets = new WeakMap<object, JWTVerifyGetKey>();

function keysFor(pins: CredentialPins): JWTVerifyGetKey {
  if (pins.jwks) {
    let set = localSets.get(pins.jwks);
    if (!set) localSets.set(pins.jwks, (set = createLocalJWKSet(pins.jwks as Parameters<typeof createLocalJWKSet>[0])));
    return set;
  }
  return remoteKeys(pins.jwksUri!);
}

function fromJose(err: unknown): Rejected {
  const e = err as { code?: string; claim?: string; reason?: string; message?: string };
  switch (e.code) {
    case 'ERR_JWT_EXPIRED':
      return reject('TOKEN_EXPIRED', 'the token has expired');
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      if (e.claim === 'exp') return reject('TOKEN_MISSING_EXP', 'the token has no usable exp claim');
      // jose's reason `invalid`: the claim is there but not a number. That is a malformed
      // token, not one from the future (jose only checks iat's time with maxTokenAge, unused).
      if (e.claim === 'iat') {
        if (e.reason === 'missing') return reject('TOKEN_MISSING_IAT', 'the token has no iat claim');
        return e.reason === 'invalid' ? reject('TOKEN_MALFORMED', 'iat is not a number') : reject('TOKEN_NOT_YET_VALID', 'the token is issued in the future');
      }
      if (e.claim === 'nbf') return e.reason === 'invalid' ? reject('TOKEN_MALFORMED', 'nbf is not a number') : reject('TOKEN_NOT_YET_VALID', 'the token is not valid yet (nbf)');
      if (e.claim === 'iss') return reject('TOKEN_WRONG_ISSUER', 'the token is from another issuer');
      if (e.claim === 'aud') return reject('TOKEN_WRONG_AUDIENCE', 'the token is for another audience');
      return reject('TOKEN_MALFORMED', `claim ${e.claim} failed: ${e.reason}`);
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
    case 'ERR_JOSE_NOT_SUPPORTED':
      return reject('TOKEN_ALG_NOT_ALLOWED', 'the token\'s algorithm is not among the agent\'s pinned algorithms');
    case 'ERR_JWKS_NO_MATCHING_KEY':
    case 'ERR_JWKS_MULTIPLE_MATCHING_KEYS':
      return reject('TOKEN_UNKNOWN_KEY', 'no pinned key matches the token\'s kid and algorithm');
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
      return reject('TOKEN_BAD_SIGNATURE', 'the signature does not verify');
    case 'ERR_JWKS_TIMEOUT':
    case 'ERR_JWKS_INVALID':
      return reject('TOKEN_KEYS_UNAVAILABLE', KEYS_UNAVAILABLE_DETAIL);
    default:
      return reject('TOKEN_MALFORMED', 'the token is not a valid JWS compact JWT');
  }
}

export type AgentLookup = (id: string) => { record: AgentRecord; version: number } | undefined;

/** How a decision checks its subject's token: live, the JWT itself; in replay, what the log kept of it. */
export type TokenVerifier = (token: unknown, subjectId: string, agentOf: AgentLookup, now: Date, cache?: VerifiedTokenCache) => Promise<TokenCheck>;

type Verified = { ok: true; claims: JWTPayload & Record<string, unknown> } | Rejected;

/**
 * Verifies an agent's bearer JWT against the agent's pins (SPEC §3 layer 1): signature,
 * `iss`, `aud`, `alg` in the allow-list, `exp`/`nbf` with leeway, `exp` not before `iat`,
 * lifetime ≤ the maximum, a well-formed `act` chain within LEASH_MAX_DELEGATION_DEPTH,
 * issued after the last rotation or revocation, naming `subjectId` as the acting agent,
 * and the agent `active`. `agentOf` looks the agent up in the registry.
 */
export const verifyAgentToken: TokenVerifier = async (token, subjectId, agentOf, now, cache) => {
  if (typeof token !== 'string' || token.length === 0) return reject('TOKEN_MISSING', 'subject.properties.token is required for an agent');
  if (token.length > 16_384) return reject('TOKEN_MALFORMED', 'the token is too long');
  return checkAgentToken(subjectId, agentOf, now, async (pins, agentId, version) => {
    const cacheKey = cache ? VerifiedTokenCache.key(token, agentId, version) : '';
    const cached = cache?.get(cacheKey, now.getTime());
    if (cached) return { ok: true, claims: cached };
    const verified = await verifySignatureAndClaims(token, pins, now);
    if (verified.ok && cache) cache.set(cacheKey, verified.claims, (verified.claims.exp! + pins.clockSkewSeconds) * 1000);
    return verified;
  });
};

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
    if (typeof claims !== 'object' || claims === null) {
      return reject((recordedCode ?? 'TOKEN_MALFORMED') as TokenRejection, 'as recorded: the token was refused before its claims could be trusted');
    }
    return checkAgentToken(subjectId, agentOf, now, async () => ({ ok: true, claims: claims as JWTPayload & Record<string, unknown> }));
  };
}

/** The expensive part, the one the cache saves: header, signature and registered claims. */
async function verifySignatureAndClaims(token: string, pins: CredentialPins, now: Date): Promise<Verified> {
  let alg: unknown;
  try {
    alg = decodeProtectedHeader(token).alg;
  } catch {
    return reject('TOKEN_MALFORMED', 'the token header cannot be decoded');
  }
  if (typeof alg !== 'string' || !pins.algorithms.includes(alg)) {
    return reject('TOKEN_ALG_NOT_ALLOWED', `alg ${String(alg)} is not pinned for this agent`);
  }

  let claims: JWTPayload & Record<string, unknown>;
  try {
    const verified = await jwtVerify(token, keysFor(pins), {
      issuer: pins.issuer,
      audience: pins.audience,
      algorithms: pins.algorithms,
      clockTolerance: pins.clockSkewSeconds,
      requiredClaims: ['exp', 'iat'],
      currentDate: now,
    });
    claims = verified.payload as JWTPayload & Record<string, unknown>;
  } catch (err) {
    // remoteKeys turns every failure to get the keys into KeysUnavailable (and logs why);
    // anything else that is not a JOSE error is the keys failing too, never the token.
    if (err instanceof KeysUnavailable || !(err instanceof errors.JOSEError)) return reject('TOKEN_KEYS_UNAVAILABLE', KEYS_UNAVAILABLE_DETAIL);
    return fromJose(err);
  }
  return { ok: true, claims };
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
  return { ok: true, claims, actingAgent: acting, onBehalfOf, chain, standing, agentVersion };
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
