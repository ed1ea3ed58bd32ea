import { connect as tcp } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { accessControl } from '../../src/http/access.ts';
import { freshPostgres } from '../support/backends.ts';
import { ADMIN_TOKEN, PEP_TOKEN, seedPrincipals, startTestNode, type TestNode } from '../support/node.ts';

// Who may call a route is decided on the route the router matched. Every route the server
// registers is walked here from the router's own table, so a route added later is covered
// without anyone remembering to add it.

let node: TestNode;
let port: number;

beforeAll(async () => {
  node = await startTestNode(await freshPostgres());
  await seedPrincipals(node);
  await node.app.listen({ port: 0, host: '127.0.0.1' });
  port = (node.app.server.address() as { port: number }).port;
});
afterAll(async () => node?.close());

const PUBLIC = ['/healthz', '/readyz', '/.well-known/authzen-configuration', '/.well-known/oauth-authorization-server', '/.well-known/jwks.json', '/.well-known/ssf-configuration', '/openapi.json',
  '/console/', '/console/app.js', '/console/style.css', '/console/vendor/preact.mjs', '/console/vendor/hooks.mjs', '/console/vendor/htm.mjs'];
/** Public, and POST: the client assertion in the body is the authentication (at /oauth/revoke, or the operator token, checked by the route). */
const PUBLIC_POST = ['/oauth/revoke', '/oauth/token'];

const concrete = (url: string) => url.replace(':id', '3d296335-2e77-4d3e-92f3-f7f086fb92a9');
const protectedRoutes = () => node.app.routeAccess.filter((r) => r.access !== 'public').map((r) => ({ ...r, url: concrete(r.url) }));

/** One raw HTTP/1.1 request on its own socket: what the test client cannot send (absolute-form targets). */
function raw(requestLine: string, headers: string[] = [], body = ''): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const socket = tcp(port, '127.0.0.1');
    let text = '';
    socket.setEncoding('latin1');
    socket.on('data', (d) => (text += d));
    socket.on('error', reject);
    socket.on('end', () => resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0), text }));
    const lines = [requestLine, 'Host: x', 'Connection: close', ...headers, ...(body ? ['Content-Type: application/json', `Content-Length: ${Buffer.byteLength(body)}`] : [])];
    socket.end(`${lines.join('\r\n')}\r\n\r\n${body}`);
  });
}

/** Ways of spelling a path that a router may decode, fold or resolve to the same route. */
function disguises(url: string): string[] {
  const [, first, rest] = /^\/(.)(.*)$/.exec(url)!;
  const hex = first!.charCodeAt(0).toString(16).toUpperCase();
  return [
    `/%${hex}${rest}`, // one percent-escape
    `/%${hex.toLowerCase()}${rest}`,
    `/%25${hex}${rest}`, // double-encoded
    url.toUpperCase(),
    `/${first!.toUpperCase()}${rest}`,
    `/./${first}${rest}`,
    `/x/..${url}`,
    `/x/%2e%2e${url}`,
    `/${url}`,
    `${url}/`,
    `${url}?`,
    `${url}#x`,
    `${url};x`,
    url.replaceAll('/', '%2F'),
  ];
}

