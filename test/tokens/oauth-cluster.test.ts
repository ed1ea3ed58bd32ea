import { decodeJwt, decodeProtectedHeader } from 'jose';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Backend } from '../../src/store/connect.ts';
import { freshPostgres } from '../support/backends.ts';
import { ADMIN_TOKEN, PEP_TOKEN, agentBody, clientAssertionOf, seedPrincipals, listeningNode, type TestNode } from '../support/node.ts';

// Leash's tokens across a cluster, on the real PostgreSQL and nats-server: two nodes that
// each sign with a key of their own, a replay table they share, and a node that restarts.

const ISSUER = 'http://127.0.0.1:8080';
const folder = (id: string) => ({ type: 'Folder', id });
const readInvoices = [{ type: 'leash:cedar', actions: ['read'], resourceIn: folder('invoices') }];

let backend: Backend;
let n1: TestNode;
let n2: TestNode;
const urls = new Map<TestNode, string>();

const start = async (nodeId: string) => {
  const { node, url } = await listeningNode(backend, { nodeId, natsUrl: inject('natsUrl') });
  urls.set(node, url);
  return node;
};

const assertion = (agent: string) => clientAssertionOf(agent);

async function token(node: TestNode, clientAssertion: string) {
  const res = await fetch(`${urls.get(node)}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'client_credentials', client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: clientAssertion,
      authorization_details: JSON.stringify(readInvoices),
    }),
  });
  return { status: res.status, body: (await res.json()) as Record<string, any> };
}

async function decide(node: TestNode, accessToken: string) {
  const res = await fetch(`${urls.get(node)}/access/v1/evaluation`, {
    method: 'POST',
    headers: { authorization: `Bearer ${PEP_TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      subject: { type: 'agent', id: 'cluster-bot', properties: { token: accessToken } }, action: { name: 'read' }, resource: { type: 'Document', id: 'd1' },
      context: { entities: [{ uid: { type: 'Document', id: 'd1' }, attrs: {}, parents: [folder('invoices')] }, { uid: folder('invoices'), attrs: {}, parents: [] }] },
    }),
  });
  return (await res.json()) as { decision: boolean; context: { code?: string } };
}

const kids = async (node: TestNode) => ((await (await fetch(`${urls.get(node)}/.well-known/jwks.json`)).json()) as { keys: { kid: string; d?: string }[] }).keys.map((k) => k.kid).sort();

beforeAll(async () => {
  backend = await freshPostgres();
  n1 = await start('n1');
  n2 = await start('n2');
  await seedPrincipals(n1);
  expect((await n1.api('POST', '/v1/agents', agentBody({ id: 'cluster-bot', groups: ['finance'], ceiling: { template: 'ceiling-folder', values: { '?resource': folder('invoices') } } }))).status).toBe(201);
  expect((await n1.api('POST', '/v1/agents/cluster-bot/authorize', { grants: [] })).status).toBe(200);
  await n2.follower.waitFor(n1.view.position);
});
afterAll(async () => Promise.all([n1?.close(), n2?.close()]));

describe('Leash tokens on two nodes sharing PostgreSQL and NATS', () => {
  it('each node signs with its own key; both publish the same JWKS; a token signed on one verifies on the other', async () => {
    expect(n1.signer.kid).not.toBe(n2.signer.kid);
    expect(await kids(n1)).toEqual([n1.signer.kid, n2.signer.kid].sort());
    expect(await kids(n2)).toEqual(await kids(n1));
    const issued = await token(n1, await assertion('cluster-bot'));
    expect(issued.status, JSON.stringify(issued.body)).toBe(200);
    expect(decodeProtectedHeader(issued.body.access_token).kid).toBe(n1.signer.kid);
    expect(await decide(n2, issued.body.access_token)).toMatchObject({ decision: true });
    expect(await decide(n1, issued.body.access_token)).toMatchObject({ decision: true });
  });

  it('the same assertion sent to both nodes at the same instant gets exactly one token', async () => {
    for (let round = 0; round < 5; round++) {
      const same = await assertion('cluster-bot');
      const answers = await Promise.all([token(n1, same), token(n2, same)]);
      expect(answers.map((a) => a.status).sort(), JSON.stringify(answers.map((a) => a.body))).toEqual([200, 401]);
      expect(answers.find((a) => a.status === 401)!.body.error).toBe('invalid_client');
    }
  });

  it('a restarted node signs with a new key, and every node keeps verifying tokens signed with its previous one', async () => {
    const before = await token(n1, await assertion('cluster-bot'));
    expect(before.status).toBe(200);
    const oldKid = n1.signer.kid;
    await n1.close();
    n1 = await start('n1');
    expect(n1.signer.kid).not.toBe(oldKid);
    // The old key stays published until every token it may have signed has expired.
    expect(await kids(n1)).toEqual([oldKid, n1.signer.kid, n2.signer.kid].sort());
    await n2.follower.waitFor(n1.view.position);
    expect(await kids(n2)).toEqual(await kids(n1));
    expect(await decide(n1, before.body.access_token)).toMatchObject({ decision: true });
    expect(await decide(n2, before.body.access_token)).toMatchObject({ decision: true });
    // And the new key's tokens verify everywhere.
    const after = await token(n1, await assertion('cluster-bot'));
    expect(decodeProtectedHeader(after.body.access_token).kid).toBe(n1.signer.kid);
    expect(decodeJwt(after.body.access_token).iss).toBe(ISSUER);
    expect(await decide(n2, after.body.access_token)).toMatchObject({ decision: true });
  });

  it('a token revoked on node 1 is refused on node 2 from the moment the revocation answers, although node 2 had it cached', async () => {
    const issued = await token(n2, await assertion('cluster-bot'));
    const other = await token(n1, await assertion('cluster-bot'));
    expect(issued.status).toBe(200);
    for (let i = 0; i < 3; i++) expect(await decide(n2, issued.body.access_token)).toMatchObject({ decision: true }); // verified once, then cached
    const res = await fetch(`${urls.get(n1)}/oauth/revoke`, {
      method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: issued.body.access_token }),
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ nodesConfirmed: 2, nodesExpected: 2, nodesMissing: [] });
    // No waiting: the fence has every live node's word that it applied the revocation.
    expect(await decide(n2, issued.body.access_token)).toMatchObject({ decision: false, context: { code: 'TOKEN_REVOKED' } });
    expect(await decide(n1, issued.body.access_token)).toMatchObject({ decision: false, context: { code: 'TOKEN_REVOKED' } });
    expect(await decide(n2, other.body.access_token)).toMatchObject({ decision: true });
  });
});
