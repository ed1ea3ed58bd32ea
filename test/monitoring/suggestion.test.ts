import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freshPglite } from '../support/backends.ts';
import { ADMIN_TOKEN, PEP_TOKEN, agentBody, agentPrivateKey, listeningNode, seedPrincipals, type TestNode } from '../support/node.ts';

// Least-privilege suggestions (GET /v1/agents/{id}/suggestion, `leash suggest`): from an agent's
// recorded decisions, the narrowest grants that cover every allowed request, what each change
// removes, and the what-if of the proposal over the same window. One embedded node; the agents
// make real decisions through the AuthZEN API first.

const LEASH = join(import.meta.dirname, '..', '..', 'src', 'cli', 'leash.js');
const run = promisify(execFile);
const folder = (id: string) => ({ type: 'Folder', id });
const doc = (id: string) => ({ type: 'Document', id });
const readGrant = (on: { type: string; id: string }) => ({ template: 'grant-read-folder', values: { '?resource': on } });
const ceiling = { template: 'ceiling-folder', values: { '?resource': folder('invoices') } };

let node: TestNode;
let url: string;

async function token(agent: string): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ authorization_details: [{ type: 'leash:cedar', actions: ['read'], resourceIn: folder('invoices') }], jti: crypto.randomUUID() })
    .setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setIssuer('https://idp.example').setAudience('leash').setSubject(agent)
    .setIssuedAt(now).setExpirationTime(now + 240).sign(agentPrivateKey);
}

/** A read of Document `id`; the PEP describes the hierarchy it knows (`entities`: id → parent folder ids). */
async function read(agent: string, t: string, id: string, entities: Record<string, string[]>) {
  const res = await node.api('POST', '/access/v1/evaluation', {
    subject: { type: 'agent', id: agent, properties: { token: t } }, action: { name: 'read' }, resource: doc(id),
    context: { entities: Object.entries(entities).map(([e, parents]) => ({ uid: e.startsWith('f:') ? folder(e.slice(2)) : doc(e), attrs: {}, parents: parents.map(folder) })) },
  }, {}, PEP_TOKEN);
  expect(res.status).toBe(200);
  return res.body.decision as boolean;
}

/** Every document of Folder::"invoices" the PEP knows: d1, d2 and d3 (which reader-bot never reads). */
const invoices = { 'f:invoices': [], d1: ['invoices'], d2: ['invoices'], d3: ['invoices'] };
const nextSecond = () => new Promise((r) => setTimeout(r, 1_100)); // tokens must be issued after an authorize (whole seconds)

async function register(id: string, grants: unknown[]) {
  expect((await node.api('POST', '/v1/agents', agentBody({ id, ceiling }))).status).toBe(201);
  expect((await node.api('POST', `/v1/agents/${id}/authorize`, { grants })).status).toBe(200);
}

const suggestion = async (id: string, query = '') => node.api('GET', `/v1/agents/${id}/suggestion${query}`);

beforeAll(async () => {
  ({ node, url } = await listeningNode(freshPglite()));
  await seedPrincipals(node);
  // reader-bot: the whole of invoices, and reports it never uses. cli-bot: the same, for the executable.
  // tidy-bot: documents in a subfolder q1 of invoices. idle-bot: a grant and no decisions at all.
  await register('reader-bot', [readGrant(folder('invoices')), readGrant(folder('reports'))]);
  await register('cli-bot', [readGrant(folder('invoices'))]);
  await register('tidy-bot', [readGrant(folder('invoices'))]);
  await register('idle-bot', [readGrant(folder('invoices'))]);
  await nextSecond();
  for (const agent of ['reader-bot', 'cli-bot']) {
    const t = await token(agent);
    for (const id of ['d1', 'd2', 'd1']) expect(await read(agent, t, id, invoices)).toBe(true);
  }
  // q1 holds d4 and d5, both read; invoices also holds d9, seen and never read.
  const tidy = await token('tidy-bot');
  const q1 = { 'f:invoices': [], 'f:q1': ['invoices'], d4: ['q1'], d5: ['q1'], d9: ['invoices'] };
  for (const id of ['d4', 'd5']) expect(await read('tidy-bot', tidy, id, q1)).toBe(true);
});
afterAll(async () => node?.close());

