import { createServer as createTcpServer } from 'node:net';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { MAX_REMOTE_KEY_SETS, remoteKeys, remoteKeySetCount } from '../../src/tokens/remote-keys.ts';
import { configureTokens } from '../../src/tokens/settings.ts';
import { verifyAgentToken, type TokenCheck } from '../../src/tokens/verify.ts';
import { freePort } from '../support/servers.ts';
import { agent, httpServer, jwk, listening, mint, registryOf, remotePins, tenMegabytes, type LoopbackServer } from './harness.ts';

// An agent's keys behind a `jwksUri`: whatever goes wrong getting them, the caller reads one
// code and one text (the log says more), and nothing is fetched from the node's own network
// unless LEASH_ALLOW_PRIVATE_URLS says so.

const servers: LoopbackServer[] = [];
const serve = async (s: Promise<LoopbackServer>) => {
  const server = await s;
  servers.push(server);
  return server;
};
let logged: { fields: Record<string, unknown>; message: string }[] = [];
beforeEach(() => {
  logged = [];
  configureTokens({ allowPrivateUrls: true, log: (fields, message) => logged.push({ fields, message }) });
});
afterEach(async () => {
  configureTokens();
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

let n = 0;
/** A decision's token check for a fresh agent whose keys are at `jwksUri`. */
async function verifyWith(jwksUri: string): Promise<{ check: TokenCheck; token: string }> {
  const id = `bot-${++n}`;
  const token = await mint({ sub: id });
  return { check: await verifyAgentToken(token, id, registryOf(agent(id, remotePins(jwksUri))), new Date()), token };
}

const unavailable = { ok: false, code: 'TOKEN_KEYS_UNAVAILABLE', detail: 'the agent\'s JWKS could not be fetched', agentVersion: 2 };

describe('keys from a jwksUri', () => {
  it('verifies against the keys the endpoint serves', async () => {
    const server = await serve(httpServer((_req, res) => res.setHeader('content-type', 'application/json').end(JSON.stringify({ keys: [jwk] }))));
    expect((await verifyWith(`${server.url}/jwks.json`)).check).toMatchObject({ ok: true, actingAgent: `bot-${n}` });
  });

  it('every way of failing reads the same to the caller: one code, one detail, no claims', async () => {
    const redirectTarget = await serve(httpServer((_req, res) => res.end(JSON.stringify({ keys: [jwk] }))));
    const big = tenMegabytes();
    const endpoints = {
      redirect: await serve(httpServer((_req, res) => res.writeHead(302, { location: `${redirectTarget.url}/jwks` }).end())),
      'HTTP 500': await serve(httpServer((_req, res) => res.writeHead(500).end('{"keys":[]}'))),
      'HTTP 404 (a live service, not a JWKS)': await serve(httpServer((_req, res) => res.writeHead(404, { 'content-type': 'text/html' }).end('<h1>Not Found</h1>'))),
      HTML: await serve(httpServer((_req, res) => res.setHeader('content-type', 'text/html').end('<!doctype html><title>admin</title>'))),
      'JSON, not a JWKS': await serve(httpServer((_req, res) => res.setHeader('content-type', 'application/json').end('{"status":"ok","version":"1.2.3"}'))),
      '10 MB': await serve(httpServer(big.handler)),
      'not HTTP': await serve(listening(createTcpServer((socket) => socket.end('SSH-2.0-OpenSSH_9.6\r\n')))),
    };
    const urls: Record<string, string> = Object.fromEntries(Object.entries(endpoints).map(([k, s]) => [k, `${s.url}/jwks.json?secret=abc`]));
    urls['closed port'] = `http://127.0.0.1:${await freePort()}/jwks.json`;
    urls['unresolvable name'] = 'https://no-such-host.invalid/jwks.json';
    for (const [kind, url] of Object.entries(urls)) {
      const { check, token } = await verifyWith(url);
      expect(check, kind).toEqual(unavailable);
      expect(JSON.stringify(logged), kind).not.toContain(token);
    }
    expect(redirectTarget.connections).toBe(0); // the redirect was not followed
    expect(await big.closedEarly).toBe(true); // nor was 10 MB read
    expect(big.written()).toBeLessThan(1024 * 1024);
    // The log tells them apart, by host only (the path and query may carry secrets).
    expect(logged).toHaveLength(Object.keys(urls).length);
    expect(new Set(logged.map((l) => l.fields.reason)).size).toBeGreaterThanOrEqual(7);
    expect(JSON.stringify(logged)).not.toContain('secret=abc');
    expect(logged[0]).toMatchObject({ fields: { jwksHost: `127.0.0.1:${endpoints.redirect.port}`, reason: expect.stringMatching(/HTTP 302/) } });
  }, 20_000);

  it('a service that never answers is given up on within the 2 s timeout, with the same answer', async () => {
    const silent = await serve(listening(createTcpServer(() => {})));
    const started = Date.now();
    expect((await verifyWith(`${silent.url}/jwks.json`)).check).toEqual(unavailable);
    expect(Date.now() - started).toBeLessThan(3_000);
  });

  it('a failed fetch is remembered for a while: ten tokens for an unreachable key set cost one connection, not ten timeouts', async () => {
    let connections = 0;
    const silent = await serve(listening(createTcpServer(() => void connections++)));
    const id = `bot-${++n}`;
    const lookup = registryOf(agent(id, remotePins(`${silent.url}/jwks.json`)));
    const checks = [];
    for (let i = 0; i < 10; i++) checks.push(await verifyAgentToken(await mint({ sub: id }), id, lookup, new Date()));
    expect(checks.every((c) => c.ok === false && c.code === 'TOKEN_KEYS_UNAVAILABLE')).toBe(true);
    expect(connections).toBe(1);
  });

  it('without LEASH_ALLOW_PRIVATE_URLS, a URL registered before the rules is not fetched: loopback by address or by name', async () => {
    configureTokens({ log: (fields, message) => logged.push({ fields, message }) }); // the default: private URLs refused
    const server = await serve(httpServer((_req, res) => res.end(JSON.stringify({ keys: [jwk] }))));
    for (const url of [`http://127.0.0.1:${server.port}/jwks`, `https://127.0.0.1:${server.port}/jwks`, `https://localhost:${server.port}/jwks`, `https://[::ffff:127.0.0.1]:${server.port}/jwks`]) {
      expect((await verifyWith(url)).check, url).toEqual(unavailable);
    }
    expect(server.connections).toBe(0);
    expect(logged.map((l) => l.fields.reason)).toEqual([
      expect.stringMatching(/must use https/), expect.stringMatching(/public host/), expect.stringMatching(/public host/), expect.stringMatching(/public host/),
    ]);
  });
});

describe('the cache of remote key sets', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('holds at most MAX_REMOTE_KEY_SETS URLs, dropping the least recently used', () => {
    const first = remoteKeys('https://idp-0.example/jwks');
    const kept = remoteKeys('https://idp-1.example/jwks');
    for (let i = 2; i < MAX_REMOTE_KEY_SETS + 50; i++) {
      remoteKeys(`https://idp-${i}.example/jwks`);
      if (i % 100 === 0) expect(remoteKeys('https://idp-1.example/jwks')).toBe(kept); // in use: stays
    }
    expect(remoteKeySetCount()).toBe(MAX_REMOTE_KEY_SETS);
    expect(remoteKeys('https://idp-1.example/jwks')).toBe(kept);
    expect(remoteKeys('https://idp-0.example/jwks')).not.toBe(first); // dropped, made anew
  });

  it('drops a URL nobody has used for longer than its keys stay fresh (an agent rotated away or retired)', () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const old = remoteKeys('https://retired-idp.example/jwks');
    const before = remoteKeySetCount();
    vi.setSystemTime(Date.now() + 11 * 60_000);
    remoteKeys('https://new-idp.example/jwks');
    expect(remoteKeySetCount()).toBeLessThan(before + 1);
    expect(remoteKeys('https://retired-idp.example/jwks')).not.toBe(old);
  });
});
