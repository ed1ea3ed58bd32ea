import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CompactSign, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { archiveAudit } from '../../src/audit/archive.ts';
import { ArchiveSource } from '../../src/audit/archive-source.ts';
import { replay } from '../../src/audit/replay.ts';
import { PostgresSource } from '../../src/audit/source.ts';
import { freshPostgres } from '../support/backends.ts';
import { PEP_TOKEN, agentBody, agentPrivateKey, credentials, startTestNode, type TestNode } from '../support/node.ts';

// What a caller or an agent's token can say must never turn a deny into an allow, cost
// unbounded work, or leave an answer the decision log does not hold.

// The example `pay` action of cedar/ gives way to this test's own.
const schema = `${readFileSync(new URL('../../cedar/schema.cedarschema', import.meta.url), 'utf8').replace('amount?: Long,', 'amount?: Long, factor?: Long,').replace(/\naction pay appliesTo \{[\s\S]*?\n\};\n/, '\n')}
action pay appliesTo { principal: [Agent], resource: [Document, Folder] };
`;
const policies = `
@id("ceiling-folder")
@layer("ceiling")
permit (principal, action in [Action::"read", Action::"write"], resource in ?resource);

@id("invoices-open")
permit (principal, action in [Action::"read", Action::"write"], resource in Folder::"invoices");

@id("no-big-amounts")
forbid (principal, action, resource) when { context has amount && context.amount > 1000 };

@id("ceiling-own-reads")
@layer("ceiling")
permit (principal == ?principal, action == Action::"read", resource in ?resource);

@id("grant-own-writes")
permit (principal == ?principal, action == Action::"write", resource in ?resource);

// Only agents pay (the schema says so): the forbid reads an attribute only agents have.
@id("ceiling-pay")
@layer("ceiling")
permit (principal, action == Action::"pay", resource in Folder::"invoices");

@id("pay-invoices")
permit (principal, action == Action::"pay", resource in Folder::"invoices");

@id("low-trust-pays-nothing")
forbid (principal, action == Action::"pay", resource) when { principal.trustScore < 50 };

// Fails to evaluate (overflow) for any factor above 1: Cedar skips such a policy.
@id("no-overflowing-factor")
forbid (principal, action == Action::"write", resource) when { context has factor && context.factor * 9223372036854775807 < 0 };
`;

const folder = (id: string) => ({ type: 'Folder', id });
const entities = [
  { uid: folder('invoices'), attrs: {}, parents: [] },
  { uid: { type: 'Document', id: 'd1' }, attrs: {}, parents: [folder('invoices')] },
];
const readInvoices = [{ type: 'leash:cedar', actions: ['read', 'write'], resourceIn: folder('invoices') }];

async function mint(claims: Record<string, unknown>): Promise<string> {
  const iat = Math.floor(Date.now() / 1000);
  return new SignJWT({ iss: 'https://idp.example', aud: 'leash', sub: 'bot', iat, exp: iat + 120, authorization_details: readInvoices, jti: crypto.randomUUID(), ...claims })
    .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
    .sign(agentPrivateKey);
}

let node: TestNode;

const evaluation = (token: string, action: string, context: Record<string, unknown> = {}) => ({
  subject: { type: 'agent', id: 'bot', properties: { token } },
  action: { name: action },
  resource: { type: 'Document', id: 'd1' },
  context: { entities, ...context },
});
const decide = (body: unknown) => node.api('POST', '/access/v1/evaluation', body, {}, PEP_TOKEN);
const decideMany = (body: unknown) => node.api('POST', '/access/v1/evaluations', body, {}, PEP_TOKEN);