describe('GET /v1/agents/{id}/suggestion', () => {
  it('a whole folder granted, two of its three documents read: exactly those two, what goes, and a what-if that flips no allow', async () => {
    const res = await suggestion('reader-bot', '?days=7');
    expect(res.status).toBe(200);
    const s = res.body;
    expect(s).toMatchObject({ agent: 'reader-bot', decisions: { allowed: 3, denied: 0 }, window: { days: 7 }, capped: false });
    expect(Date.parse(s.window.until) - Date.parse(s.window.since)).toBe(7 * 86_400_000);
    expect(s.current).toEqual([readGrant(folder('invoices')), readGrant(folder('reports'))]);
    expect(s.proposed).toEqual([readGrant(doc('d1')), readGrant(doc('d2'))]);
    expect(s.changes[0]).toMatchObject({ kind: 'narrowed', proposed: [readGrant(doc('d1')), readGrant(doc('d2'))] });
    expect(s.changes[0].removes).toBe('grant-read-folder on Folder::"invoices" → Document::"d1", Document::"d2": read on the rest of Folder::"invoices" is removed');
    expect(s.whatIf).toEqual({ decisions: 3, allowToDeny: 0, denyToAllow: 0, undecidable: 0, flips: [] });
  });

  it('a grant no allowed request used is proposed for removal, saying what it gave', async () => {
    const { changes } = (await suggestion('reader-bot')).body;
    expect(changes[1]).toEqual({
      grant: readGrant(folder('reports')), kind: 'removed', proposed: [],
      removes: 'grant-read-folder on Folder::"reports": no allowed request used it in the window; read on Folder::"reports" and everything in it is removed',
    });
  });

  it('collapse=true proposes the folder the documents share, though d3 in it went unused', async () => {
    const s = (await suggestion('reader-bot', '?collapse=true')).body;
    expect(s.proposed).toEqual([readGrant(folder('invoices'))]);
    expect(s.changes[0]).toMatchObject({ kind: 'kept', removes: 'grant-read-folder on Folder::"invoices": kept as is (collapsed as asked: the resources used share Folder::"invoices"); nothing is removed' });
  });

  it('collapses by itself to a folder whose every child seen in the window was used, and no further', async () => {
    const s = (await suggestion('tidy-bot')).body;
    expect(s.proposed).toEqual([readGrant(folder('q1'))]);
    expect(s.changes[0].removes).toBe('grant-read-folder on Folder::"invoices" → Folder::"q1": read on the rest of Folder::"invoices" is removed');
    expect(s.whatIf).toMatchObject({ decisions: 2, allowToDeny: 0 });
  });

  it('an agent with no decisions in the window: an empty proposal, and a note that says why', async () => {
    const s = (await suggestion('idle-bot')).body;
    expect(s).toMatchObject({ decisions: { allowed: 0, denied: 0 }, proposed: [], whatIf: { decisions: 0, flips: [] } });
    expect(s.changes[0].kind).toBe('removed');
    expect(s.note).toMatch(/no decisions of idle-bot recorded in the last 30 days/);
  });

  it('a proposal that misses a recorded allow lists it in the what-if (the hook decides with the proposal, not the grants)', async () => {
    const { replay } = await import('../../src/audit/replay.ts');
    const { SubjectSource } = await import('../../src/audit/source.ts');
    const source = new SubjectSource(node.connection.db, 'reader-bot', new Date(Date.now() - 86_400_000));
    const report = await replay(source, { grants: { agent: 'reader-bot', links: [readGrant(doc('d1'))] } });
    expect(report).toMatchObject({ mode: 'what-if', decisions: 3, allowToDeny: 1, denyToAllow: 0 });
    expect(report.records.map((r) => [r.resource.id, r.change])).toEqual([['d2', 'allow→deny']]);
  });

  it('past the cap on decisions read, the window is cut short and the answer says so', async () => {
    const { suggestGrants } = await import('../../src/monitoring/suggestion.ts');
    const agent = node.view.agents.get('tidy-bot')!;
    const s = await suggestGrants(node.connection.db, { agent, policies: node.policies.current()!, days: 30, collapse: false, now: new Date(), maxDecisions: 1 });
    expect(s).toMatchObject({ capped: true, decisions: { allowed: 1, denied: 0 }, proposed: [readGrant(doc('d4'))], whatIf: { decisions: 1, allowToDeny: 0 } });
    expect(s.note).toBe('only the first 1 decisions of the window were read');
    expect((await suggestion('tidy-bot')).body.capped).toBe(false);
  });

  it('bad days: 400 VALIDATION_FAILED, never a 500', async () => {
    for (const q of ['?days=0', '?days=91', '?days=-1', '?days=1.5', '?days=abc', '?days=99999999999999999999', '?days=', '?days=30&days=31', '?collapse=yes', '?other=1']) {
      const res = await suggestion('reader-bot', q);
      expect([q, res.status, res.body.code]).toEqual([q, 400, 'VALIDATION_FAILED']);
    }
    expect((await suggestion('reader-bot', '?days=90')).status).toBe(200);
    expect((await suggestion('reader-bot', '?days=1')).status).toBe(200);
  });

  it('unknown and hostile agent ids: 404 AGENT_NOT_FOUND or 400, never a 500; no operator token, 401', async () => {
    expect((await suggestion('nobody')).body.code).toBe('AGENT_NOT_FOUND');
    expect((await suggestion('nobody')).status).toBe(404);
    for (const id of ['%2e%2e', '..', '%00', 'a%00b', 'x'.repeat(300), '__proto__', 'constructor', '%2F', 'r%C3%A9']) {
      const res = await suggestion(id);
      expect([400, 404], `${id}: ${res.status} ${JSON.stringify(res.body)}`).toContain(res.status);
      expect(res.headers['content-type']).toMatch(/application\/problem\+json/);
    }
    expect((await node.api('GET', '/v1/agents/reader-bot/suggestion', undefined, {}, null)).status).toBe(401);
  });
});

