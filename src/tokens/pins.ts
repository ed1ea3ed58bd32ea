import { createPublicKey, type JsonWebKey } from 'node:crypto';
import { importJWK, type JWK } from 'jose';
import { LeashError } from '../errors.ts';
import type { CredentialPins } from '../registry/agent.ts';
import { urlProblem } from './outbound-fetch.ts';
import { tokenSettings } from './settings.ts';

/** Asymmetric JWS algorithms an agent may pin. `none` and shared-secret HMAC never. */
export const pinnableAlgorithms = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'] as const;

const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k', 'oth'];

/** The most clock-skew leeway pins may give: a token verifies until its `exp` plus the agent's leeway, at most this. */
export const MAX_CLOCK_SKEW_SECONDS = 300;

/** RSA moduli below this are factorable with means within reach (NIST SP 800-131A: 2048 since 2014). */
export const MIN_RSA_BITS = 2048;

/**
 * Checks what the schema cannot: exactly one key source, public keys only, each usable
 * with one of the pinned algorithms (RSA keys of at least 2048 bits), and a JWKS URL that is
 * https to a host that is not loopback, private or link-local by its very name (a literal
 * address or `localhost`). With LEASH_ALLOW_PRIVATE_URLS such hosts are allowed, and plain
 * http to loopback. (What a host *name* resolves to is checked at each fetch.)
 */
export async function checkPins(pins: CredentialPins): Promise<void> {
  const fail = (message: string, detail: Record<string, unknown> = {}) => new LeashError('INVALID_CREDENTIALS', message, detail);
  if ((pins.jwks === undefined) === (pins.jwksUri === undefined)) throw fail('credentials need exactly one of "jwks" or "jwksUri"');
  if (pins.jwksUri !== undefined) {
    let url: URL;
    try {
      url = new URL(pins.jwksUri);
    } catch {
      throw fail('jwksUri is not a URL');
    }
    const problem = urlProblem(url, tokenSettings().allowPrivateUrls);
    if (problem) throw fail(`jwksUri ${problem}`);
    return;
  }
  for (const [index, jwk] of pins.jwks!.keys.entries()) {
    const secret = PRIVATE_MEMBERS.filter((m) => m in jwk);
    if (secret.length > 0) throw fail(`jwks.keys[${index}] holds private or symmetric key material; pin public keys only`, { key: index });
    const candidates = typeof jwk.alg === 'string' ? [jwk.alg] : pins.algorithms;
    if (typeof jwk.alg === 'string' && !pins.algorithms.includes(jwk.alg)) {
      throw fail(`jwks.keys[${index}] is for ${jwk.alg}, which is not among the pinned algorithms`, { key: index });
    }
    let usable = false;
    for (const alg of candidates) {
      try {
        await importJWK(jwk as JWK, alg);
        usable = true;
        break;
      } catch {
        // try the next pinned algorithm
      }
    }
    if (!usable) throw fail(`jwks.keys[${index}] is not a valid public key for any pinned algorithm`, { key: index });
    const bits = rsaModulusBits(jwk);
    if (bits !== null && bits < MIN_RSA_BITS) {
      throw fail(`jwks.keys[${index}] is an RSA key of ${bits} bits; at least ${MIN_RSA_BITS} are required`, { key: index });
    }
  }
}

/** The modulus size of an RSA public JWK (already known to import), as Node's key object reads it; null for other key types. */
function rsaModulusBits(jwk: Record<string, unknown>): number | null {
  if (jwk.kty !== 'RSA') return null;
  return createPublicKey({ key: jwk as JsonWebKey, format: 'jwk' }).asymmetricKeyDetails?.modulusLength ?? 0;
}