/** How many decisions the log holds (each answer given must be one of them). */
const recorded = async () => Number((await node.connection.db.selectFrom('decisions').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n);
const record = async (id: string) => node.connection.db.selectFrom('decisions').selectAll().where('id', '=', id).executeTakeFirstOrThrow();

beforeAll(async () => {
  node = await startTestNode(await freshPostgres());
  expect((await node.api('PUT', '/v1/policy-set', { schema, policies })).status).toBe(200);
  await node.api('POST', '/v1/groups', { id: 'finance-agents' });
  await node.api('POST', '/v1/humans', { id: 'alice', email: 'alice@example.com', groups: [] });
  const res = await node.api('POST', '/v1/agents', agentBody({ id: 'bot', credentials: credentials(), ceiling: { template: 'ceiling-folder', values: { '?resource': folder('invoices') } } }));
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  expect((await node.api('POST', '/v1/agents/bot/authorize', { grants: [] })).status).toBe(200);
});
afterAll(async () => node?.close());

describe('a forbid is never switched off', () => {
  it('the baseline: a small amount is allowed, a large one forbidden', async () => {
    const token = await mint({});
    expect((await decide(evaluation(token, 'read', { amount: 5 }))).body).toMatchObject({ decision: true });
    expect((await decide(evaluation(token, 'read', { amount: 5000 }))).body).toMatchObject({ decision: false, context: { reasons: ['no-big-amounts'] } });
  });

  it('a context value of the wrong type is refused against the schema (400 naming the attribute), for agents and plain subjects', async () => {
    const before = await recorded();
    const agent = await decide(evaluation(await mint({}), 'read', { amount: '5000' }));
    expect(agent.status).toBe(400);
    expect(agent.body).toMatchObject({ code: 'VALIDATION_FAILED' });
    expect(agent.body.detail).toMatch(/amount/);
    const plain = await decide({ subject: { type: 'human', id: 'alice' }, action: { name: 'read' }, resource: { type: 'Document', id: 'd1' }, context: { entities, amount: '5000' } });
    expect(plain.status).toBe(400);
    expect(plain.body.detail).toMatch(/amount/);
    const unknown = await decide(evaluation(await mint({}), 'read', { amounts: 5 }));
    expect(unknown.status).toBe(400);
    expect(unknown.body.detail).toMatch(/amounts/);
    expect(await recorded()).toBe(before);
  });

  it('a forbid that fails to evaluate denies, naming the policy (Cedar alone would skip it and allow)', async () => {
    const token = await mint({});
    expect((await decide(evaluation(token, 'write', { factor: 1 }))).body).toMatchObject({ decision: true });
    const agent = (await decide(evaluation(token, 'write', { factor: 2 }))).body;
    expect(agent).toMatchObject({ decision: false, context: { code: 'POLICY_EVALUATION_ERROR', reasons: ['no-overflowing-factor'] } });
    expect(agent.context.errors.join()).toMatch(/no-overflowing-factor: .*overflow/);
    const plain = (await decide({ subject: { type: 'human', id: 'alice' }, action: { name: 'write' }, resource: { type: 'Document', id: 'd1' }, context: { entities, factor: 2 } })).body;
    expect(plain).toMatchObject({ decision: false, context: { layer: 'subject', code: 'POLICY_EVALUATION_ERROR', reasons: ['no-overflowing-factor'] } });
    expect((await record(agent.context.id)).code).toBe('POLICY_EVALUATION_ERROR');
  });
});

describe('an action only agents may take', () => {
  it('a forbid on agent-only attributes decides for the agent, and is not an error for its human (who cannot be its principal)', async () => {
    const pay = [{ type: 'leash:cedar', actions: ['pay'], resourceIn: folder('invoices') }];
    const res = await decide(evaluation(await mint({ authorization_details: pay }), 'pay'));
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body).toMatchObject({ decision: true, context: { layer: 'all' } });
    expect((await node.api('POST', '/v1/agents', agentBody({ id: 'low-bot', trustScore: 40, credentials: credentials(), ceiling: { template: 'ceiling-folder', values: { '?resource': folder('invoices') } } }))).status).toBe(201);
    expect((await node.api('POST', '/v1/agents/low-bot/authorize', { grants: [] })).status).toBe(200);
    const token = await mint({ sub: 'low-bot', authorization_details: pay });
    const low = await decide({ ...evaluation(token, 'pay'), subject: { type: 'agent', id: 'low-bot', properties: { token } } });
    expect(low.body).toMatchObject({ decision: false, context: { layer: 'agent', reasons: ['low-trust-pays-nothing'] } });
  });
});

