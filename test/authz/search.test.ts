import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PEP_TOKEN, agentBody, seedPrincipals, startTestNode, type TestNode } from '../support/node.ts';
import { registerPayBot } from '../support/payments.ts';

// Access review with AuthZEN search: which agents or people may do this, what may this agent do
// here, which of these resources. Each answer decided through the same layers as a decision.

let node: TestNode;

const folder = (id: string) => ({ type: 'Folder', id });
const doc = (id: string, inFolder: string) => ({ uid: { type: 'Document', id }, attrs: {}, parents: [folder(inFolder)] });
const searchFor = (kind: string, body: unknown, bearer: string | null = PEP_TOKEN) => node.api('POST', `/access/v1/search/${kind}`, body, {}, bearer);
const ids = (res: { body: { results: { id?: string; name?: string }[] } }) => res.body.results.map((r) => r.id ?? r.name);
const readInv1 = { subject: { type: 'agent' }, action: { name: 'read' }, resource: { type: 'Document', id: 'inv-1' }, context: { entities: [doc('inv-1', 'invoices')] } };

beforeAll(async () => {
  node = await startTestNode({ kind: 'pglite', dataDir: null });
  await seedPrincipals(node);
  expect((await node.api('POST', '/v1/humans', { id: 'bob', email: 'bob@example.com', groups: [] })).status).toBe(201);
  const ceiling = { template: 'ceiling-folder', values: { '?resource': folder('invoices') } };
  const grants = [{ template: 'grant-read-folder', values: { '?resource': folder('invoices') } }];
  for (const [id, owner] of [['reader-1', 'alice'], ['reader-2', 'alice'], ['reader-3', 'alice'], ['bobs-reader', 'bob'], ['stopped-reader', 'alice']] as const) {
    expect((await node.api('POST', '/v1/agents', agentBody({ id, owner, ceiling }))).status).toBe(201);
    expect((await node.api('POST', `/v1/agents/${id}/authorize`, { grants })).status).toBe(200);
  }
  expect((await node.api('POST', '/v1/agents/stopped-reader/suspend', { reason: 'x' })).status).toBe(200);
  await registerPayBot(node);
});
afterAll(async () => node?.close());

describe('subject search', () => {
  it('lists the active agents whose ceiling, policies and owner allow it; not a suspended one, nor one whose owner may not', async () => {
    const res = await searchFor('subject', readInv1);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(ids(res)).toEqual(['reader-1', 'reader-2', 'reader-3']);
    expect(res.body.page).toEqual({ next_token: '', count: 3 });
    // Outside the ceiling: nobody.
    expect(ids(await searchFor('subject', { ...readInv1, resource: { type: 'Document', id: 'p-1' }, context: { entities: [doc('p-1', 'payroll')] } }))).toEqual([]);
  });

  it('people too: those the ordinary policies allow', async () => {
    expect(ids(await searchFor('subject', { ...readInv1, subject: { type: 'human' } }))).toEqual(['alice']);
  });

  it('a request only an @approval permit allows is not in the results (it is not allowed without the approval)', async () => {
    const pay = (amount: number) => ({ subject: { type: 'agent' }, action: { name: 'pay' }, resource: { type: 'Document', id: 'inv-9' }, context: { amount, entities: [doc('inv-9', 'invoices')] } });
    expect(ids(await searchFor('subject', pay(500)))).toEqual(['pay-bot']);
    const before = await node.eventCount();
    expect(ids(await searchFor('subject', pay(25_000)))).toEqual([]);
    expect(await node.eventCount()).toBe(before); // no approval asked for by a search
  });

  it('pages with an opaque token, bound to the request', async () => {
    const first = await searchFor('subject', { ...readInv1, page: { limit: 2 } });
    expect(ids(first)).toEqual(['reader-1', 'reader-2']);
    expect(first.body.page.next_token).not.toBe('');
    const second = await searchFor('subject', { ...readInv1, page: { limit: 2, token: first.body.page.next_token } });
    expect(ids(second)).toEqual(['reader-3']);
    expect(second.body.page.next_token).toBe('');
    // The same token with another request, or a token never given: 400.
    expect((await searchFor('subject', { ...readInv1, action: { name: 'write' }, page: { limit: 2, token: first.body.page.next_token } })).body).toMatchObject({ status: 400, code: 'VALIDATION_FAILED' });
    for (const token of ['garbage', Buffer.from('["x","y"]').toString('base64url'), '', 'x'.repeat(2049)]) {
      expect((await searchFor('subject', { ...readInv1, page: { limit: 2, token } })).status, token.slice(0, 20)).toBe(token === '' ? 200 : 400);
    }
  });
});

describe('action and resource search', () => {
  it('what may reader-1 do on inv-1: read, not write (no permit) nor pay (beyond its ceiling)', async () => {
    const res = await searchFor('action', { subject: { type: 'agent', id: 'reader-1' }, resource: { type: 'Document', id: 'inv-1' }, context: { entities: [doc('inv-1', 'invoices')] } });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(ids(res)).toEqual(['read']);
  });

  it('which of the named documents may reader-1 read', async () => {
    const res = await searchFor('resource', {
      subject: { type: 'agent', id: 'reader-1' }, action: { name: 'read' }, resource: { type: 'Document' },
      context: { entities: [doc('inv-1', 'invoices'), doc('inv-2', 'invoices'), doc('p-1', 'payroll')] },
    });
    expect(ids(res)).toEqual(['inv-1', 'inv-2']);
  });
});

describe('search under attack', () => {
  it('asks for a caller token; refuses what it cannot search plainly; lists its endpoints in the metadata', async () => {
    expect((await searchFor('subject', readInv1, null)).status).toBe(401);
    for (const [kind, body] of [
      ['subject', { ...readInv1, subject: { type: 'Document' } }],
      ['subject', { ...readInv1, page: { limit: 0 } }],
      ['subject', { ...readInv1, page: { limit: 1001 } }],
      ['subject', { ...readInv1, action: { name: 42 } }],
      ['subject', { ...readInv1, subject: { type: 'bad type!' } }],
      ['action', { subject: { type: 'agent' }, resource: { type: 'Document', id: 'x' } }],
      ['resource', { subject: { type: 'agent', id: 'reader-1' }, resource: { type: 'Document' } }],
    ] as const) {
      const res = await searchFor(kind, body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(res.body.code).toBe('VALIDATION_FAILED');
    }
    const meta = await node.api('GET', '/.well-known/authzen-configuration', undefined, {}, null);
    expect(meta.body).toMatchObject({ search_subject_endpoint: expect.stringMatching(/\/access\/v1\/search\/subject$/), search_action_endpoint: expect.any(String), search_resource_endpoint: expect.any(String) });
  });
});
