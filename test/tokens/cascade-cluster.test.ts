import { decodeJwt, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Backend } from '../../src/store/connect.ts';
import { freshPostgres } from '../support/backends.ts';
import { PEP_TOKEN, agentBody, agentPrivateKey, seedPrincipals, startTestNode, type TestNode } from '../support/node.ts';

// A delegation chain A → B → C spread over three nodes on the real PostgreSQL and nats-server:
// A's token from node 1, B's exchanged on node 2, C's on node 3. A containment command on one
// agent of the chain, sent to any node, stops every token below it on every node from the
// moment the command answers (the fence), although every node had those tokens cached; the
// tokens above it keep working.

const ISSUER = 'http://127.0.0.1:8080';
const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const folder = (id: string) => ({ type: 'Folder', id });
const readInvoices = [{ type: 'leash:cedar', actions: ['read'], resourceIn: folder('invoices') }];

let backend: Backend;
let nodes: TestNode[];
const urls = new Map<TestNode, string>();
const names = new Map<TestNode, string>();

async function assertion(agent: string): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ jti: crypto.randomUUID() }).setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setIssuer(agent).setSubject(agent).setAudience(ISSUER)
    .setIssuedAt(now).setExpirationTime(now + 60).sign(agentPrivateKey);
}

async function form(node: TestNode, path: string, body: Record<string, string>, headers: Record<string, string> = {}) {
  const res = await fetch(`${urls.get(node)}${path}`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers }, body: new URLSearchParams(body).toString() });
  return { status: res.status, body: (await res.json()) as Record<string, any> };
}

async function clientCredentials(node: TestNode, agent: string): Promise<string> {
  const res = await form(node, '/oauth/token', {
    grant_type: 'client_credentials', client_assertion_type: ASSERTION_TYPE, client_assertion: await assertion(agent), authorization_details: JSON.stringify(readInvoices),
  });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.access_token as string;
}

/** On `node`, `parent` hands `subjectToken` on to `child`. */
async function exchange(node: TestNode, parent: string, subjectToken: string, child: string): Promise<string> {
  const res = await form(node, '/oauth/token', {
    grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange', client_assertion_type: ASSERTION_TYPE, client_assertion: await assertion(parent),
    subject_token: subjectToken, subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
    actor_token: await assertion(child), actor_token_type: 'urn:ietf:params:oauth:token-type:jwt', authorization_details: JSON.stringify(readInvoices),
  });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.access_token as string;
}