describe('what a token says is a recorded decision, whatever it says', () => {
  it.each([
    ['an action the schema does not know', [{ type: 'leash:cedar', actions: ['read', 'launch-missiles'], resourceIn: folder('invoices') }]],
    ['a target with more inside it', [{ type: 'leash:cedar', actions: ['read'], resourceIn: Array.from({ length: 10 }).reduce<Record<string, unknown>>((inner) => ({ type: 'Folder', id: 'x', inner }), { type: 'Folder', id: 'invoices' }) }]],
    ['a target of no entity type', [{ type: 'leash:cedar', actions: ['read'], resourceIn: { type: 'not a type!', id: 'x' } }]],
    ['1,000 distinct actions', [{ type: 'leash:cedar', actions: Array.from({ length: 1000 }, (_, i) => `a${i}`), resourceIn: folder('invoices') }]],
    ['40 entries', Array.from({ length: 40 }, () => readInvoices[0])],
  ])('%s: a recorded deny DETAILS_MALFORMED', async (_name, details) => {
    const before = await recorded();
    const res = await decide(evaluation(await mint({ authorization_details: details }), 'read'));
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body).toMatchObject({ decision: false, context: { layer: 'details', code: 'DETAILS_MALFORMED' } });
    expect(await recorded()).toBe(before + 1);
    expect((await record(res.body.context.id)).code).toBe('DETAILS_MALFORMED');
  });

  it('many pairs against a large hierarchy of entities: a recorded DETAILS_MALFORMED, not a long stall', async () => {
    const chain = Array.from({ length: 40 }, (_, i) => ({ uid: folder(`c${i}`), attrs: {}, parents: [i + 1 < 40 ? folder(`c${i + 1}`) : folder('invoices')] }));
    const details = Array.from({ length: 16 }, (_, i) => ({ type: 'leash:cedar', actions: ['read', 'write'], resourceIn: i === 0 ? folder('invoices') : folder(`c${i}`) }));
    const res = await decide({ ...evaluation(await mint({ authorization_details: details }), 'read'), context: { entities: [...entities, ...chain] } });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body).toMatchObject({ decision: false, context: { layer: 'details', code: 'DETAILS_MALFORMED' } });
  });

  it('1,600 repeats of one action are one question to the ceiling, and allowed', async () => {
    const details = [{ type: 'leash:cedar', actions: Array.from({ length: 1600 }, () => 'read'), resourceIn: folder('invoices') }];
    expect((await decide(evaluation(await mint({ authorization_details: details }), 'read'))).body).toMatchObject({ decision: true });
  });

  it.each([
    ['a NUL character', { note: 'a\u0000b' }, '\uFDD0s:a%00b'],
    ['an unpaired surrogate', { note: 'a\ud800b' }, '\uFDD0s:a%uD800b'],
    ['U+FDD0, the mark of an escaped value', { note: '\uFDD0n:5' }, '\uFDD0s:%uFDD0n:5'],
  ])('a claim holding %s: a recorded deny TOKEN_MALFORMED, the claims kept escaped', async (_name, claims, kept) => {
    const res = await decide(evaluation(await mint(claims), 'read'));
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body).toMatchObject({ decision: false, context: { layer: 'token', code: 'TOKEN_MALFORMED' } });
    const stored = await record(res.body.context.id);
    expect(stored.code).toBe('TOKEN_MALFORMED');
    const token = (stored.request as { subject: { properties: { token: Record<string, unknown> } } }).subject.properties.token;
    // Not as `claims`: replay takes this refusal from the record rather than trusting them.
    expect(token).not.toHaveProperty('claims');
    expect(token.refusedClaims).toMatchObject({ sub: 'bot', note: kept });
  });

  it.each([
    ['an integer beyond 2^53', { note: 9007199254740993 }],
    ['claims nested 40 levels deep', { note: Array.from({ length: 40 }).reduce<unknown>((inner) => [inner], 1) }],
    ['a details target nested 300 levels deep', { authorization_details: [{ type: 'leash:cedar', actions: ['read'], resourceIn: Array.from({ length: 300 }).reduce<Record<string, unknown>>((inner) => ({ type: 'Folder', id: 'x', note: inner }), folder('invoices')) }] }],
  ])('a claim holding %s: a recorded deny TOKEN_MALFORMED, kept without the claims (they cannot be kept as signed)', async (_name, claims) => {
    const res = await decide(evaluation(await mint(claims), 'read'));
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body).toMatchObject({ decision: false, context: { layer: 'token', code: 'TOKEN_MALFORMED' } });
    const stored = await record(res.body.context.id);
    expect(stored.code).toBe('TOKEN_MALFORMED');
    expect(JSON.stringify(stored.request)).not.toContain('note');
  });

  it('a claim of 1e400 (Infinity once parsed): a recorded deny TOKEN_MALFORMED, and the next decision as usual', async () => {
    const iat = Math.floor(Date.now() / 1000);
    const payload = `{"iss":"https://idp.example","aud":"leash","sub":"bot","iat":${iat},"exp":${iat + 120},"authorization_details":${JSON.stringify(readInvoices)},"note":1e400}`;
    const token = await new CompactSign(new TextEncoder().encode(payload)).setProtectedHeader({ alg: 'ES256', kid: 'k1' }).sign(agentPrivateKey);
    const res = await decide(evaluation(token, 'read'));
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body).toMatchObject({ decision: false, context: { layer: 'token', code: 'TOKEN_MALFORMED' } });
    expect((await decide(evaluation(await mint({}), 'read'))).body).toMatchObject({ decision: true });
  });

  it('a request holding 1e400 is a 400 naming where, not a 503 or a half-written batch', async () => {
    const before = await recorded();
    const token = await mint({});
    const body = JSON.stringify(evaluation(token, 'read')).replace('"action":{"name":"read"}', '"action":{"name":"read","properties":{"x":1e400}}');
    const res = await decide(body);
    expect(res.status).toBe(400);
    expect(res.body.detail).toMatch(/^\/action\/properties\/x /);
    const batch = JSON.stringify({ evaluations: [...Array.from({ length: 20 }, () => evaluation(token, 'read')), { ...evaluation(token, 'read'), context: { entities, amount: 7 } }] }).replace('"amount":7', '"amount":1e400');
    expect((await decideMany(batch)).status).toBe(400);
    expect(await recorded()).toBe(before);
  });

  it('in a batch, one bad token is denied and recorded, and the others are decided as usual', async () => {
    const before = await recorded();
    const good = await mint({});
    const bad = await mint({ authorization_details: [{ type: 'leash:cedar', actions: ['read', 'launch-missiles'], resourceIn: folder('invoices') }] });
    const nul = await mint({ note: '\u0000' });
    const res = await decideMany({ evaluations: [evaluation(good, 'read'), evaluation(bad, 'read'), evaluation(nul, 'read'), evaluation(good, 'write')] });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.evaluations.map((e: { decision: boolean; context: { code?: string } }) => [e.decision, e.context.code ?? null])).toEqual([
      [true, null], [false, 'DETAILS_MALFORMED'], [false, 'TOKEN_MALFORMED'], [true, null],
    ]);
    expect(await recorded()).toBe(before + 4);
  });
});

