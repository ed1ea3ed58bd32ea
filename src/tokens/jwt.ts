import { createLocalJWKSet, decodeProtectedHeader, errors, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import type { CredentialPins } from '../registry/agent.ts';
import { KeysUnavailable, remoteKeys } from './remote-keys.ts';

// The only place that verifies JWTs (an agent's tokens, Leash's own, client assertions).
// Every way a token can fail has its own stable code; jose's ERR_JWT_* / ERR_JWS_* codes are
// mapped here and nowhere else.

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
  /** A Leash token whose jti was revoked (POST /oauth/revoke). */
  | 'TOKEN_REVOKED'
  /** Every way of not getting a `jwksUri`'s keys, one code and one detail (see remote-keys.ts). */
  | 'TOKEN_KEYS_UNAVAILABLE'
  /** More agents in the `act` chain than LEASH_MAX_DELEGATION_DEPTH (see act-chain.ts for what is counted). */
  | 'DELEGATION_TOO_DEEP'
  | 'AGENT_UNKNOWN'
  | 'AGENT_NOT_ACTIVE';

/** A refusal; past the signature step, with the claims and the agent version that decided (see verify.ts). */
export type Rejected = { ok: false; code: TokenRejection; detail: string; claims?: JWTPayload & Record<string, unknown>; agentVersion?: number };
export const reject = (code: TokenRejection, detail: string): Rejected => ({ ok: false, code, detail });

export type Verified = { ok: true; claims: JWTPayload & Record<string, unknown> } | Rejected;

/** The same words for every failure to get the keys: the caller learns nothing of the network behind the URL. */
const KEYS_UNAVAILABLE_DETAIL = 'the agent\'s JWKS could not be fetched';

/** Inline key sets, per pins object: jose imports each key once per set, not per token. */
const localSets = new WeakMap<object, JWTVerifyGetKey>();

/** The keys an agent pinned: its inline JWKS, or the key set behind its `jwksUri`. */
export function pinnedKeys(pins: CredentialPins): JWTVerifyGetKey {
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
      if (e.claim === 'sub') return reject('TOKEN_SUBJECT_MISMATCH', 'the token\'s sub is not the expected one');
      return reject('TOKEN_MALFORMED', `claim ${e.claim} failed: ${e.reason}`);
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
    case 'ERR_JOSE_NOT_SUPPORTED':
      return reject('TOKEN_ALG_NOT_ALLOWED', 'the token\'s algorithm is not among the accepted algorithms');
    case 'ERR_JWKS_NO_MATCHING_KEY':
    case 'ERR_JWKS_MULTIPLE_MATCHING_KEYS':
      return reject('TOKEN_UNKNOWN_KEY', 'no accepted key matches the token\'s kid and algorithm');
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
      return reject('TOKEN_BAD_SIGNATURE', 'the signature does not verify');
    case 'ERR_JWKS_TIMEOUT':
    case 'ERR_JWKS_INVALID':
      return reject('TOKEN_KEYS_UNAVAILABLE', KEYS_UNAVAILABLE_DETAIL);
    default:
      return reject('TOKEN_MALFORMED', 'the token is not a valid JWS compact JWT');
  }
}

/** What a JWT must satisfy before its claims are trusted: keys, algorithms and registered claims. */
export interface JwtCheck {
  keys: JWTVerifyGetKey;
  algorithms: readonly string[];
  issuer: string;
  /** Absent: any audience (but `aud` must be there when `requiredClaims` says so). */
  audience?: string | string[];
  subject?: string;
  clockSkewSeconds: number;
  requiredClaims: string[];
  /** The header's `typ` must be exactly this. */
  typ?: string;
}

/** The expensive part, the one the cache saves: header, signature and registered claims. */
export async function verifyJwt(token: string, check: JwtCheck, now: Date): Promise<Verified> {
  let alg: unknown;
  try {
    alg = decodeProtectedHeader(token).alg;
  } catch {
    return reject('TOKEN_MALFORMED', 'the token header cannot be decoded');
  }
  if (typeof alg !== 'string' || !check.algorithms.includes(alg)) {
    return reject('TOKEN_ALG_NOT_ALLOWED', `alg ${String(alg)} is not among the accepted algorithms`);
  }

  let claims: JWTPayload & Record<string, unknown>;
  try {
    const verified = await jwtVerify(token, check.keys, {
      issuer: check.issuer,
      ...(check.audience === undefined ? {} : { audience: check.audience }),
      ...(check.subject === undefined ? {} : { subject: check.subject }),
      ...(check.typ === undefined ? {} : { typ: check.typ }),
      algorithms: [...check.algorithms],
      clockTolerance: check.clockSkewSeconds,
      requiredClaims: check.requiredClaims,
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