async function decide(node: TestNode, agent: string, accessToken: string) {
  const res = await fetch(`${urls.get(node)}/access/v1/evaluation`, {
    method: 'POST',
    headers: { authorization: `Bearer ${PEP_TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      subject: { type: 'agent', id: agent, properties: { token: accessToken } }, action: { name: 'read' }, resource: { type: 'Document', id: 'd1' },
      context: { entities: [{ uid: { type: 'Document', id: 'd1' }, attrs: {}, parents: [folder('invoices')] }, { uid: folder('invoices'), attrs: {}, parents: [] }] },
    }),
  });
  expect(res.status).toBe(200);
  const body = (await res.json()) as { decision: boolean; context: { layer?: string; code?: string } };
  return { decision: body.decision, layer: body.context.layer, code: body.context.code };
}

async function introspect(node: TestNode, accessToken: string) {
  const res = await form(node, '/oauth/introspect', { token: accessToken }, { authorization: `Bearer ${PEP_TOKEN}` });
  expect(res.status).toBe(200);
  return res.body;
}

const caughtUp = async (from: TestNode) => Promise.all(nodes.filter((n) => n !== from).map((n) => n.follower.waitFor(from.view.position)));

interface Link {
  agent: string;
  token: string;
}

/** A → B → C for alice (every agent in finance-agents, which the example policies let delegate within the group): A's token from node 1, B's from node 2, C's from node 3. */
async function chain(prefix: string): Promise<[Link, Link, Link]> {
  const [n1, n2, n3] = nodes as [TestNode, TestNode, TestNode];
  const [a, b, c] = ['a', 'b', 'c'].map((x) => `${prefix}-${x}`) as [string, string, string];
  for (const id of [a, b, c]) {
    const body = agentBody({ id, groups: ['finance', 'finance-agents'], ceiling: { template: 'ceiling-folder', values: { '?resource': folder('invoices') } } });
    expect((await n1.api('POST', '/v1/agents', body)).status).toBe(201);
    expect((await n1.api('POST', `/v1/agents/${id}/authorize`, { grants: [] })).status).toBe(200);
  }
  await caughtUp(n1);
  const tokenA = await clientCredentials(n1, a);
  const tokenB = await exchange(n2, a, tokenA, b);
  const tokenC = await exchange(n3, b, tokenB, c);
  expect(decodeJwt(tokenC)).toMatchObject({ sub: 'alice', client_id: b, act: { sub: c, act: { sub: b, act: { sub: a } } } });
  const links: [Link, Link, Link] = [{ agent: a, token: tokenA }, { agent: b, token: tokenB }, { agent: c, token: tokenC }];
  // Every token allowed on every node, twice: the second answer comes from the verified-token cache.
  for (const node of nodes) {
    for (const { agent, token } of links) {
      for (let i = 0; i < 2; i++) expect(await decide(node, agent, token), `${agent} on ${names.get(node)}`).toEqual({ decision: true, layer: 'all', code: undefined });
      expect(await introspect(node, token)).toMatchObject({ active: true });
    }
  }
  return links;
}

beforeAll(async () => {
  backend = await freshPostgres();
  nodes = [];
  for (const nodeId of ['n1', 'n2', 'n3']) {
    // Three agents in a chain, no more (the setting is the process's: every node sets the same).
    const node = await startTestNode(backend, { nodeId, natsUrl: inject('natsUrl'), maxDelegationDepth: 3 });
    await node.app.listen({ port: 0, host: '127.0.0.1' });
    urls.set(node, `http://127.0.0.1:${(node.app.server.address() as { port: number }).port}`);
    names.set(node, nodeId);
    nodes.push(node);
  }
  await seedPrincipals(nodes[0]!);
  await caughtUp(nodes[0]!);
});
afterAll(async () => Promise.all((nodes ?? []).map((n) => n.close())));

describe('a delegation chain A → B → C across three nodes', () => {
  // [the command, which agent of the chain (0 = A, 1 = B), which node is asked]
  const cases = [
    ['revoke A immediately', 'revoke', { mode: 'immediate', reason: 'compromised' }, 0, 1],
    ['suspend B', 'suspend', { reason: 'anomaly' }, 1, 2],
    ['retire B', 'retire', { reason: 'done' }, 1, 0],
  ] as const;

  it.each(cases)('%s: every token below is refused on every node from the moment the command answers; the ones above still work', async (_name, command, body, changed, asked) => {
    const links = await chain(`${command}-${changed}`);
    const res = await nodes[asked]!.api('POST', `/v1/agents/${links[changed]!.agent}/${command}`, body);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body).toMatchObject({ nodesConfirmed: 3, nodesExpected: 3, nodesMissing: [] });
    // No waiting: the fence has every live node's word that it applied the command.
    for (const node of nodes) {
      for (const [i, { agent, token }] of links.entries()) {
        const where = `${agent}'s token on ${names.get(node)}`;
        if (i < changed) {
          expect(await decide(node, agent, token), where).toEqual({ decision: true, layer: 'all', code: undefined });
          expect(await introspect(node, token), where).toMatchObject({ active: true, jti: decodeJwt(token).jti });
        } else {
          const code = i === changed ? 'AGENT_NOT_ACTIVE' : 'DELEGATION_CHAIN_BROKEN';
          expect(await decide(node, agent, token), where).toEqual({ decision: false, layer: 'token', code });
          expect(await introspect(node, token), where).toEqual({ active: false });
        }
      }
    }
  });
});
