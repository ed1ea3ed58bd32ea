import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freshPostgres } from '../support/backends.ts';
import { ADMIN_TOKEN, PEP_TOKEN, agentBody, agentPrivateKey, seedPrincipals, startTestNode, type TestNode } from '../support/node.ts';
import { SharedBus } from '../support/shared-bus.ts';

// A token revocation is fenced like an agent's: two nodes on one PostgreSQL with a broadcast
// the test slows down, so the answer can only be right if the revoke waited for the slow node.

const folder = (id: string) => ({ type: 'Folder', id });
const ISSUER = 'http://127.0.0.1:8080';

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const form = (node: TestNode, url: string, body: Record<string, string>, bearer?: string) =>
  node.app.inject({ method: 'POST', url, headers: { 'content-type': 'application/x-www-form-urlencoded', ...(bearer ? { authorization: `Bearer ${bearer}` } : {}) }, payload: new URLSearchParams(body).toString() });

async function decide(node: TestNode, token: string) {
  const res = await node.api('POST', '/access/v1/evaluation', {
    subject: { type: 'agent', id: 'fenced-bot', properties: { token } }, action: { name: 'read' }, resource: { type: 'Document', id: 'd1' },
    context: { entities: [{ uid: { type: 'Document', id: 'd1' }, attrs: {}, parents: [folder('invoices')] }, { uid: folder('invoices'), attrs: {}, parents: [] }] },
  }, {}, PEP_TOKEN);
  return res.body as { decision: boolean; context: { code?: string } };
}

describe('a token revocation, with a broadcast the test controls', () => {
  const bus = new SharedBus();
  let a: TestNode;
  let b: TestNode;

  beforeAll(async () => {
    const database = await freshPostgres();
    // No polling: b learns of the revocation from the broadcast only.
    const options = { pollMs: 600_000, stalenessMs: 400, heartbeatMs: 50 };
    a = await startTestNode(database, { ...options, nodeId: 'a', bus: bus.for('a') });
    b = await startTestNode(database, { ...options, nodeId: 'b', bus: bus.for('b') });
    await seedPrincipals(a);
    expect((await a.api('POST', '/v1/agents', agentBody({ id: 'fenced-bot', groups: ['finance'], ceiling: { template: 'ceiling-folder', values: { '?resource': folder('invoices') } } }))).status).toBe(201);
    expect((await a.api('POST', '/v1/agents/fenced-bot/authorize', { grants: [] })).status).toBe(200);
    await new Promise((r) => setTimeout(r, 1100));
    for (const node of [a, b]) {
      await until('both nodes live and ready', async () => {
        const r = await node.api('GET', '/readyz');
        return r.status === 200 && r.body.checks.broadcast.detail.startsWith('2 live node(s)');
      });
    }
  }, 60_000);
  afterAll(async () => Promise.all([a?.close(), b?.close()]));

  it('a node slow to hear the broadcast holds the revocation until it has applied it; then it refuses the cached token', async () => {
    const now = Math.floor(Date.now() / 1000);
    const assertion = await new SignJWT({ jti: crypto.randomUUID() }).setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setIssuer('fenced-bot').setSubject('fenced-bot')
      .setAudience(ISSUER).setIssuedAt(now).setExpirationTime(now + 60).sign(agentPrivateKey);
    const issued = await form(a, '/oauth/token', {
      grant_type: 'client_credentials', client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: assertion,
      authorization_details: JSON.stringify([{ type: 'leash:cedar', actions: ['read'], resourceIn: folder('invoices') }]),
    });
    expect(issued.statusCode, issued.body).toBe(200);
    const token = JSON.parse(issued.body).access_token as string;
    expect(await decide(b, token)).toMatchObject({ decision: true });
    expect(await decide(b, token)).toMatchObject({ decision: true }); // cached on b

    bus.delay = (node) => (node === 'b' ? 200 : 0); // everything reaches b 200 ms late
    const started = Date.now();
    const revoked = await form(a, '/oauth/revoke', { token }, ADMIN_TOKEN);
    expect(revoked.statusCode).toBe(200);
    expect(JSON.parse(revoked.body)).toMatchObject({ nodesConfirmed: 2, nodesExpected: 2, nodesMissing: [] });
    expect(Date.now() - started).toBeGreaterThanOrEqual(200);
    expect(await decide(b, token)).toMatchObject({ decision: false, context: { code: 'TOKEN_REVOKED' } });
    bus.delay = () => 0;
  });
});
