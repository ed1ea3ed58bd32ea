import { importJWK, type JWK } from 'jose';
import { LeashError } from '../errors.ts';
import type { CredentialPins } from '../registry/agent.ts';

/** Asymmetric JWS algorithms an agent may pin. `none` and shared-secret HMAC never. */
export const pinnableAlgorithms = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'] as const;

const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k', 'oth'];

/**
 * Checks what the schema cannot: exactly one key source, public keys only, each usable
 * with one of the pinned algorithms, and a JWKS URL that is https (http only on loopback).
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
    const loopback = ['localhost', '127.0.0.1', '[::1]'].includes(url.hostname);
    if (url.protocol !== 'https:' && !(url.protocol === 'http:' && loopback)) throw fail('jwksUri must use https');
    if (url.username || url.password) throw fail('jwksUri must not carry credentials');
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
  }
}
