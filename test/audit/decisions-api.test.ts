import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backends } from '../support/backends.ts';
import { ADMIN_TOKEN, PEP_TOKEN, agentBody, agentPrivateKey, seedPrincipals, startTestNode, type TestNode } from '../support/node.ts';
import { peoplePins, personToken } from '../support/people.ts';

// GET /v1/decisions: the decision log newest first, filtered, in keyset pages that together
// hold every decision exactly once; each one's id is the one trace takes. On both backends (the
// filters are SQL over the recorded request). Plus what a caller can do wrong with it.

const LEASH = fileURLToPath(new URL('../../src/cli/leash.js', import.meta.url));
const folder = (id: string) => ({ type: 'Folder', id });

describe.each(backends)('the decisions API on $name', ({ name, fresh }) => {
  let node: TestNode;
  let url: string;
  const made: { agent: string; doc: string; allowed: boolean }[] = [];
  let middle: string;

  const decide = async (agent: string, doc: string, inFolder: string) => {
    const now = Math.floor(Date.now() / 1000);
    const token = await new SignJWT({ authorization_details: [{ type: 'leash:cedar', actions: ['read'], resourceIn: folder('invoices') }], jti: crypto.randomUUID() })
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setIssuer('https://idp.example').setAudience('leash').setSubject(agent).setIssuedAt(now).setExpirationTime(now + 120).sign(agentPrivateKey);
    const res = await node.api('POST', '/access/v1/evaluation', {
      subject: { type: 'agent', id: agent, properties: { token } }, action: { name: 'read' }, resource: { type: 'Document', id: doc },
      context: { entities: [{ uid: { type: 'Document', id: doc }, attrs: {}, parents: [folder(inFolder)] }] },
    }, {}, PEP_TOKEN);
    made.push({ agent, doc, allowed: res.body.decision });
  };
  const list = async (query: string, token: string | null = ADMIN_TOKEN) => node.api('GET', `/v1/decisions${query}`, undefined, {}, token);

  beforeAll(async () => {
    node = await startTestNode(await fresh(), { nodeId: `decisions-${name}`, humanPins: peoplePins });
    await node.app.listen({ port: 0, host: '127.0.0.1' });
    url = `http://127.0.0.1:${(node.app.server.address() as { port: number }).port}`;
    await seedPrincipals(node);
    for (const id of ['a-bot', 'b-bot']) {
      expect((await node.api('POST', '/v1/agents', agentBody({ id, ceiling: { template: 'ceiling-folder', values: { '?resource': folder('invoices') } } }))).status).toBe(201);
      expect((await node.api('POST', `/v1/agents/${id}/authorize`, { grants: [{ template: 'grant-read-folder', values: { '?resource': folder('invoices') } }] })).status).toBe(200);
    }
    await new Promise((r) => setTimeout(r, 1100)); // tokens issued after the authorize (whole seconds)
    for (let i = 0; i < 6; i++) await decide('a-bot', `d-${i}`, i % 3 === 0 ? 'payroll' : 'invoices');
    await new Promise((r) => setTimeout(r, 20));
    middle = new Date().toISOString();
    await new Promise((r) => setTimeout(r, 20));
    for (let i = 0; i < 4; i++) await decide('b-bot', `e-${i}`, 'invoices');
  });
  afterAll(async () => node?.close());

  it('lists every decision newest first; the pages of a walk hold each exactly once', async () => {
    const all = await list('?limit=1000');
    expect(all.status).toBe(200);
    expect(all.body.next).toBeUndefined();
    const docs = all.body.decisions.map((d: { resource: { id: string } }) => d.resource.id);
    expect(docs).toEqual(made.map((m) => m.doc).reverse());
    const seen: string[] = [];
    let after = '';
    for (let pages = 0; pages < 10; pages++) {
      const page = await list(`?limit=3${after}`);
      seen.push(...page.body.decisions.map((d: { id: string }) => d.id));
      if (!page.body.next) break;
      after = `&after=${page.body.next}`;
    }
    expect(seen).toEqual(all.body.decisions.map((d: { id: string }) => d.id));
    expect(all.body.decisions[0]).toMatchObject({ subject: { type: 'agent', id: 'b-bot' }, action: 'read', resource: { type: 'Document', id: 'e-3' }, decision: true, layer: 'all', code: null, nodeId: `decisions-${name}`, policyVersion: 1 });
    // The id is the one trace takes.
    const trace = await node.api('GET', `/v1/audit/decisions/${all.body.decisions[0].id}/trace`);
    expect(trace.status).toBe(200);
  });

  it('filters by agent, outcome and time', async () => {
    const docsOf = async (query: string) => (await list(query)).body.decisions.map((d: { resource: { id: string } }) => d.resource.id);
    expect(await docsOf('?agent=a-bot&decision=false')).toEqual(['d-3', 'd-0']);
    expect(await docsOf('?agent=a-bot&decision=true')).toEqual(['d-5', 'd-4', 'd-2', 'd-1']);
    expect(await docsOf(`?since=${middle}`)).toEqual(['e-3', 'e-2', 'e-1', 'e-0']);
    expect(await docsOf(`?until=${middle}&agent=b-bot`)).toEqual([]);
    expect(await docsOf(`?until=${middle}&limit=2`)).toEqual(['d-5', 'd-4']);
    expect(await docsOf('?agent=nobody')).toEqual([]);
  });

  it('refuses what is not a filter, a page or an instant (400), anonymous callers (401) and people without audit (403)', async () => {
    for (const q of [
      '?limit=0', '?limit=1001', '?limit=-1', '?limit=abc', '?limit=1e3', '?limit=', '?after=0', '?after=abc', '?after=99999999999999999', '?after=1&after=2',
      '?since=yesterday', '?since=2026-13-40T00:00:00Z', `?since=${middle}&until=${middle}`, '?decision=allow', '?decision=1',
      '?agent=__proto__', '?agent=a%00b', `?agent=${'x'.repeat(300)}`, '?agent=', '?other=1', '?agent[]=a-bot',
    ]) {
      const res = await list(q);
      expect(res.status, q).toBe(400);
      expect(res.body.code, q).toBe('VALIDATION_FAILED');
    }
    expect((await list('', null)).status).toBe(401);
    expect((await list('', await personToken('alice'))).status).toBe(403);
  });

  it('leash decisions list, through the real executable', async () => {
    const { stdout } = await promisify(execFile)(process.execPath, [LEASH, 'decisions', 'list', '--agent', 'a-bot', '--decision', 'deny', '--url', url, '--token', ADMIN_TOKEN], { cwd: join(LEASH, '..') });
    expect(JSON.parse(stdout).decisions.map((d: { resource: { id: string } }) => d.resource.id)).toEqual(['d-3', 'd-0']);
  });
});
