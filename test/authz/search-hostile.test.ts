import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PEP_TOKEN, agentBody, agentPrivateKey, seedPrincipals, startTestNode, type TestNode } from '../support/node.ts';

// AuthZEN search under attack: work per call, hostile input.

let node: TestNode;
const folder = (id: string) => ({ type: 'Folder', id });
const searchFor = (kind: string, body: unknown) => node.api('POST', `/access/v1/search/${kind}`, body, {}, PEP_TOKEN);

beforeAll(async () => {
  node = await startTestNode({ kind: 'pglite', dataDir: null });
  await seedPrincipals(node);
  const ceiling = { template: 'ceiling-folder', values: { '?resource': folder('invoices') } };
  expect((await node.api('POST', '/v1/agents', agentBody({ id: 'reader-1', ceiling }))).status).toBe(201);
  expect((await node.api('POST', '/v1/agents/reader-1/authorize', { grants: [{ template: 'grant-read-folder', values: { '?resource': folder('invoices') } }] })).status).toBe(200);
});
afterAll(async () => node?.close());

async function token(agent: string): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ authorization_details: [{ type: 'leash:cedar', actions: ['read'], resourceIn: folder('invoices') }], jti: crypto.randomUUID() }).setProtectedHeader({ alg: 'ES256', kid: 'k1' })
    .setIssuer('https://idp.example').setAudience('leash').setSubject(agent).setIssuedAt(now).setExpirationTime(now + 240).sign(agentPrivateKey);
}

// ~1,500 documents in a 64 KB body: every one a candidate, every candidate's Cedar calls reading all of them.
const manyDocs = (n: number) => Array.from({ length: n }, (_, i) => (i % 10 === 0 ? { uid: { type: 'Document', id: `d${i}` }, parents: [folder('invoices')] } : { uid: { type: 'Document', id: `d${i}` } }));

describe('work per search call', () => {
  it('a resource search is bounded like a batch: the same entities and candidates would be refused by /evaluations (MAX_BATCH_WORK)', async () => {
    const entities = manyDocs(1300);
    const body = { subject: { type: 'agent', id: 'reader-1' }, action: { name: 'read' }, resource: { type: 'Document' }, context: { entities } };
    expect(Buffer.byteLength(JSON.stringify(body))).toBeLessThan(64 * 1024);
    // The equivalent batch (one item per candidate, the same shared context) is refused up front.
    const batch = await node.api('POST', '/access/v1/evaluations', {
      subject: { type: 'agent', id: 'reader-1', properties: { token: 'x' } }, action: { name: 'read' }, context: { entities },
      evaluations: entities.slice(0, 20).map((e) => ({ resource: { type: 'Document', id: e.uid.id } })),
    }, {}, PEP_TOKEN);
    expect(batch.status).toBe(400);
    // One page does a bounded amount of work: with entities this costly, it looks at few
    // candidates and comes back with a token to go on; the pages together cover every candidate.
    const first = await searchFor('resource', body);
    expect(first.status, JSON.stringify(first.body).slice(0, 200)).toBe(200);
    expect(first.body.page.next_token).not.toBe('');
    // The next page goes on from there (a page looks at ⌊20,000 / (1 + the entities' cost)⌋ candidates).
    const second = await searchFor('resource', { ...body, page: { token: first.body.page.next_token } });
    expect(second.status).toBe(200);
    expect(second.body.page.next_token).not.toBe('');
    expect(second.body.page.next_token).not.toBe(first.body.page.next_token);
    // A decision asked while a page runs is answered before that page: the search takes turns.
    const order: string[] = [];
    const page = searchFor('resource', body).then(() => order.push('search'));
    const other = node.api('POST', '/access/v1/evaluation', {
      subject: { type: 'agent', id: 'reader-1', properties: { token: 'x' } }, action: { name: 'read' }, resource: { type: 'Document', id: 'a' },
    }, {}, PEP_TOKEN).then(() => order.push('decision'));
    await Promise.all([page, other]);
    expect(order).toEqual(['decision', 'search']);
  }, 300_000);
});

