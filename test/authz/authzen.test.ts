import { mkdtempSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startNode } from '../../src/node.ts';
import { freshPglite, freshPostgres } from '../support/backends.ts';
import { ADMIN_TOKEN, PEP_TOKEN, startTestNode, type TestNode } from '../support/node.ts';

const here = (f: string) => new URL(f, import.meta.url);
const todo = {
  schema: readFileSync(here('./todo/schema.cedarschema'), 'utf8'),
  policies: readFileSync(here('./todo/policies.cedar'), 'utf8'),
  aliases: { user: 'Human' },
};
const vectors = JSON.parse(readFileSync(here('./todo/todo-decisions.json'), 'utf8')) as {
  evaluation: { request: unknown; expected: boolean }[];
  evaluations: { request: unknown; expected: { decision: boolean }[] }[];
};

// The Todo scenario's users (PIDs) with their roles, registered as humans in role groups.
const users: [string, string, string[]][] = [
  ['CiRmZDA2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs', 'rick@the-citadel.com', ['admin', 'evil_genius']],
  ['CiRmZDE2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs', 'morty@the-citadel.com', ['editor']],
  ['CiRmZDI2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs', 'summer@the-smiths.com', ['editor']],
  ['CiRmZDM2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs', 'beth@the-smiths.com', ['viewer']],
  ['CiRmZDQ2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs', 'jerry@the-smiths.com', ['viewer']],
];
const RICK = users[0]![0];
const BETH = users[3]![0];

let node: TestNode;
const pep = (url: string, body: unknown, headers: Record<string, string> = {}) => node.api('POST', url, body, headers, PEP_TOKEN);

beforeAll(async () => {
  node = await startTestNode(await freshPostgres());
  const published = await node.api('PUT', '/v1/policy-set', todo);
  expect(published.status, JSON.stringify(published.body)).toBe(200);
  for (const [id, parents] of [['viewer', []], ['editor', ['viewer']], ['admin', ['editor']], ['evil_genius', ['editor']]] as const) {
    expect((await node.api('POST', '/v1/groups', { id, parents })).status).toBe(201);
  }
  for (const [id, email, groups] of users) expect((await node.api('POST', '/v1/humans', { id, email, groups })).status).toBe(201);
});
afterAll(async () => node?.close());

describe('AuthZEN Todo interop (the public cases, copied from shared/vectors/authzen/todo-decisions.json)', () => {
  it.each(vectors.evaluation.map((v, i) => ({ i, ...v })))('evaluation #$i → $expected', async ({ request, expected }) => {
    const res = await pep('/access/v1/evaluation', request);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.decision).toBe(expected);
    expect(res.body.context).toMatchObject({ id: expect.any(String), layer: 'subject', policyVersion: 2 });
    if (expected) expect(res.body.context.reasons.length).toBeGreaterThan(0);
  });

  it.each(vectors.evaluations.map((v, i) => ({ i, ...v })))('evaluations #$i', async ({ request, expected }) => {
    const res = await pep('/access/v1/evaluations', request);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.evaluations.map((e: { decision: boolean }) => ({ decision: e.decision }))).toEqual(expected);
  });
});

const read = (subject: string, ownerID: string) => ({
  subject: { type: 'user', id: subject },
  action: { name: 'can_delete_todo' },
  resource: { type: 'todo', id: 't1', properties: { ownerID } },
});

