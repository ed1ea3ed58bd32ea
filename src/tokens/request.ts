import { randomUUID } from 'node:crypto';
import { SignJWT, importJWK, type JWK } from 'jose';
import { ASSERTION_TYPE } from './client-assertion.ts';

// The client side of Leash's token endpoint, for the CLI: a client assertion (RFC 7523) signed
// with the agent's key, sent with the details it asks for; the answer as the server gives it.

export interface TokenRequest {
  /** Leash's base URL (the issuer); the assertion is addressed to its token endpoint. */
  base: string;
  privateJwk: JWK;
  agent: string;
  details: unknown[];
  resource?: string;
}

export type TokenAnswer = { access_token: string; expires_in: number } | { error: string; error_description?: string };

export async function requestToken(r: TokenRequest): Promise<TokenAnswer> {
  const endpoint = new URL('/oauth/token', r.base).toString();
  const alg = r.privateJwk.alg ?? 'ES256';
  const now = Math.floor(Date.now() / 1000);
  const assertion = await new SignJWT({})
    .setProtectedHeader({ alg, ...(r.privateJwk.kid ? { kid: r.privateJwk.kid } : {}) })
    .setIssuer(r.agent)
    .setSubject(r.agent)
    .setAudience(endpoint)
    .setIssuedAt(now)
    .setExpirationTime(now + 60)
    .setJti(randomUUID())
    .sign(await importJWK(r.privateJwk, alg));
  const form = new URLSearchParams({
    grant_type: 'client_credentials', client_assertion_type: ASSERTION_TYPE, client_assertion: assertion, authorization_details: JSON.stringify(r.details),
    ...(r.resource ? { resource: r.resource } : {}),
  });
  const response = await fetch(endpoint, { method: 'POST', body: form });
  const text = await response.text();
  try {
    return JSON.parse(text) as TokenAnswer;
  } catch {
    return { error: `http_${response.status}`, error_description: text.slice(0, 200) };
  }
}
