import { createServer as createTcpServer } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { isPrivateAddress, outboundGet, OutboundFailure, OUTBOUND_MAX_BYTES, urlProblem } from '../../src/tokens/outbound-fetch.ts';
import { freePort } from '../support/servers.ts';
import { httpServer, listening, tenMegabytes, type LoopbackServer } from './harness.ts';

// The rules for fetching a URL someone else chose: which addresses count as not public, what
// a URL must look like, and how the fetch behaves against hostile servers on loopback.

const servers: LoopbackServer[] = [];
const serve = async (s: Promise<LoopbackServer>) => {
  const server = await s;
  servers.push(server);
  return server;
};
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

const allow = { allowPrivateUrls: true };

describe('which addresses are not public', () => {
  it.each([
    '127.0.0.1', '127.255.0.9', '10.1.2.3', '172.16.0.1', '172.31.255.255', '192.168.1.1', '169.254.169.254', '100.64.0.1', '100.127.255.254',
    '0.0.0.0', '0.1.2.3', '224.0.0.1', '239.255.255.250', '255.255.255.255', '240.0.0.1', '192.0.2.7', '198.18.0.1',
    '::', '::1', 'fe80::1', 'fd00::1', 'fc00::abcd', 'ff02::1', 'fec0::1', '2001:db8::1',
    '::ffff:127.0.0.1', '::ffff:7f00:1', '::ffff:10.0.0.1', '::ffff:a9fe:a9fe', '::127.0.0.1',
    '64:ff9b::7f00:1', '64:ff9b::a9fe:a9fe', '2002:7f00:1::1', '2002:a00:1::',
    'not-an-address', '',
  ])('%s is refused', (address) => {
    expect(isPrivateAddress(address)).toBe(true);
  });

  it.each(['8.8.8.8', '1.1.1.1', '93.184.215.14', '172.32.0.1', '100.128.0.1', '2606:4700:4700::1111', '2a00:1450:4001:80b::200e', '::ffff:8.8.8.8', '64:ff9b::808:808'])(
    '%s is public',
    (address) => {
      expect(isPrivateAddress(address)).toBe(false);
    },
  );
});

describe('what a JWKS URL must look like', () => {
  it.each([
    'https://127.0.0.1/jwks', 'https://127.1/jwks', 'https://2130706433/jwks', 'https://[::1]/jwks', 'https://[::ffff:127.0.0.1]/jwks', 'https://10.0.0.7/jwks',
    'https://169.254.169.254/latest/meta-data', 'https://[fd00::1]/jwks', 'https://100.64.0.1/jwks', 'https://localhost/jwks', 'https://LOCALHOST./jwks', 'https://idp.localhost/jwks',
    'https://0.0.0.0/jwks',
  ])('%s: refused unless private URLs are allowed', (href) => {
    expect(urlProblem(new URL(href), false)).toMatch(/public host/);
    expect(urlProblem(new URL(href), true)).toBeNull();
  });

  it('plain http: only to loopback, and only when private URLs are allowed', () => {
    for (const href of ['http://127.0.0.1:9/jwks', 'http://[::1]:9/jwks', 'http://localhost:9/jwks']) {
      expect(urlProblem(new URL(href), false)).toMatch(/https/);
      expect(urlProblem(new URL(href), true)).toBeNull();
    }
    expect(urlProblem(new URL('http://10.0.0.1/jwks'), true)).toMatch(/https/);
    expect(urlProblem(new URL('http://idp.example/jwks'), true)).toMatch(/https/);
  });

  it('https to a public name or address passes; credentials and other schemes never do', () => {
    expect(urlProblem(new URL('https://idp.example/.well-known/jwks.json'), false)).toBeNull();
    expect(urlProblem(new URL('https://8.8.8.8/jwks'), false)).toBeNull();
    expect(urlProblem(new URL('https://u:p@idp.example/jwks'), true)).toMatch(/credentials/);
    expect(urlProblem(new URL('ftp://idp.example/jwks'), true)).toMatch(/https/);
    expect(urlProblem(new URL('file:///etc/passwd'), true)).toMatch(/https/);
  });
});

