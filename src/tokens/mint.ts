import { randomUUID } from 'node:crypto';
import { SignJWT, exportJWK, generateKeyPair, importJWK, type JWK } from 'jose';

// Local key and token helpers for trying Leash without an identity provider: an agent's key
// pair (its public half goes into the registration's pins) and a short-lived signed token.

export async function generateAgentKey(kid: string): Promise<{ privateJwk: JWK; publicJwk: JWK }> {
  const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true });
  return {
    privateJwk: { ...(await exportJWK(privateKey)), alg: 'ES256', kid },
    publicJwk: { ...(await exportJWK(publicKey)), alg: 'ES256', kid },
  };
}

export interface MintOptions {
  privateJwk: JWK;
  issuer: string;
  audience: string;
  /** The agent (or, with `onBehalfOf`, the acting agent in `act.sub`). */
  agent: string;
  onBehalfOf?: string;
  authorizationDetails: unknown[];
  lifetimeSeconds: number;
}

export async function mintAgentToken(o: MintOptions): Promise<string> {
  const alg = o.privateJwk.alg ?? 'ES256';
  const key = await importJWK(o.privateJwk, alg);
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ authorization_details: o.authorizationDetails, ...(o.onBehalfOf ? { act: { sub: o.agent } } : {}) })
    .setProtectedHeader({ alg, typ: 'at+jwt', ...(o.privateJwk.kid ? { kid: o.privateJwk.kid } : {}) })
    .setIssuer(o.issuer)
    .setAudience(o.audience)
    .setSubject(o.onBehalfOf ?? o.agent)
    .setIssuedAt(now)
    .setExpirationTime(now + o.lifetimeSeconds)
    .setJti(randomUUID())
    .sign(key);
}

/** A person's token, as an identity provider would sign it: `sub` the human, for admin calls. */
export async function mintHumanToken(o: { privateJwk: JWK; issuer: string; audience: string; human: string; lifetimeSeconds: number }): Promise<string> {
  const alg = o.privateJwk.alg ?? 'ES256';
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({})
    .setProtectedHeader({ alg, typ: 'JWT', ...(o.privateJwk.kid ? { kid: o.privateJwk.kid } : {}) })
    .setIssuer(o.issuer)
    .setAudience(o.audience)
    .setSubject(o.human)
    .setIssuedAt(now)
    .setExpirationTime(now + o.lifetimeSeconds)
    .setJti(randomUUID())
    .sign(await importJWK(o.privateJwk, alg));
}