describe('batches', () => {
  const plain = { subject: { type: 'human', id: 'alice' }, action: { name: 'read' }, resource: { type: 'Document', id: 'd1' } };

  it('a batch that would write more than its bound to the decision log is refused whole (413), before anything is decided', async () => {
    const before = await recorded();
    // Every record holds its own subject: 1,000 copies of a 44 KB one would be 44 MB.
    const subject = { type: 'human', id: 'alice', properties: { pad: 'x'.repeat(44_000) } };
    const res = await decideMany({ ...plain, subject, context: { entities }, evaluations: Array.from({ length: 1000 }, () => ({})) });
    expect(res.status).toBe(413);
    expect(res.body.code).toBe('PAYLOAD_TOO_LARGE');
    expect(await recorded()).toBe(before);
  });

  it('a shared context is recorded once: the other items name the record holding it, and replay decides them all the same', async () => {
    const before = await recorded();
    const many = Array.from({ length: 800 }, (_, i) => ({ uid: { type: 'Folder', id: `f-${String(i).padStart(4, '0')}` }, attrs: {}, parents: [] }));
    const context = { entities: [...entities, ...many] };
    expect(JSON.stringify(context).length).toBeGreaterThan(40_000);
    const res = await decideMany({ ...plain, context, evaluations: Array.from({ length: 20 }, (_, i) => (i === 7 ? { context: { entities } } : {})) });
    expect(res.status, JSON.stringify(res.body).slice(0, 500)).toBe(200);
    expect(res.body.evaluations.every((e: { decision: boolean }) => e.decision)).toBe(true);
    const rows = await node.connection.db.selectFrom('decisions').select(['id', 'request']).where('seq', '>', String(before)).orderBy('seq').execute();
    expect(rows).toHaveLength(20);
    const holders = rows.filter((r) => (r.request as { context?: { entities: unknown[] } }).context?.entities.length === entities.length + 800);
    expect(holders).toHaveLength(1);
    const naming = rows.filter((r) => (r.request as { contextOf?: string }).contextOf === holders[0]!.id);
    expect(naming).toHaveLength(18); // all but the holder and the item with a context of its own
    const bytes = rows.reduce((n, r) => n + JSON.stringify(r.request).length, 0);
    expect(bytes).toBeLessThan(60_000); // 20 full copies would be over 800 KB
    const report = await replay(new PostgresSource(node.connection.db), { from: before + 1 });
    expect(report).toMatchObject({ decisions: 20, differing: 0 });
    // A range that starts after the record holding the context finds it by id: in the
    // database, and once archived, in the archive.
    const holderSeq = before + 1 + rows.findIndex((r) => r.id === holders[0]!.id);
    const after = await replay(new PostgresSource(node.connection.db), { from: holderSeq + 1, to: before + 20 });
    expect(after).toMatchObject({ decisions: before + 20 - holderSeq, differing: 0 });
    const dir = mkdtempSync(join(tmpdir(), 'leash-archive-'));
    await archiveAudit(node.connection.db, { dir, before: new Date(Date.now() + 1000) });
    expect(await node.connection.db.selectFrom('decisions').select('id').where('id', '=', holders[0]!.id).execute()).toEqual([]);
    const archived = await replay(new ArchiveSource(dir, new PostgresSource(node.connection.db)), { from: holderSeq + 1, to: before + 20 });
    expect(archived).toMatchObject({ decisions: before + 20 - holderSeq, differing: 0 });
  });

  it('a batch whose items would each read a deep hierarchy of entities is refused whole (400), before anything is decided', async () => {
    const before = await recorded();
    const chain = Array.from({ length: 44 }, (_, i) => ({ uid: folder(`c${i}`), attrs: {}, parents: [i + 1 < 44 ? folder(`c${i + 1}`) : folder('invoices')] }));
    const res = await decideMany({ ...plain, context: { entities: [...entities, ...chain] }, evaluations: Array.from({ length: 100 }, () => ({})) });
    expect(res.status).toBe(400);
    expect(res.body.detail).toMatch(/too much work/);
    expect(await recorded()).toBe(before);
  });

  it('a single request whose entities nest too deep is a 400 naming it', async () => {
    const chain = Array.from({ length: 60 }, (_, i) => ({ uid: folder(`c${i}`), attrs: {}, parents: [i + 1 < 60 ? folder(`c${i + 1}`) : folder('invoices')] }));
    const res = await decide({ ...plain, context: { entities: [...entities, ...chain] } });
    expect(res.status).toBe(400);
    expect(res.body.detail).toMatch(/ancestor links/);
  });

  it('a long batch gives other callers a turn: a decision asked for meanwhile is made between its items', async () => {
    // Distinct resources, so every item is a Cedar call of its own (nothing remembered).
    const items = Array.from({ length: 1000 }, (_, i) => ({ resource: { type: 'Document', id: `d-${i}` } }));
    const batch = decideMany({ ...plain, context: { entities }, evaluations: items });
    await new Promise((resolve) => setImmediate(resolve));
    const single = await decide({ ...plain, context: { entities } });
    const res = await batch;
    expect(res.status).toBe(200);
    const at = async (id: string) => (await record(id)).recorded_at as Date;
    const singleAt = await at(single.body.context.id);
    expect(singleAt.getTime()).toBeGreaterThan((await at(res.body.evaluations[0].context.id)).getTime());
    expect(singleAt.getTime()).toBeLessThan((await at(res.body.evaluations[999].context.id)).getTime());
  });

  it('1,000 items with a small shared context are all decided and recorded', async () => {
    const before = await recorded();
    const res = await decideMany({ ...plain, context: { entities }, evaluations: Array.from({ length: 1000 }, () => ({})) });
    expect(res.status).toBe(200);
    expect(res.body.evaluations).toHaveLength(1000);
    expect(res.body.evaluations.every((e: { decision: boolean }) => e.decision)).toBe(true);
    expect(await recorded()).toBe(before + 1000);
  });
});

