import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWTPayload } from 'jose';
import type { HumanPins } from '../../src/humans/human-tokens.ts';

// A stand-in for the organisation's identity provider: a key pair whose public half is in a
// JWKS file (LEASH_HUMAN_JWKS_FILE), and people's tokens signed with its private half.

export const PEOPLE_ISSUER = 'https://idp.example/people';
export const PEOPLE_AUDIENCE = 'leash-admin';

const pair = await generateKeyPair('ES256', { extractable: true });
export const peopleKey: CryptoKey = pair.privateKey;
export const peopleJwksFile = join(mkdtempSync(join(tmpdir(), 'leash-people-')), 'people.jwks.json');
writeFileSync(peopleJwksFile, JSON.stringify({ keys: [{ ...(await exportJWK(pair.publicKey)), alg: 'ES256', kid: 'people-1' }] }));

/** `humanPins` for a test node that lets these people sign in. */
export const peoplePins: HumanPins = { issuer: PEOPLE_ISSUER, audience: PEOPLE_AUDIENCE, algorithms: ['ES256'], jwks: { file: peopleJwksFile } };

/** A person's token as the identity provider would sign it (five minutes), with `claims` overriding. */
export async function personToken(sub: string, claims: JWTPayload = {}, o: { key?: CryptoKey; alg?: string; kid?: string } = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ iss: PEOPLE_ISSUER, aud: PEOPLE_AUDIENCE, sub, iat: now, exp: now + 300, ...claims })
    .setProtectedHeader({ alg: o.alg ?? 'ES256', kid: o.kid ?? 'people-1' })
    .sign(o.key ?? peopleKey);
}
