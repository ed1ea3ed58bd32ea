import { decodeJwt } from 'jose';
import { findUnsafeValue } from '../json-limits.ts';
import type { CredentialPins } from '../registry/agent.ts';
import { pinnedKeys, verifyJwt, type TokenRejection } from './jwt.ts';
import type { AgentLookup } from './verify.ts';

// Client authentication at the token endpoint by `private_key_jwt` (RFC 7523 §2.2, §3): the
// agent signs a short-lived JWT with a key in its pins, `iss` = `sub` = its id, for Leash's
// issuer or token endpoint. Whether its `jti` was seen before is the caller's to ask (the
// replay table is cluster-wide); this checks what the JWT itself proves.

export const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

/** An assertion may be valid for at most this long from now (its `exp`), plus the agent's leeway. */
export const MAX_ASSERTION_SECONDS = 300;
export const MAX_ASSERTION_CHARS = 8_192;
export const MAX_JTI_CHARS = 256;

export type AssertionCheck =
  | { ok: true; agentId: string; jti: string; pins: CredentialPins; /** Until when it could be accepted (exp + leeway): how long its jti must be remembered. */ acceptableUntil: Date }
  | { ok: false; description: string };

const refuse = (description: string): AssertionCheck => ({ ok: false, description });

/** Why a JWT was refused, as the client is told it: the code's meaning, never the assertion. */
const because: Partial<Record<TokenRejection, string>> = {
  TOKEN_MALFORMED: 'the client assertion is not a well-formed signed JWT',
  TOKEN_ALG_NOT_ALLOWED: 'the client assertion\'s alg is not among the agent\'s pinned algorithms',
  TOKEN_UNKNOWN_KEY: 'no key pinned for the agent matches the client assertion\'s kid and algorithm',
  TOKEN_BAD_SIGNATURE: 'the client assertion\'s signature does not verify with the agent\'s pinned keys',
  TOKEN_EXPIRED: 'the client assertion has expired',
  TOKEN_MISSING_EXP: 'the client assertion has no exp',
  TOKEN_NOT_YET_VALID: 'the client assertion is not valid yet',
  TOKEN_WRONG_ISSUER: 'the client assertion\'s iss must be the agent id',
  TOKEN_SUBJECT_MISMATCH: 'the client assertion\'s sub must be the agent id',
  TOKEN_WRONG_AUDIENCE: 'the client assertion\'s aud must be the issuer or the token endpoint',
  TOKEN_KEYS_UNAVAILABLE: 'the agent\'s JWKS could not be fetched',
};

/**
 * Checks a client assertion for the agent it names. `audiences`: what its `aud` may be (the
 * issuer, the token endpoint URL). `clientId`: the form's `client_id`, when the client sent
 * one; it must name the same agent.
 */
export async function verifyClientAssertion(assertion: string, o: { audiences: string[]; agentOf: AgentLookup; now: Date; clientId?: string | undefined }): Promise<AssertionCheck> {
  if (assertion.length === 0 || assertion.length > MAX_ASSERTION_CHARS) return refuse('the client assertion is missing or too long');
  let claims: Record<string, unknown>;
  try {
    claims = decodeJwt(assertion);
  } catch {
    return refuse(because.TOKEN_MALFORMED!);
  }
  // Which agent's keys to check it with: the one it names (the signature then decides).
  const agentId = claims.sub;
  if (typeof agentId !== 'string' || agentId.length === 0 || claims.iss !== agentId) return refuse('the client assertion\'s iss and sub must both be the agent id');
  if (o.clientId !== undefined && o.clientId !== agentId) return refuse('client_id does not name the agent the client assertion is for');
  const agent = o.agentOf(agentId)?.record;
  // An unknown agent and one without pins read the same: neither can authenticate.
  if (!agent?.credentials) return refuse('no registered agent with pinned keys has this id');
  const pins = agent.credentials;
  const verified = await verifyJwt(assertion, {
    keys: pinnedKeys(pins), algorithms: pins.algorithms, issuer: agentId, subject: agentId, audience: o.audiences,
    clockSkewSeconds: pins.clockSkewSeconds, requiredClaims: ['exp', 'jti'],
  }, o.now);
  if (!verified.ok) return refuse(because[verified.code] ?? `the client assertion is refused (${verified.code})`);
  const { exp, jti, iat } = verified.claims;
  const nowSeconds = o.now.getTime() / 1000;
  if (exp! > nowSeconds + MAX_ASSERTION_SECONDS + pins.clockSkewSeconds) return refuse(`the client assertion must expire within ${MAX_ASSERTION_SECONDS} s`);
  if (iat !== undefined && (typeof iat !== 'number' || iat > nowSeconds + pins.clockSkewSeconds)) return refuse('the client assertion\'s iat is not a time in the past');
  // (Kept in PostgreSQL text: no NUL, no unpaired surrogate.)
  if (typeof jti !== 'string' || jti.length === 0 || jti.length > MAX_JTI_CHARS || findUnsafeValue(jti)) {
    return refuse(`the client assertion's jti must be a string of 1 to ${MAX_JTI_CHARS} characters`);
  }
  return { ok: true, agentId, jti, pins, acceptableUntil: new Date((exp! + pins.clockSkewSeconds) * 1000) };
}