describe('every route declares who may call it', () => {
  it('the router knows every route with its access, and only health, readiness, the metadata documents, the JWKS, the token and revocation endpoints and the console\'s static files are public', () => {
    const routes = node.app.routeAccess;
    expect(routes.length).toBeGreaterThan(20);
    expect([...new Set(routes.filter((r) => r.access === 'public').map((r) => r.url))].sort()).toEqual([...PUBLIC, ...PUBLIC_POST, '/console'].sort());
    expect(routes.filter((r) => r.url.startsWith('/ssf/')).every((r) => r.access === 'operator')).toBe(true);
    expect(routes.filter((r) => PUBLIC_POST.includes(r.url)).map((r) => r.method)).toEqual(['POST', 'POST']);
    expect(routes.find((r) => r.url === '/oauth/introspect')).toMatchObject({ method: 'POST', access: 'decider' });
    expect(routes.filter((r) => r.url.startsWith('/access/')).every((r) => r.access === 'decider')).toBe(true);
    expect(routes.filter((r) => r.url.startsWith('/v1/')).every((r) => r.access === 'operator')).toBe(true);
    expect(routes.filter((r) => r.access === 'metrics').map((r) => `${r.method} ${r.url}`)).toEqual(['GET /metrics', 'HEAD /metrics']);
  });

  it('a route that does not state its access is refused when it is registered', () => {
    const access = accessControl({ operator: ADMIN_TOKEN, deciders: [] });
    expect(() => access.declare({ method: 'GET', url: '/v1/new-thing' })).toThrow(/does not declare its access/);
    expect(() => access.declare({ method: 'GET', url: '/v1/new-thing', config: { access: 'anyone' } })).toThrow(/does not declare its access/);
  });

  it('every protected route refuses an anonymous caller, a wrong token and a caller token where the operator is needed', async () => {
    const before = await node.eventCount();
    for (const route of protectedRoutes()) {
      const body = ['POST', 'PUT'].includes(route.method) ? {} : undefined;
      for (const [token, headers] of [[null, {}], ['not-the-operator-token-at-all', {}], [null, { authorization: ADMIN_TOKEN }], [null, { authorization: `Basic ${ADMIN_TOKEN}` }]] as const) {
        const res = await node.api(route.method, route.url, body, headers, token);
        expect(res.status, `${route.method} ${route.url}`).toBe(401);
        // The OAuth endpoints answer as OAuth does (RFC 6749 §5.2), the others with a problem document.
        if (route.url.startsWith('/oauth/')) expect(res.body.error).toBe('invalid_client');
        else if (route.method !== 'HEAD') expect(res.body.code).toBe('UNAUTHENTICATED');
      }
      if (route.access === 'operator') expect((await node.api(route.method, route.url, body, {}, PEP_TOKEN)).status, `${route.method} ${route.url} with a caller token`).toBe(401);
    }
    expect(await node.eventCount()).toBe(before);
  });

  it('the OpenAPI document states the same access as the router', async () => {
    const doc = (await node.api('GET', '/openapi.json', undefined, {}, null)).body;
    for (const route of node.app.routeAccess) {
      // The document itself, and the console's static files, are not API.
      if (route.url === '/openapi.json' || route.url.startsWith('/console') || route.method === 'HEAD') continue;
      const path = route.url.replace(/:(\w+)/g, '{$1}');
      const op = doc.paths[path][route.method.toLowerCase()];
      const security = op.security ?? doc.security;
      const expected = { public: [], decider: [{ operator: [] }, { caller: [] }], metrics: [{ operator: [] }, { metrics: [] }], operator: [{ operator: [] }] }[route.access];
      expect(security, `${route.method} ${route.url}`).toEqual(expected);
    }
  });
});

describe('a disguised path is never a way in', () => {
  it('encoded, double-encoded, case-changed and dot-segment spellings of every protected route answer 401 without a token', async () => {
    const before = await node.eventCount();
    for (const route of protectedRoutes()) {
      for (const url of disguises(route.url)) {
        const res = await node.api(route.method, url, ['POST', 'PUT'].includes(route.method) ? { id: 'mallory', email: 'm@example.com' } : undefined, {}, null);
        expect(res.status, `${route.method} ${url}`).toBe(401);
      }
    }
    expect(await node.eventCount()).toBe(before);
  });

  it('the spellings the old URL test missed are refused over a real socket, absolute-form targets included', async () => {
    const before = await node.eventCount();
    const attempts: [string, string?][] = [
      ['GET /v%31/agents HTTP/1.1'],
      ['GET http://x/v1/groups HTTP/1.1'],
      ['GET http://x/v1/audit/decisions/3d296335-2e77-4d3e-92f3-f7f086fb92a9/trace HTTP/1.1'],
      ['POST http://x/v1/humans HTTP/1.1', JSON.stringify({ id: 'mallory', email: 'm@example.com' })],
      ['POST /%76%31/humans HTTP/1.1', JSON.stringify({ id: 'mallory', email: 'm@example.com' })],
      ['POST /%61ccess/v1/evaluation HTTP/1.1', JSON.stringify({ subject: { type: 'user', id: 'u' }, action: { name: 'read' }, resource: { type: 'Document', id: 'd' } })],
      ['POST http://x/access/v1/evaluation HTTP/1.1', JSON.stringify({ subject: { type: 'user', id: 'u' }, action: { name: 'read' }, resource: { type: 'Document', id: 'd' } })],
      ['PUT http://x/v1/policy-set HTTP/1.1', JSON.stringify({ schema: 'entity A;', policies: 'permit(principal, action, resource);' })],
    ];
    for (const [line, body] of attempts) expect((await raw(line, [], body)).status, line).toBe(401);
    // The same targets with the operator token do reach their routes (so the 401s above are the access check).
    expect((await raw('GET http://x/v1/groups HTTP/1.1', [`Authorization: Bearer ${ADMIN_TOKEN}`])).status).toBe(200);
    expect((await raw('GET /v%31/agents HTTP/1.1', [`Authorization: Bearer ${ADMIN_TOKEN}`])).status).toBe(200);
    expect(await node.eventCount()).toBe(before);
  });

  it('an unknown path asks for the operator token before it says there is nothing there', async () => {
    expect((await node.api('GET', '/v2/agents', undefined, {}, null)).status).toBe(401);
    expect((await node.api('GET', '/v2/agents')).status).toBe(404);
  });
});

