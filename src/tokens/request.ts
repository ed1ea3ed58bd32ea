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

/** A client assertion: iss = sub = the agent, for the token endpoint, valid for a minute, a fresh jti. */
export function clientAssertion(key: Parameters<SignJWT['sign']>[0], o: { agent: string; endpoint: string; alg: string; kid?: string | undefined }): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({})
    .setProtectedHeader({ alg: o.alg, ...(o.kid ? { kid: o.kid } : {}) })
    .setIssuer(o.agent)
    .setSubject(o.agent)
    .setAudience(o.endpoint)
    .setIssuedAt(now)
    .setExpirationTime(now + 60)
    .setJti(randomUUID())
    .sign(key);
}

/** The client credentials form for an assertion and the details asked for. */
export const clientCredentialsForm = (assertion: string, details: unknown[], resource?: string) => new URLSearchParams({
  grant_type: 'client_credentials', client_assertion_type: ASSERTION_TYPE, client_assertion: assertion, authorization_details: JSON.stringify(details),
  ...(resource ? { resource } : {}),
});

export async function requestToken(r: TokenRequest): Promise<TokenAnswer> {
  const endpoint = new URL('/oauth/token', r.base).toString();
  const alg = r.privateJwk.alg ?? 'ES256';
  const assertion = await clientAssertion(await importJWK(r.privateJwk, alg), { agent: r.agent, endpoint, alg, kid: r.privateJwk.kid });
  const response = await fetch(endpoint, { method: 'POST', body: clientCredentialsForm(assertion, r.details, r.resource) });
  const text = await response.text();
  try {
    return JSON.parse(text) as TokenAnswer;
  } catch {
    return { error: `http_${response.status}`, error_description: text.slice(0, 200) };
  }
}