describe('AuthZEN API behaviour', () => {
  it('names the policies that decided, and echoes X-Request-ID', async () => {
    const res = await pep('/access/v1/evaluation', read(RICK, 'someone@else'), { 'x-request-id': 'pep-req-42' });
    expect(res.headers['x-request-id']).toBe('pep-req-42');
    expect(res.body.context.reasons).toEqual(['todo-delete-any']);
    expect(res.body.context.position).toBe(node.view.position);
  });

  it('evaluations semantics: execute_all, deny_on_first_deny, permit_on_first_permit', async () => {
    const items = [{ resource: { type: 'todo', id: 'a', properties: { ownerID: 'beth@the-smiths.com' } } }, { resource: { type: 'todo', id: 'b', properties: { ownerID: 'x@y' } } }, { resource: { type: 'todo', id: 'c', properties: { ownerID: 'x@y' } } }];
    const batch = (subject: string, semantic?: string) =>
      pep('/access/v1/evaluations', { subject: { type: 'user', id: subject }, action: { name: 'can_delete_todo' }, evaluations: items, ...(semantic ? { options: { evaluations_semantic: semantic } } : {}) });
    const decisions = async (p: ReturnType<typeof batch>) => (await p).body.evaluations.map((e: { decision: boolean }) => e.decision);
    expect(await decisions(batch(BETH))).toEqual([false, false, false]); // a viewer deletes nothing
    expect(await decisions(batch(RICK, 'execute_all'))).toEqual([true, true, true]);
    expect(await decisions(batch(BETH, 'deny_on_first_deny'))).toEqual([false]);
    expect(await decisions(batch(RICK, 'permit_on_first_permit'))).toEqual([true]);
    // Without an evaluations array the request is a single evaluation.
    const single = await pep('/access/v1/evaluations', read(RICK, 'x@y'));
    expect(single.body.decision).toBe(true);
  });

  it('ignores unknown members, as the spec requires', async () => {
    const res = await pep('/access/v1/evaluation', { ...read(RICK, 'x'), futureField: { a: 1 }, subject: { type: 'user', id: RICK, extra: true } });
    expect(res.status).toBe(200);
  });

  it('an agent subject without a token is denied at the token layer', async () => {
    const res = await pep('/access/v1/evaluation', { subject: { type: 'agent', id: 'bot' }, action: { name: 'can_read_user' }, resource: { type: 'user', id: 'x' } });
    expect(res.body).toMatchObject({ decision: false, context: { layer: 'token' } });
  });

  it('a caller cannot rewrite a registered entity through context.entities', async () => {
    const forged = { uid: { type: 'Human', id: BETH }, attrs: { email: 'beth@the-smiths.com' }, parents: [{ type: 'Group', id: 'admin' }] };
    const res = await pep('/access/v1/evaluation', { ...read(BETH, 'x@y'), context: { entities: [forged] } });
    expect(res.status).toBe(400);
    expect(res.body.code).toBe('VALIDATION_FAILED');
  });

  it.each([
    ['no subject', { action: { name: 'can_read_user' }, resource: { type: 'user', id: 'x' } }],
    ['a numeric subject id', { subject: { type: 'user', id: 7 }, action: { name: 'can_read_user' }, resource: { type: 'user', id: 'x' } }],
    ['an empty action name', { subject: { type: 'user', id: RICK }, action: { name: '' }, resource: { type: 'user', id: 'x' } }],
    ['a type that is no Cedar identifier', { subject: { type: 'us er', id: RICK }, action: { name: 'can_read_user' }, resource: { type: 'user', id: 'x' } }],
    ['properties that break the schema', { ...read(RICK, 'x'), resource: { type: 'todo', id: 't', properties: { ownerID: 42 } } }],
    ['context.entities not an array', { ...read(RICK, 'x'), context: { entities: { a: 1 } } }],
    ['an unknown evaluations semantic', { ...read(RICK, 'x'), evaluations: [{}], options: { evaluations_semantic: 'maybe' } }],
  ])('%s is 400', async (_name, body) => {
    const url = 'evaluations' in (body as object) ? '/access/v1/evaluations' : '/access/v1/evaluation';
    const res = await pep(url, body);
    expect(res.status, JSON.stringify(res.body)).toBe(400);
    expect(res.body.code).toBe('VALIDATION_FAILED');
  });

  it('context the schema does not declare is refused rather than ignored, a 64-bit integer as any other value', async () => {
    const big = '{"subject":{"type":"user","id":"' + RICK + '"},"action":{"name":"can_read_user"},"resource":{"type":"user","id":"x"},"context":{"amount":9007199254740993}}';
    for (const body of [big, big.replace('9007199254740993', '1')]) {
      const res = await pep('/access/v1/evaluation', body);
      expect(res.status).toBe(400);
      expect(res.body).toMatchObject({ code: 'VALIDATION_FAILED', detail: expect.stringContaining('amount') });
    }
  });

  it('an evaluations item with no resource and no default is 400', async () => {
    const res = await pep('/access/v1/evaluations', { subject: { type: 'user', id: RICK }, action: { name: 'can_read_user' }, evaluations: [{}] });
    expect(res.status).toBe(400);
  });

  it('callers need a PEP or operator token; a PEP token does not open the admin API', async () => {
    expect((await node.api('POST', '/access/v1/evaluation', read(RICK, 'x'), {}, null)).status).toBe(401);
    expect((await node.api('POST', '/access/v1/evaluation', read(RICK, 'x'), {}, 'not-a-pep-token-0000000000')).status).toBe(401);
    expect((await node.api('POST', '/access/v1/evaluation', read(RICK, 'x'), {}, ADMIN_TOKEN)).status).toBe(200);
    expect((await node.api('GET', '/v1/agents', undefined, {}, PEP_TOKEN)).status).toBe(401);
    const meta = await node.api('GET', '/.well-known/authzen-configuration', undefined, {}, null);
    expect(meta.body.access_evaluation_endpoint).toMatch(/\/access\/v1\/evaluation$/);
    expect(meta.body.access_evaluations_endpoint).toMatch(/\/access\/v1\/evaluations$/);
  });
});