describe('bearer tokens', () => {
  it.each(['Bearer', 'bearer', 'BEARER', 'bEaReR'])('the %s scheme is accepted, case-insensitively (RFC 7235)', async (scheme) => {
    expect((await node.api('GET', '/v1/groups', undefined, { authorization: `${scheme} ${ADMIN_TOKEN}` }, null)).status).toBe(200);
  });

  it('a token that is present but wrong is told so, and the token is never echoed', async () => {
    const res = await node.api('GET', '/v1/groups', undefined, {}, 'a-wrong-token-that-is-long-enough');
    expect(res.body.detail).toMatch(/not accepted/);
    expect(JSON.stringify(res)).not.toContain('a-wrong-token-that-is-long-enough');
    expect((await node.api('GET', '/v1/groups', undefined, {}, null)).body.detail).toMatch(/required/);
  });

  it('the AuthZEN metadata names its endpoints under the configured URL, never the caller\'s Host header', async () => {
    const doc = (await node.api('GET', '/.well-known/authzen-configuration', undefined, { host: 'evil.example' }, null)).body;
    expect(doc).toEqual({
      policy_decision_point: 'http://127.0.0.1:8080',
      access_evaluation_endpoint: 'http://127.0.0.1:8080/access/v1/evaluation',
      access_evaluations_endpoint: 'http://127.0.0.1:8080/access/v1/evaluations',
      search_subject_endpoint: 'http://127.0.0.1:8080/access/v1/search/subject',
      search_action_endpoint: 'http://127.0.0.1:8080/access/v1/search/action',
      search_resource_endpoint: 'http://127.0.0.1:8080/access/v1/search/resource',
    });
  });

  it('the console serves its own files and nothing else: a path beside or behind them is a 401 without a token', async () => {
    for (const url of ['/console/index.html', '/console/../v1/agents', '/console/%2e%2e/v1/agents', '/console/vendor/../../package.json', '/console/vendor/preact.mjs%00.js',
      '/console/app.js/', '/console/APP.JS', '/console/vendor/', `/console/${'a'.repeat(5000)}`, '/console//app.js']) {
      const res = await node.api('GET', url, undefined, {}, null);
      expect(res.status, url).toBe(401);
      expect(String(res.body)).not.toMatch(/"dependencies"|export function/);
    }
    const page = await node.api('GET', '/console/', undefined, {}, null);
    expect(page.headers['content-security-policy']).toMatch(/frame-ancestors 'none'/);
    expect(page.headers['x-content-type-options']).toBe('nosniff');
  });

  it('public routes answer without a token, however their path is spelled', async () => {
    for (const url of PUBLIC) expect((await node.api('GET', url, undefined, {}, null)).status, url).toBe(200);
    expect((await node.api('GET', '/console', undefined, {}, null)).headers.location).toBe('/console/');
    expect((await node.api('GET', '/health%7A', undefined, {}, null)).status).toBe(200);
  });
});