describe('fetching', () => {
  const refusal = (p: Promise<unknown>) => p.then(() => { throw new Error('fetched'); }, (err: unknown) => err);

  it('without the setting, never connects to a loopback address, by literal or by what the name resolves to', async () => {
    const server = await serve(httpServer((_req, res) => res.end('{"keys":[]}')));
    const byName = await refusal(outboundGet(`https://localhost:${server.port}/jwks`, {}, { allowPrivateUrls: false }));
    expect(byName).toBeInstanceOf(OutboundFailure);
    const resolvedToLoopback = await refusal(outboundGet(`https://jwks.test:${server.port}/jwks`, {}, { allowPrivateUrls: false, resolve: async () => [{ address: '127.0.0.1', family: 4 }] }));
    expect((resolvedToLoopback as Error).message).toMatch(/non-public address \(127\.0\.0\.1\)/);
    // One private address among public ones is enough to refuse: which one a connection uses is not ours to pick.
    const mixed = await refusal(outboundGet(`https://jwks.test:${server.port}/jwks`, {}, {
      allowPrivateUrls: false, resolve: async () => [{ address: '8.8.8.8', family: 4 }, { address: '::ffff:169.254.169.254', family: 6 }],
    }));
    expect((mixed as Error).message).toMatch(/non-public address/);
    expect(server.connections).toBe(0);
  });

  it('connects to the address it checked, resolving once (no second lookup to rebind), with the name as Host', async () => {
    let host: string | undefined;
    const server = await serve(httpServer((req, res) => {
      host = req.headers.host;
      res.end('{"keys":[]}');
    }));
    let lookups = 0;
    // A rebinding resolver: the first answer is the server, every later one an address with nothing on it.
    const resolve = async () => (lookups++ === 0 ? [{ address: '127.0.0.1', family: 4 }] : [{ address: '127.0.0.2', family: 4 }]);
    const res = await outboundGet(`http://localhost:${server.port}/jwks`, {}, { allowPrivateUrls: true, resolve });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ keys: [] });
    expect(lookups).toBe(1);
    expect(host).toBe(`localhost:${server.port}`);
  });

  it('a redirect is refused, not followed', async () => {
    let followed = false;
    const target = await serve(httpServer((_req, res) => {
      followed = true;
      res.end('{"keys":[]}');
    }));
    const server = await serve(httpServer((_req, res) => res.writeHead(302, { location: `${target.url}/jwks` }).end()));
    expect(((await refusal(outboundGet(`${server.url}/jwks`, {}, allow))) as Error).message).toMatch(/HTTP 302: redirects are not followed/);
    expect(followed).toBe(false);
  });

  it('stops reading past the size cap and closes the connection: the server never gets to write its 10 MB', async () => {
    const big = tenMegabytes();
    const server = await serve(httpServer(big.handler));
    const err = await refusal(outboundGet(`${server.url}/jwks`, {}, allow));
    expect((err as Error).message).toMatch(new RegExp(`larger than ${OUTBOUND_MAX_BYTES} bytes`));
    expect(await big.closedEarly).toBe(true);
    expect(big.written()).toBeLessThan(1024 * 1024);
  });

  it('a response that announces more than the cap is refused before its body is read', async () => {
    const server = await serve(httpServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(10 * 1024 * 1024) });
      res.write('{"keys":[');
    }));
    expect(((await refusal(outboundGet(`${server.url}/jwks`, {}, allow))) as Error).message).toMatch(/announces 10485760 bytes/);
  });

  it('the deadline covers the body: a server that drips bytes is cut off at the timeout', async () => {
    const server = await serve(httpServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      const drip = setInterval(() => (res.destroyed ? clearInterval(drip) : res.write(' ')), 50);
      res.once('close', () => clearInterval(drip));
    }));
    const started = Date.now();
    expect(((await refusal(outboundGet(`${server.url}/jwks`, {}, { ...allow, timeoutMs: 400 }))) as Error).message).toMatch(/timed out/);
    expect(Date.now() - started).toBeLessThan(1_500);
  });

  it('a closed port, a non-HTTP service and an HTTP error all fail (with the reason, for the log)', async () => {
    const banner = await serve(listening(createTcpServer((socket) => socket.end('SSH-2.0-OpenSSH_9.6\r\n'))));
    const error = await serve(httpServer((_req, res) => res.writeHead(500).end('boom')));
    const results = await Promise.all([
      refusal(outboundGet(`http://127.0.0.1:${await freePort()}/jwks`, {}, allow)),
      refusal(outboundGet(`${banner.url}/jwks`, {}, allow)),
      refusal(outboundGet(`${error.url}/jwks`, {}, allow)),
    ]);
    expect(results.map((e) => (e as Error).message)).toEqual([expect.stringMatching(/ECONNREFUSED/), expect.stringMatching(/request failed/), 'HTTP 500']);
    for (const e of results) expect(e).toBeInstanceOf(OutboundFailure);
  });
});