describe('policy set publishing', () => {
  it('an invalid set is 422 POLICY_INVALID with Cedar diagnostics, and nothing changes', async () => {
    const before = await node.eventCount();
    const bad = [
      { ...todo, policies: 'permit (principal, action, resource' }, // does not parse
      { ...todo, policies: '@id("x") permit (principal, action == Action::"no_such_action", resource);' }, // strict validation
      { ...todo, policies: '@id("x") permit (principal in Group::"a", action, resource) when { principal.nope == 1 };' },
      { ...todo, policies: '@id("dup") permit (principal, action, resource);\n@id("dup") forbid (principal, action, resource);' },
      { ...todo, schema: 'entity {' },
      // Ids Leash gives an agent's ceiling and grant links, which decisions name as reasons.
      { ...todo, policies: '@id("ceiling:invoice-bot") permit (principal, action, resource);' },
      { ...todo, policies: '@id("grant:invoice-bot:0") permit (principal, action, resource);' },
      { ...todo, policies: '@id("grant:t") permit (principal == ?principal, action, resource);' },
    ];
    for (const body of bad) {
      const res = await node.api('PUT', '/v1/policy-set', body);
      expect(res.status, JSON.stringify(body)).toBe(422);
      expect(res.body.code).toBe('POLICY_INVALID');
      expect(res.body.diagnostics.length).toBeGreaterThan(0);
    }
    expect(await node.eventCount()).toBe(before);
    expect((await node.api('GET', '/v1/policy-set')).body.version).toBe(2);
  });

  it('a published version takes effect at once, and decisions name it', async () => {
    const before = await pep('/access/v1/evaluation', read(RICK, 'x@y'));
    expect(before.body).toMatchObject({ decision: true, context: { policyVersion: 2 } });
    const stricter = { ...todo, policies: `${todo.policies}\n@id("no-deletes-today")\nforbid (principal, action == Action::"can_delete_todo", resource);` };
    const put = await node.api('PUT', '/v1/policy-set', stricter, { 'if-match': '"2"' });
    expect(put.body).toMatchObject({ version: 3, policyIds: expect.arrayContaining(['no-deletes-today']) });
    const after = await pep('/access/v1/evaluation', read(RICK, 'x@y'));
    expect(after.body).toMatchObject({ decision: false, context: { policyVersion: 3, reasons: ['no-deletes-today'] } });
    const stale = await node.api('PUT', '/v1/policy-set', todo, { 'if-match': '"2"' });
    expect(stale.status).toBe(412);
    expect((await node.api('PUT', '/v1/policy-set', todo)).body.version).toBe(4);
  });
});

describe('policy files at start', () => {
  it('the first start publishes cedar/ as version 1; an invalid cedar/ refuses to start', async () => {
    const fresh = await startTestNode(freshPglite());
    try {
      const got = await fresh.api('GET', '/v1/policy-set');
      // Every policy of every file of policies/ (admin.cedar, examples.cedar, finance.cedar).
      expect(got.body.version).toBe(1);
      expect([...got.body.policyIds].sort()).toEqual([
        'security-team-contains-and-audits', 'owners-suspend-their-own-agents', 'security-team-publishes-policies', 'only-the-security-team-publishes-policies',
        'finance-reads-invoices', 'archive-is-read-only', 'finance-agents-delegate-within-the-group',
        'finance-agents-pay-invoices', 'large-payments-need-the-owners-approval', 'finance-pays-invoices',
      ].sort());
    } finally {
      await fresh.close();
    }
    const dir = mkdtempSync(join(tmpdir(), 'leash-cedar-'));
    mkdirSync(join(dir, 'policies'));
    writeFileSync(join(dir, 'schema.cedarschema'), readFileSync(here('../../cedar/schema.cedarschema')));
    writeFileSync(join(dir, 'policies', 'broken.cedar'), '@id("b") permit (principal, action == Action::"fly", resource);');
    await expect(startNode({ backend: freshPglite(), adminToken: ADMIN_TOKEN, nodeId: 'x', cedarDir: dir })).rejects.toThrow(/invalid[\s\S]*fly/);
  });
});