describe('hostile input', () => {
  const base = { subject: { type: 'agent', id: 'reader-1' }, action: { name: 'read' }, resource: { type: 'Document' } };
  const hostile: [string, unknown][] = [
    ['parents [null]', [{ uid: { type: 'Document', id: 'x' }, parents: [null] }]],
    ['parents [1]', [{ uid: { type: 'Document', id: 'x' }, parents: [1] }]],
    ['parents [{}]', [{ uid: { type: 'Document', id: 'x' }, parents: [{}] }]],
    ['parents [{type:1,id:2}]', [{ uid: { type: 'Document', id: 'x' }, parents: [{ type: 1, id: 2 }] }]],
    ['attrs string', [{ uid: { type: 'Document', id: 'x' }, attrs: 'str' }]],
    ['attrs null', [{ uid: { type: 'Document', id: 'x' }, attrs: null }]],
    ['tags string', [{ uid: { type: 'Document', id: 'x' }, tags: 'str' }]],
    ['NUL id', [{ uid: { type: 'Document', id: 'x\u0000y' }, parents: [folder('invoices')] }]],
    ['entities object', { a: 1 }],
    ['entities [null]', [null]],
    ['self parent', [{ uid: { type: 'Document', id: 'x' }, parents: [{ type: 'Document', id: 'x' }] }]],
  ];
  for (const [name, entities] of hostile) {
    it(`resource search with context.entities ${name}: not a 500`, async () => {
      const res = await searchFor('resource', { ...base, context: { entities } });
      const sub = await searchFor('subject', { subject: { type: 'agent' }, action: { name: 'read' }, resource: { type: 'Document', id: 'x' }, context: { entities } });
      const ev = await node.api('POST', '/access/v1/evaluation', { subject: { type: 'agent', id: 'reader-1', properties: { token: await token('reader-1') } }, action: { name: 'read' }, resource: { type: 'Document', id: 'x' }, context: { entities } }, {}, PEP_TOKEN);
      const batch = await node.api('POST', '/access/v1/evaluations', { subject: { type: 'agent', id: 'reader-1', properties: { token: 'x' } }, action: { name: 'read' }, resource: { type: 'Document', id: 'x' }, context: { entities }, evaluations: [{}, {}] }, {}, PEP_TOKEN);
      expect({ resourceSearch: res.status, subjectSearch: sub.status, evaluation: ev.status, evaluations: batch.status }).toEqual({ resourceSearch: expect.any(Number), subjectSearch: expect.any(Number), evaluation: expect.any(Number), evaluations: expect.any(Number) });
      for (const s of [res.status, sub.status, ev.status, batch.status]) expect(s, JSON.stringify({ resourceSearch: res.status, subjectSearch: sub.status, evaluation: ev.status, evaluations: batch.status })).toBeLessThan(500);
    });
  }

  it('odd action names and page tokens: not a 500', async () => {
    for (const name of ['', '\u0000', 'Action::"read"', 'X::Action::"read"', '::', '"', 'a'.repeat(512), 'Ns::Action::""']) {
      const res = await searchFor('subject', { subject: { type: 'agent' }, action: { name }, resource: { type: 'Document', id: 'x' } });
      expect(res.status, `${name.slice(0, 20)} ${JSON.stringify(res.body)}`).toBeLessThan(500);
    }
    for (const type of ['Agent', '::Agent', 'Human', 'leash::Agent', '__proto__', 'constructor', 'toString']) {
      const res = await searchFor('subject', { subject: { type }, action: { name: 'read' }, resource: { type: 'Document', id: 'x' } });
      expect(res.status, `${type} ${JSON.stringify(res.body)}`).toBeLessThan(500);
      const act = await searchFor('action', { subject: { type, id: 'reader-1' }, resource: { type, id: 'x' } });
      expect(act.status, `${type} ${JSON.stringify(act.body)}`).toBeLessThan(500);
    }
    for (const token of [Buffer.from('[null, null]').toString('base64url'), Buffer.from('{"0":1,"1":2,"length":2}').toString('base64url'), Buffer.from('"x"').toString('base64url'), '%%%', Buffer.from('[1,"x"]').toString('base64url')]) {
      const res = await searchFor('subject', { subject: { type: 'agent' }, action: { name: 'read' }, resource: { type: 'Document', id: 'x' }, page: { token } });
      expect(res.status, token).toBe(400);
    }
  });
});