describe('applying a proposal', () => {
  it('through the routes the CLI uses: d1 and d2 stay allowed, d3 is denied', async () => {
    const s = (await suggestion('reader-bot')).body;
    expect(s.version).toBe(2);
    // Authorize takes an agent that is not active: suspend, then authorize, each at the version read.
    expect((await node.api('POST', '/v1/agents/reader-bot/suspend', { reason: 'apply' }, { 'if-match': `"${s.version}"` })).status).toBe(200);
    const applied = await node.api('POST', '/v1/agents/reader-bot/authorize', { grants: s.proposed }, { 'if-match': `"${s.version + 1}"` });
    expect(applied.status).toBe(200);
    expect(applied.body.grants).toEqual([readGrant(doc('d1')), readGrant(doc('d2'))]);
    await nextSecond();
    const t = await token('reader-bot');
    expect([await read('reader-bot', t, 'd1', invoices), await read('reader-bot', t, 'd2', invoices), await read('reader-bot', t, 'd3', invoices)]).toEqual([true, true, false]);
  });

  it('leash suggest, the real executable: the table, --json, then --apply; afterwards d3 is denied', async () => {
    const cli = async (...args: string[]) => (await run(process.execPath, [LEASH, 'suggest', 'cli-bot', ...args, '--url', url, '--token', ADMIN_TOKEN])).stdout;
    const printed = await cli();
    expect(printed).toContain('cli-bot over the last 30 days');
    expect(printed).toContain('narrowed grant-read-folder on Folder::"invoices" → Document::"d1", Document::"d2"');
    expect(printed).toContain('what-if over 3 decisions: 0 allow→deny, 0 deny→allow');
    expect(JSON.parse(await cli('--json', '--days', '5')).proposed).toEqual([readGrant(doc('d1')), readGrant(doc('d2'))]);
    const applied = await cli('--apply');
    expect(JSON.parse(applied.slice(applied.indexOf('{')))).toMatchObject({ id: 'cli-bot', status: 'active', grants: [readGrant(doc('d1')), readGrant(doc('d2'))] });
    await nextSecond();
    const t = await token('cli-bot');
    expect([await read('cli-bot', t, 'd1', invoices), await read('cli-bot', t, 'd2', invoices), await read('cli-bot', t, 'd3', invoices)]).toEqual([true, true, false]);
    // Each new grant has been used since: a second suggestion keeps both, and its what-if (over
    // the decisions before the apply too) flips nothing.
    const again = JSON.parse(await cli('--json'));
    expect(again.changes.map((c: { kind: string }) => c.kind)).toEqual(['kept', 'kept']);
    expect(again.whatIf).toMatchObject({ decisions: 6, allowToDeny: 0, denyToAllow: 0 });
  });

  it('leash suggest --apply at a version the agent has moved past: 412, and the agent is left as it was', async () => {
    const failed = await run(process.execPath, [LEASH, 'suggest', 'idle-bot', '--apply', '--if-match', '1', '--url', url, '--token', ADMIN_TOKEN]).then(() => null, (err) => err);
    expect(failed?.code).toBe(1);
    expect(failed.stderr).toContain('VERSION_MISMATCH');
    expect((await node.api('GET', '/v1/agents/idle-bot')).body).toMatchObject({ status: 'active', version: 2, grants: [readGrant(folder('invoices'))] });
  });
});
