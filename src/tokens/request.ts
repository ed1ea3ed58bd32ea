import { randomUUID } from 'node:crypto';
import { SignJWT, importJWK, type JWK } from 'jose';
import { ASSERTION_TYPE } from './client-assertion.ts';

// The client side of Leash's OAuth endpoints, for the CLI: client assertions (RFC 7523) signed
// with an agent's key, a token for the details it asks for, a sub-agent's token by exchange
// (RFC 8693), and introspection (RFC 7662); each answer as the server gives it.

export interface TokenRequest {
  /** Leash's base URL (the issuer); assertions are addressed to its token endpoint. */
  base: string;
  privateJwk: JWK;
  agent: string;
  details: unknown[];
  resource?: string;
}

export interface ExchangeRequest extends TokenRequest {
  /** The client's (the parent agent's) Leash access token. */
  subjectToken: string;
  /** The sub-agent: its id and private key sign the actor token. */
  actor: { agent: string; privateJwk: JWK };
}

export type TokenAnswer = { access_token: string; expires_in: number } | { error: string; error_description?: string };

const tokenEndpoint = (base: string) => new URL('/oauth/token', base).toString();

/** A client assertion: iss = sub = the agent, for the token endpoint, valid for a minute, a fresh jti. */
export function signAssertion(key: Parameters<SignJWT['sign']>[0], o: { agent: string; endpoint: string; alg: string; kid?: string | undefined }): Promise<string> {
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

/** The same, signed with the agent's private JWK for the token endpoint of Leash at `base`. */
export async function clientAssertion(base: string, agent: string, privateJwk: JWK): Promise<string> {
  const alg = privateJwk.alg ?? 'ES256';
  return signAssertion(await importJWK(privateJwk, alg), { agent, endpoint: tokenEndpoint(base), alg, kid: privateJwk.kid });
}

/** The client credentials form for an assertion and the details asked for. */
export const clientCredentialsForm = (assertion: string, details: unknown[], resource?: string): Record<string, string> => ({
  grant_type: 'client_credentials', client_assertion_type: ASSERTION_TYPE, client_assertion: assertion, authorization_details: JSON.stringify(details),
  ...(resource ? { resource } : {}),
});

export async function requestToken(r: TokenRequest): Promise<TokenAnswer> {
  return postForm(tokenEndpoint(r.base), clientCredentialsForm(await clientAssertion(r.base, r.agent, r.privateJwk), r.details, r.resource));
}

export async function exchangeToken(r: ExchangeRequest): Promise<TokenAnswer> {
  return postForm(tokenEndpoint(r.base), {
    grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
    client_assertion_type: ASSERTION_TYPE, client_assertion: await clientAssertion(r.base, r.agent, r.privateJwk),
    subject_token: r.subjectToken, subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
    actor_token: await clientAssertion(r.base, r.actor.agent, r.actor.privateJwk), actor_token_type: 'urn:ietf:params:oauth:token-type:jwt',
    authorization_details: JSON.stringify(r.details), ...(r.resource ? { resource: r.resource } : {}),
  });
}

/** A token for a human's grant: the agent it was granted to exchanges the grant's id (no actor token). */
export async function grantToken(r: TokenRequest & { grant: string }): Promise<TokenAnswer> {
  return postForm(tokenEndpoint(r.base), {
    grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
    client_assertion_type: ASSERTION_TYPE, client_assertion: await clientAssertion(r.base, r.agent, r.privateJwk),
    subject_token: r.grant, subject_token_type: 'urn:leash:params:oauth:token-type:grant',
    authorization_details: JSON.stringify(r.details), ...(r.resource ? { resource: r.resource } : {}),
  });
}

/** What Leash says of a token (RFC 7662), asked with a PEP or operator token. */
export async function introspectToken(base: string, bearer: string, token: string): Promise<Record<string, unknown>> {
  return postForm(new URL('/oauth/introspect', base).toString(), { token }, { authorization: `Bearer ${bearer}` });
}

async function postForm<T>(url: string, form: Record<string, string>, headers: Record<string, string> = {}): Promise<T> {
  const response = await fetch(url, { method: 'POST', headers, body: new URLSearchParams(form) });
  const text = await response.text();
  try {
    return JSON.parse(text) as T;
  } catch {
    return { error: `http_${response.status}`, error_description: text.slice(0, 200) } as T;
  }
}