describe('template links', () => {
  const register = (id: string, ceiling: unknown) => node.api('POST', '/v1/agents', agentBody({ id, credentials: credentials(), ceiling }));

  it('a template written for its principal (?principal) is linked to the agent itself, ceiling and grant alike', async () => {
    expect((await register('own-bot', { template: 'ceiling-own-reads', values: { '?resource': folder('invoices') } })).status).toBe(201);
    const grants = [{ template: 'grant-own-writes', values: { '?resource': folder('invoices') } }];
    expect((await node.api('POST', '/v1/agents/own-bot/authorize', { grants })).status).toBe(200);
    const token = async () => mint({ sub: 'own-bot', authorization_details: [{ type: 'leash:cedar', actions: ['read'], resourceIn: folder('invoices') }] });
    const read = await decide({ ...evaluation(await token(), 'read'), subject: { type: 'agent', id: 'own-bot', properties: { token: await token() } } });
    expect(read.status, JSON.stringify(read.body)).toBe(200);
    expect(read.body).toMatchObject({ decision: true, context: { layer: 'all' } });
    expect(read.body.context.reasons).toContain('ceiling:own-bot');
  });

  it.each([
    ['a template that does not exist', { template: 'no-such-template', values: { '?resource': folder('invoices') } }, 'template'],
    ['a slot left unfilled', { template: 'ceiling-own-reads', values: {} }, '?resource'],
    ['?principal given (it is always the agent)', { template: 'ceiling-own-reads', values: { '?principal': { type: 'Agent', id: 'other' }, '?resource': folder('invoices') } }, '?principal'],
    ['an ordinary template as a ceiling', { template: 'grant-own-writes', values: { '?resource': folder('invoices') } }, 'ceiling template'],
  ])('a ceiling with %s is refused at registration (422 naming it), and nothing is written', async (_name, ceiling, named) => {
    const before = await node.eventCount();
    const res = await register('bad-link-bot', ceiling);
    expect(res.status, JSON.stringify(res.body)).toBe(422);
    expect(res.body.code).toBe('INVALID_TEMPLATE_LINK');
    expect(res.body.detail).toContain(named);
    expect(await node.eventCount()).toBe(before);
  });

  it.each([
    ['a slot the template does not have', { template: 'grant-own-writes', values: { '?resource': folder('invoices'), '?principal': { type: 'Agent', id: 'bot' } } }, '?principal'],
    ['a ceiling template as a grant', { template: 'ceiling-own-reads', values: { '?resource': folder('invoices') } }, 'ceiling template'],
    ['a slot left unfilled', { template: 'grant-own-writes', values: {} }, '?resource'],
  ])('a grant with %s is refused at authorization (422 naming it)', async (_name, grant, named) => {
    const before = await node.eventCount();
    const res = await node.api('POST', '/v1/agents/bot/authorize', { grants: [grant] });
    expect(res.status, JSON.stringify(res.body)).toBe(422);
    expect(res.body).toMatchObject({ code: 'INVALID_TEMPLATE_LINK' });
    expect(res.body.detail).toMatch(/^grants\[0\]/);
    expect(res.body.detail).toContain(named);
    expect(await node.eventCount()).toBe(before);
  });
});

