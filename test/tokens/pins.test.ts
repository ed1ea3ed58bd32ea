import { generateKeyPairSync } from 'node:crypto';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { LeashError } from '../../src/errors.ts';
import { checkPins } from '../../src/tokens/pins.ts';
import { configureTokens, tokenSettings } from '../../src/tokens/settings.ts';
import { freshPglite } from '../support/backends.ts';
import { agentBody, credentials, seedPrincipals, startTestNode, type TestNode } from '../support/node.ts';
import { pins, remotePins } from './harness.ts';

// Registration (checkPins): a jwksUri that names the node's own network by its very host is
// refused unless LEASH_ALLOW_PRIVATE_URLS; RSA keys must have at least 2048 bits.

const refusal = async (p: Promise<unknown>) => {
  const err = await p.then(() => null, (e: unknown) => e);
  if (!(err instanceof LeashError)) throw new Error(`expected a LeashError, got ${String(err)}`);
  return { code: err.code, status: err.status, message: err.message, details: err.details };
};

const privateHosts = [
  'https://127.0.0.1/jwks', 'https://127.0.0.1:8443/jwks', 'https://[::1]/jwks', 'https://10.0.0.1/jwks', 'https://10.200.3.4/.well-known/jwks.json',
  'https://169.254.169.254/latest/meta-data/', 'https://[::ffff:127.0.0.1]/jwks', 'https://[::ffff:169.254.169.254]/jwks', 'https://192.168.0.10/jwks',
  'https://172.20.0.5/jwks', 'https://100.64.0.1/jwks', 'https://[fd12:3456::1]/jwks', 'https://[fe80::1]/jwks', 'https://0.0.0.0/jwks', 'https://localhost/jwks',
  'https://localhost.:8443/jwks',
];

describe('a jwksUri at registration', () => {
  // The settings are the process's: start from the defaults whatever ran before in this worker.
  beforeEach(() => configureTokens());
  afterEach(() => configureTokens());

  it.each(privateHosts)('%s is INVALID_CREDENTIALS without LEASH_ALLOW_PRIVATE_URLS, accepted with it', async (jwksUri) => {
    expect(await refusal(checkPins(remotePins(jwksUri)))).toMatchObject({ code: 'INVALID_CREDENTIALS', status: 422, message: expect.stringMatching(/jwksUri must name a public host/) });
    configureTokens({ allowPrivateUrls: true });
    await expect(checkPins(remotePins(jwksUri))).resolves.toBeUndefined();
  });

  it('plain http needs the setting and a loopback host (today\'s rule let http on loopback always)', async () => {
    for (const jwksUri of ['http://127.0.0.1:9999/jwks', 'http://[::1]:9999/jwks', 'http://localhost:9999/jwks']) {
      expect(await refusal(checkPins(remotePins(jwksUri))), jwksUri).toMatchObject({ code: 'INVALID_CREDENTIALS', message: 'jwksUri must use https' });
    }
    configureTokens({ allowPrivateUrls: true });
    for (const jwksUri of ['http://127.0.0.1:9999/jwks', 'http://[::1]:9999/jwks', 'http://localhost:9999/jwks']) await expect(checkPins(remotePins(jwksUri))).resolves.toBeUndefined();
    for (const jwksUri of ['http://10.0.0.1/jwks', 'http://idp.example/jwks']) {
      expect(await refusal(checkPins(remotePins(jwksUri))), jwksUri).toMatchObject({ code: 'INVALID_CREDENTIALS', message: expect.stringMatching(/must use https/) });
    }
  });

  it('https to a public name is accepted either way (what it resolves to is checked at each fetch)', async () => {
    await expect(checkPins(remotePins('https://idp.example/.well-known/jwks.json'))).resolves.toBeUndefined();
    await expect(checkPins(remotePins('https://8.8.8.8/jwks'))).resolves.toBeUndefined();
  });
});

describe('RSA keys at registration', () => {
  const rsaJwk = (bits: number, kid: string) => ({ ...generateKeyPairSync('rsa', { modulusLength: bits }).publicKey.export({ format: 'jwk' }), alg: 'RS256', kid });

  it('a key under 2048 bits is INVALID_CREDENTIALS naming its index; 2048 and more are accepted', async () => {
    const rs = { algorithms: ['RS256'] };
    const weak = await refusal(checkPins(pins({ ...rs, jwks: { keys: [rsaJwk(2048, 'a'), rsaJwk(1024, 'b')] } })));
    expect(weak).toMatchObject({ code: 'INVALID_CREDENTIALS', status: 422, message: 'jwks.keys[1] is an RSA key of 1024 bits; at least 2048 are required', details: { key: 1 } });
    expect(await refusal(checkPins(pins({ ...rs, jwks: { keys: [rsaJwk(2040, 'c')] } })))).toMatchObject({ details: { key: 0 }, message: expect.stringMatching(/2040 bits/) });
    await expect(checkPins(pins({ ...rs, jwks: { keys: [rsaJwk(2048, 'd'), rsaJwk(3072, 'e')] } }))).resolves.toBeUndefined();
  });
});

describe('through the API', () => {
  let node: TestNode;
  beforeAll(async () => {
    node = await startTestNode(freshPglite(), { allowPrivateUrls: false, maxDelegationDepth: 3 });
    await seedPrincipals(node);
  });
  afterAll(async () => node?.close());

  it('startNode sets the outbound and delegation settings', () => {
    expect(tokenSettings()).toMatchObject({ allowPrivateUrls: false, maxDelegationDepth: 3 });
  });

  it.each(['https://169.254.169.254/latest/meta-data/iam', 'https://[::1]/jwks', 'http://127.0.0.1:8080/jwks'])('registering with %s is 422 INVALID_CREDENTIALS', async (jwksUri) => {
    const res = await node.api('POST', '/v1/agents', agentBody({ id: 'ssrf-bot', credentials: credentials({ jwks: undefined, jwksUri }) }));
    expect(res.status, JSON.stringify(res.body)).toBe(422);
    expect(res.body).toMatchObject({ code: 'INVALID_CREDENTIALS', detail: expect.stringMatching(/^jwksUri must/) });
  });
});
