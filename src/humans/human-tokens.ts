import { readFileSync } from 'node:fs';
import { createLocalJWKSet, createRemoteJWKSet, type JSONWebKeySet, type JWTVerifyGetKey } from 'jose';
import type { RegistryState } from '../registry/registry-view.ts';
import { reject, verifyJwt, type TokenRejection } from '../tokens/jwt.ts';
import { VerifiedTokenCache } from '../tokens/token-cache.ts';

// People sign in with tokens from the organisation's identity provider, pinned once for the
// deployment as an agent's are pinned per agent: issuer, audience, algorithms and keys. The
// token's `sub` must name a registered human. Admin calls made with such a token are decided
// by Cedar (admin.ts); this module only says who is calling.

export interface HumanPins {
  issuer: string;
  audience: string;
  algorithms: string[];
  /** Where the keys are: the IdP's JWKS URL, or a file holding a JWKS (or one JWK). */
  jwks: { uri: string } | { file: string };
}

/** Clock leeway for human tokens, and the longest lifetime accepted. */
export const HUMAN_CLOCK_SKEW_SECONDS = 30;
export const HUMAN_MAX_TOKEN_SECONDS = 24 * 3600;
export const MAX_HUMAN_TOKEN_CHARS = 16_384;

export type HumanCheck = { ok: true; human: string; exp: number } | { ok: false; code: TokenRejection | 'TOKEN_UNKNOWN_HUMAN'; detail: string };

export type HumanVerifier = (token: string, registry: RegistryState, now: Date) => Promise<HumanCheck>;

/** A JWKS file holds `{"keys": […]}` or a single public JWK (as `leash keys generate` prints it). */
export function readJwksFile(file: string): JSONWebKeySet {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new Error(`LEASH_HUMAN_JWKS_FILE ${file}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : 'not JSON'}`);
  }
  const set = typeof parsed === 'object' && parsed !== null && Array.isArray((parsed as { keys?: unknown }).keys) ? parsed : { keys: [parsed] };
  const keys = (set as { keys: unknown[] }).keys;
  if (keys.length === 0 || keys.some((k) => typeof k !== 'object' || k === null || typeof (k as { kty?: unknown }).kty !== 'string' || 'd' in k)) {
    throw new Error(`LEASH_HUMAN_JWKS_FILE ${file}: not a set of public JWKs (each needs kty, and no private part)`);
  }
  return set as JSONWebKeySet;
}

/**
 * The verifier for the deployment's human tokens. The JWKS URL is the operator's own setting
 * (not a caller's), so it is fetched as configured; jose caches it and refetches on an unknown kid.
 */
export function humanTokenVerifier(pins: HumanPins): HumanVerifier {
  const keys: JWTVerifyGetKey = 'uri' in pins.jwks
    ? createRemoteJWKSet(new URL(pins.jwks.uri), { timeoutDuration: 5_000, cooldownDuration: 30_000 })
    : createLocalJWKSet(readJwksFile(pins.jwks.file));
  const cache = new VerifiedTokenCache();
  const check = { keys, algorithms: pins.algorithms, issuer: pins.issuer, audience: pins.audience, clockSkewSeconds: HUMAN_CLOCK_SKEW_SECONDS, requiredClaims: ['exp', 'iat', 'sub'] };
  return async (token, registry, now) => {
    if (token.length === 0 || token.length > MAX_HUMAN_TOKEN_CHARS) return reject('TOKEN_MALFORMED', 'the token is missing or too long');
    const key = VerifiedTokenCache.key(token, 'human', 0);
    let claims = cache.get(key, now.getTime());
    if (!claims) {
      const verified = await verifyJwt(token, check, now);
      if (!verified.ok) return { ok: false, code: verified.code, detail: verified.detail };
      claims = verified.claims;
      cache.set(key, claims, (claims.exp! + HUMAN_CLOCK_SKEW_SECONDS) * 1000, token.length);
    }
    const { sub, iat, exp } = claims;
    if (iat! * 1000 > now.getTime() + HUMAN_CLOCK_SKEW_SECONDS * 1000) return reject('TOKEN_NOT_YET_VALID', 'the token is issued in the future');
    if (exp! < iat!) return reject('TOKEN_LIFETIME_INVALID', 'the token expires before it is issued');
    if (exp! - iat! > HUMAN_MAX_TOKEN_SECONDS) return reject('TOKEN_LIFETIME_TOO_LONG', `the token lives longer than ${HUMAN_MAX_TOKEN_SECONDS} s`);
    // A person acts for themselves here: a token that says it acts for someone else is not theirs.
    if (claims.act !== undefined) return reject('TOKEN_MALFORMED', 'a human token does not carry act');
    if (typeof sub !== 'string' || !registry.humans.has(sub)) return { ok: false, code: 'TOKEN_UNKNOWN_HUMAN', detail: 'no registered human has this sub' };
    return { ok: true, human: sub, exp: exp! };
  };
}