describe('deep and huge bodies', () => {
  const deep = (n: number) => `${'['.repeat(n)}${']'.repeat(n)}`;

  // A body the decision API's schema accepts, with the depth inside its context.
  const deepEvaluation = (inner: string) => `{"subject":{"type":"user","id":"u"},"action":{"name":"read"},"resource":{"type":"Doc","id":"d"},"context":{"x":${inner}}}`;
  it.each([
    ['the decision API', 'POST', '/access/v1/evaluation', PEP_TOKEN, deepEvaluation(deep(10_000))],
    ['the decision API, with an integer it reads exactly', 'POST', '/access/v1/evaluation', PEP_TOKEN, deepEvaluation(`${'['.repeat(10_000)}9007199254740993${']'.repeat(10_000)}`)],
    ['a registration', 'POST', '/v1/humans', undefined, `{"context":${deep(10_000)}}`],
    ['a batch', 'POST', '/access/v1/evaluations', PEP_TOKEN, deepEvaluation(deep(10_000))],
  ])('JSON nested 10,000 levels deep is a 400 on %s, never a 500', async (_name, method, url, token, body) => {
    const res = await node.api(method, url, body, {}, token);
    expect(res.status, JSON.stringify(res.body)).toBe(400);
    expect(res.body.code).toBe('VALIDATION_FAILED');
    expect(res.body.detail).toMatch(/deeper than/);
  });

  it('a context record nested 60 levels (within the bound) is refused by the schema, not by a crash', async () => {
    const nested = Array.from({ length: 60 }).reduce<Record<string, unknown>>((inner) => ({ inner }), {});
    const res = await decide(evaluation(await mint({}), 'read', { nested }));
    expect(res.status).toBe(400);
    expect(res.body.code).toBe('VALIDATION_FAILED');
  });

  it('an anonymous caller with a deep body gets a 401, not a 500', async () => {
    const res = await node.api('POST', '/healthz', deep(10_000), {}, null);
    expect(res.status).toBe(401);
  });
});

// Last: it publishes a new policy set.
describe('a later policy set that changes a linked template', () => {
  it('a ceiling whose template lost its slot is a recorded deny CEILING_LINK_INVALID, not a 400 at every decision', async () => {
    const changed = policies.replace('permit (principal == ?principal, action == Action::"read", resource in ?resource);', 'permit (principal == ?principal, action == Action::"read", resource in Folder::"invoices");');
    expect(changed).not.toBe(policies);
    expect((await node.api('PUT', '/v1/policy-set', { schema, policies: changed })).status).toBe(200);
    const token = await mint({ sub: 'own-bot', authorization_details: [{ type: 'leash:cedar', actions: ['read'], resourceIn: folder('invoices') }] });
    const res = await decide({ ...evaluation(token, 'read'), subject: { type: 'agent', id: 'own-bot', properties: { token } } });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body).toMatchObject({ decision: false, context: { layer: 'ceiling', code: 'CEILING_LINK_INVALID' } });
    expect((await record(res.body.context.id)).code).toBe('CEILING_LINK_INVALID');
  });
});
