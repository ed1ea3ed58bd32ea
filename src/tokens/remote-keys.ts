import { createRemoteJWKSet, customFetch, errors, type JWTVerifyGetKey } from 'jose';
import { outboundGet, OUTBOUND_TIMEOUT_MS } from './outbound-fetch.ts';
import { tokenSettings } from './settings.ts';

// Key sets behind an agent's `jwksUri`: fetched through outboundGet, cached per URL by jose
// (which refetches on an unknown `kid`: key rollover), and bounded here.

/** The key set could not be had. `reason` is for the server log; the caller gets one fixed text. */
export class KeysUnavailable extends Error {
  override readonly name = 'KeysUnavailable';
  constructor(readonly reason: string) {
    super('the agent\'s JWKS could not be fetched');
  }
}

/** How long fetched keys are trusted; also how long an unused URL's entry is worth keeping. */
const KEYS_MAX_AGE_MS = 10 * 60_000;
export const MAX_REMOTE_KEY_SETS = 1_000;

/** By URL, least recently used first (a Map iterates in insertion order; a use re-inserts). */
const sets = new Map<string, { keys: JWTVerifyGetKey; usedAt: number }>();

export function remoteKeys(jwksUri: string): JWTVerifyGetKey {
  const now = Date.now();
  const hit = sets.get(jwksUri);
  if (hit) {
    sets.delete(jwksUri);
    hit.usedAt = now;
    sets.set(jwksUri, hit);
    return hit.keys;
  }
  // An entry unused for longer than its keys stay fresh would refetch on its next use anyway:
  // dropping it costs nothing. That is how the URLs no agent uses any more (rotated away,
  // retired agents) leave; the bound stops a flood of registrations from growing it past
  // MAX_REMOTE_KEY_SETS meanwhile.
  for (const [url, entry] of sets) {
    if (entry.usedAt + KEYS_MAX_AGE_MS > now && sets.size < MAX_REMOTE_KEY_SETS) break;
    sets.delete(url);
  }
  const entry = { keys: guarded(jwksUri), usedAt: now };
  sets.set(jwksUri, entry);
  return entry.keys;
}

/** How many URLs have a cached key set (for tests and metrics). */
export const remoteKeySetCount = (): number => sets.size;

/** How long a failed fetch is remembered: decisions in that time fail at once, the same way. */
export const FAILURE_COOLDOWN_MS = 5_000;

function guarded(jwksUri: string): JWTVerifyGetKey {
  // Keys are cached for 10 minutes; an unknown kid refetches at most every 5 s (rollover
  // without letting random kids hammer the identity provider). The settings are read at each
  // fetch, so a URL cached under one setting never skips the checks of another.
  const remote = createRemoteJWKSet(new URL(jwksUri), {
    cacheMaxAge: KEYS_MAX_AGE_MS,
    cooldownDuration: 5_000,
    timeoutDuration: OUTBOUND_TIMEOUT_MS,
    [customFetch]: (url, init) => outboundGet(url, init, { allowPrivateUrls: tokenSettings().allowPrivateUrls }),
  });
  // A key set that could not be fetched is not asked for again for a while: a batch of tokens
  // for an unreachable URL costs one fetch, not one per item (each up to the timeout).
  let failedUntil = 0;
  let lastReason = '';
  return async (header, token) => {
    if (Date.now() < failedUntil) throw new KeysUnavailable(lastReason);
    try {
      return await remote(header, token);
    } catch (err) {
      // A key set that was had but holds no key for this token: the token's problem.
      if (err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWKSMultipleMatchingKeys) throw err;
      // Anything else (refused address, DNS, connection, timeout, status, size, not JSON, not
      // a JWKS, a key in it that does not import) reads the same to the caller, so the answers
      // cannot be used to map what the node can reach. The log keeps the reason.
      const reason = err instanceof Error ? err.message : String(err);
      let host = '';
      try {
        host = new URL(jwksUri).host; // never the path or query: they may carry tokens
      } catch {
        // a URL registered before the checks: nothing to name
      }
      tokenSettings().log({ jwksHost: host, reason }, 'an agent\'s JWKS could not be fetched');
      failedUntil = Date.now() + FAILURE_COOLDOWN_MS;
      lastReason = reason;
      throw new KeysUnavailable(reason);
    }
  };
}
