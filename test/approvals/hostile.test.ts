import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_PENDING_PER_AGENT } from '../../src/approvals/approval-service.ts';
import { ADMIN_TOKEN, CEDAR_DIR, PEP_TOKEN, agentBody, agentPrivateKey, seedPrincipals, startTestNode, type TestNode } from '../support/node.ts';
import { peoplePins, personToken } from '../support/people.ts';
import { payment, payToken, registerPayBot } from '../support/payments.ts';

// Approvals under attack (human in the loop): each test states the rule it holds, and was written
// against the first version of approvals, where it failed.

let node: TestNode;

beforeAll(async () => {
  node = await startTestNode({ kind: 'pglite', dataDir: null }, { humanPins: peoplePins });
  await seedPrincipals(node);
});
afterAll(async () => node?.close());

const approvalsOf = async (agent: string) => (await node.api('GET', `/v1/approvals?agent=${agent}&limit=500`, undefined, {}, ADMIN_TOKEN)).body.approvals as { id: string; status: string }[];

describe('approval floods', () => {
  it('one batch of identical requests asks the approvers once, not once per item', async () => {
    await registerPayBot(node, 'flood-bot-1');
    const token = await payToken('flood-bot-1');
    const one = payment(token, 25_000, 'inv-f1', {}, 'flood-bot-1');
    const res = await node.api('POST', '/access/v1/evaluations', { subject: one.subject, action: one.action, resource: one.resource, context: one.context, evaluations: Array.from({ length: 200 }, () => ({})) }, {}, PEP_TOKEN);
    expect(res.status).toBe(200);
    const ids = new Set(res.body.evaluations.map((e: { context: { approval?: { id: string } } }) => e.context.approval?.id));
    // A retrying PEP "does not ask the approvers again and again": one pending approval for one request.
    expect(ids.size).toBe(1);
    expect((await approvalsOf('flood-bot-1')).length).toBe(1);
  });

  it(`one batch cannot push an agent past ${MAX_PENDING_PER_AGENT} pending approvals`, async () => {
    await registerPayBot(node, 'flood-bot-2');
    const token = await payToken('flood-bot-2');
    const one = payment(token, 25_000, 'inv-f2', {}, 'flood-bot-2');
    const evaluations = Array.from({ length: 400 }, (_, i) => ({ context: { ...one.context, amount: 20_000 + i } }));
    const res = await node.api('POST', '/access/v1/evaluations', { subject: one.subject, action: one.action, resource: one.resource, evaluations }, {}, PEP_TOKEN);
    expect(res.status).toBe(200);
    const pending = (await approvalsOf('flood-bot-2')).filter((a) => a.status === 'pending');
    expect(pending.length).toBeLessThanOrEqual(MAX_PENDING_PER_AGENT);
  });

  it(`concurrent requests cannot push an agent past ${MAX_PENDING_PER_AGENT} pending approvals`, async () => {
    await registerPayBot(node, 'flood-bot-3');
    const token = await payToken('flood-bot-3');
    await Promise.all(Array.from({ length: 250 }, (_, i) => node.api('POST', '/access/v1/evaluation', payment(token, 20_000 + i, 'inv-f3', {}, 'flood-bot-3'), {}, PEP_TOKEN)));
    const pending = (await approvalsOf('flood-bot-3')).filter((a) => a.status === 'pending');
    expect(pending.length).toBeLessThanOrEqual(MAX_PENDING_PER_AGENT);
  });
});

describe('what an approval is bound to', () => {
  const cedar = (file: string) => readFileSync(join(CEDAR_DIR, file), 'utf8');
  const basePolicies = ['admin.cedar', 'examples.cedar', 'finance.cedar'].map((f) => cedar(`policies/${f}`)).join('\n');

  it('an approval given for one request is not usable for a request whose resource attributes differ', async () => {
    // A deployment whose invoices carry their amount on the resource (as PEPs describe it in resource.properties).
    const schema = cedar('schema.cedarschema').replace('entity Document in [Folder];', 'entity Document in [Folder] { amount?: Long };');
    expect(schema).not.toBe(cedar('schema.cedarschema'));
    const policies = `${basePolicies}
@id("big-documents-need-approval")
@approval("owner")
permit (principal in Group::"finance-agents", action == Action::"pay", resource is Document) when { resource has amount && resource.amount > 10000 };
@id("finance-pays-documents")
permit (principal in Group::"finance", action == Action::"pay", resource is Document) when { resource has amount };
`;
    const published = await node.api('PUT', '/v1/policy-set', { schema, policies });
    expect(published.status, JSON.stringify(published.body)).toBe(200);
    try {
      const doc = { type: 'Document', id: 'inv-attr' };
      const ceiling = { template: 'ceiling-payments', values: { '?resource': doc } };
      expect((await node.api('POST', '/v1/agents', agentBody({ id: 'attr-bot', ceiling }))).status).toBe(201);
      expect((await node.api('POST', '/v1/agents/attr-bot/authorize', { grants: [] })).status).toBe(200);
      const now = Math.floor(Date.now() / 1000);
      const token = await new SignJWT({ authorization_details: [{ type: 'leash:cedar', actions: ['pay'], resource: doc }], jti: crypto.randomUUID() })
        .setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setIssuer('https://idp.example').setAudience('leash').setSubject('attr-bot').setIssuedAt(now).setExpirationTime(now + 240).sign(agentPrivateKey);
      const ask = (amount: number, extra: Record<string, unknown> = {}) => node.api('POST', '/access/v1/evaluation', {
        subject: { type: 'agent', id: 'attr-bot', properties: { token } }, action: { name: 'pay' }, resource: { ...doc, properties: { amount } }, context: { amount: 0, ...extra },
      }, {}, PEP_TOKEN);

      const held = await ask(12_000);
      expect(held.body.context, JSON.stringify(held.body)).toMatchObject({ code: 'APPROVAL_REQUIRED' });
      const id = held.body.context.approval.id;
      // alice approves the payment of 12,000 she was shown.
      expect((await node.api('POST', `/v1/approvals/${id}/approve`, { reason: '12k ok' }, {}, await personToken('alice'))).status).toBe(200);
      // The PEP repeats it with a resource that says 90,000,000: Cedar decides another request.
      const other = await ask(90_000_000, { approvalId: id });
      expect(other.body, 'an approval of a 12,000 payment allowed a 90,000,000 one').toMatchObject({ decision: false, context: { code: 'APPROVAL_NOT_MATCHING' } });
    } finally {
      expect((await node.api('PUT', '/v1/policy-set', { schema: cedar('schema.cedarschema'), policies: basePolicies })).status).toBe(200);
    }
  });
});

describe('who answers, and for what', () => {
  const cedar = (file: string) => readFileSync(join(CEDAR_DIR, file), 'utf8');
  const withFinance = (finance: string) => ['admin.cedar', 'examples.cedar'].map((f) => cedar(`policies/${f}`)).join('\n') + '\n' + finance;
  const publish = (finance: string) => node.api('PUT', '/v1/policy-set', { schema: cedar('schema.cedarschema'), policies: withFinance(finance) });
  const ownerFinance = cedar('policies/finance.cedar');
  const treasuryFinance = ownerFinance.replace('@approval("owner")', '@approval("group:treasury")');
  const ask = async (token: string, amount: number, doc: string, extra: Record<string, unknown> = {}) =>
    (await node.api('POST', '/access/v1/evaluation', payment(token, amount, doc, extra, 'who-bot'), {}, PEP_TOKEN)).body;

  beforeAll(async () => {
    for (const [url, body] of [
      ['/v1/groups', { id: 'treasury', parents: [] }],
      ['/v1/groups', { id: 'security', parents: [] }],
      ['/v1/humans', { id: 'sam', email: 'sam@example.com', groups: ['security'] }],
      ['/v1/humans', { id: 'frank', email: 'frank@example.com', groups: ['finance'] }],
    ] as const) expect((await node.api('POST', url, body)).status).toBe(201);
    await registerPayBot(node, 'who-bot');
  });

  it('a policy that now asks treasury is not satisfied by an approval its owner gave (or a pending one reused) under the old policy', async () => {
    const token = await payToken('who-bot');
    const held = await ask(token, 25_000, 'inv-w1');
    expect(held.context).toMatchObject({ code: 'APPROVAL_REQUIRED', approval: { approvers: ['human:alice'] } });
    // The security team tightens the policy: large payments now need treasury.
    expect((await publish(treasuryFinance)).status).toBe(200);
    try {
      const again = await ask(token, 25_000, 'inv-w1');
      // The pending approval is reused, still addressed to alice, not to treasury.
      expect.soft(again.context.approval.approvers, 'the repeat under the new policy is addressed to the old approvers').toEqual(['group:treasury']);
      const id = held.context.approval.id;
      expect((await node.api('POST', `/v1/approvals/${id}/approve`, { reason: 'mine' }, {}, await personToken('alice'))).status).toBe(200);
      const allowed = await ask(token, 25_000, 'inv-w1', { approvalId: id });
      expect(allowed, 'alice (not treasury) approved a payment the published policy gives to treasury').toMatchObject({ decision: false });
    } finally {
      expect((await publish(ownerFinance)).status).toBe(200);
    }
  });

  it('a security-team member with admin:set-groups cannot make themselves an approver', async () => {
    expect((await publish(treasuryFinance)).status).toBe(200);
    try {
      const token = await payToken('who-bot');
      const held = await ask(token, 26_000, 'inv-w2');
      expect(held.context.approval.approvers).toEqual(['group:treasury']);
      const id = held.context.approval.id;
      const sam = await personToken('sam');
      expect((await node.api('POST', `/v1/approvals/${id}/approve`, { reason: 'sam' }, {}, sam)).status).toBe(403);
      // sam (security: the admin policies let him set people's groups) may not add himself to treasury...
      const joined = await node.api('PUT', '/v1/humans/sam/groups', { groups: ['security', 'treasury'], reason: 'me' }, {}, sam);
      expect(joined.status).toBe(403);
      expect(joined.body).toMatchObject({ code: 'FORBIDDEN' });
      // ...so he still may not approve.
      const approved = await node.api('POST', `/v1/approvals/${id}/approve`, { reason: 'sam' }, {}, sam);
      expect(approved.status, 'sam became an approver of a pending approval by changing his own groups').toBe(403);
    } finally {
      expect((await publish(ownerFinance)).status).toBe(200);
    }
  });

  it('an approval asked acting for the owner is not used acting for another human (a grant)', async () => {
    const grant = await node.api('POST', '/v1/humans/frank/grants', { agent: 'who-bot', authorization_details: [{ type: 'leash:cedar', actions: ['pay'], resourceIn: { type: 'Folder', id: 'invoices' } }], expiresAt: new Date(Date.now() + 3_600_000).toISOString(), purpose: 'pay for frank' });
    expect(grant.status, JSON.stringify(grant.body)).toBe(201);
    const now = Math.floor(Date.now() / 1000);
    const forFrank = await new SignJWT({ act: { sub: 'who-bot' }, authorization_details: [{ type: 'leash:cedar', actions: ['pay'], resourceIn: { type: 'Folder', id: 'invoices' } }], jti: crypto.randomUUID() })
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setIssuer('https://idp.example').setAudience('leash').setSubject('frank').setIssuedAt(now).setExpirationTime(now + 120).sign(agentPrivateKey);
    expect((await ask(forFrank, 500, 'inv-w3')).decision).toBe(true);

    const held = await ask(await payToken('who-bot'), 27_000, 'inv-w3');
    const id = held.context.approval.id;
    expect((await node.api('GET', `/v1/approvals/${id}`)).body).toMatchObject({ human: 'alice' });
    expect((await node.api('POST', `/v1/approvals/${id}/approve`, { reason: 'my payment' }, {}, await personToken('alice'))).status).toBe(200);
    const used = await ask(forFrank, 27_000, 'inv-w3', { approvalId: id });
    expect(used, 'alice approved a payment made for her; it was spent on one made for frank').toMatchObject({ decision: false, context: { code: 'APPROVAL_NOT_MATCHING' } });
  });
});

describe('approvers of several layers', () => {
  const cedar = (file: string) => readFileSync(join(CEDAR_DIR, file), 'utf8');
  const base = ['admin.cedar', 'examples.cedar'].map((f) => cedar(`policies/${f}`)).join('\n');

  it('each layer gated by its own @approval needs its own approver: the owner alone does not satisfy treasury\'s permit', async () => {
    for (const [url, body] of [['/v1/groups', { id: 'treasury2', parents: [] }]] as const) expect((await node.api('POST', url, body)).status).toBe(201);
    // The agent layer allows large payments only with treasury's approval; the human layer (alice, of finance) only with the owner's.
    const finance = cedar('policies/finance.cedar')
      .replace('@approval("owner")', '@approval("group:treasury2")')
      .replace('@id("finance-pays-invoices")', '@id("finance-pays-invoices")\n@approval("owner")');
    expect((await node.api('PUT', '/v1/policy-set', { schema: cedar('schema.cedarschema'), policies: `${base}\n${finance}` })).status).toBe(200);
    try {
      await registerPayBot(node, 'layers-bot');
      const token = await payToken('layers-bot');
      const ask = async (extra: Record<string, unknown> = {}) => (await node.api('POST', '/access/v1/evaluation', payment(token, 25_000, 'inv-l1', extra, 'layers-bot'), {}, PEP_TOKEN)).body;
      // One approval cannot stand for two approvers' consent: refused, and nobody is asked.
      const before = await node.eventCount();
      const held = await ask();
      expect(held).toMatchObject({ decision: false, context: { code: 'APPROVAL_AMBIGUOUS' } });
      expect(held.context.approval).toBeUndefined();
      expect(await node.eventCount()).toBe(before);
    } finally {
      expect((await node.api('PUT', '/v1/policy-set', { schema: cedar('schema.cedarschema'), policies: `${base}\n${cedar('policies/finance.cedar')}` })).status).toBe(200);
    }
  });
});

describe('secrets in logs', () => {
  it('a webhook URL with credentials in it is never written to the log', async () => {
    const logs: string[] = [];
    const stream = new Writable({ write: (chunk, _enc, done) => void (logs.push(String(chunk)), done()) });
    const hooked = await startTestNode({ kind: 'pglite', dataDir: null }, {
      humanPins: peoplePins, logger: { level: 'info', stream }, approvalWebhook: 'https://leash:hook-secret-123@hooks.example/approvals', approvalBackoffMs: () => 20,
    });
    try {
      await seedPrincipals(hooked);
      await registerPayBot(hooked);
      const res = await hooked.api('POST', '/access/v1/evaluation', payment(await payToken(), 25_000), {}, PEP_TOKEN);
      expect(res.body.context.code).toBe('APPROVAL_REQUIRED');
      await new Promise((r) => setTimeout(r, 300));
      expect(logs.some((l) => l.includes('approval webhook'))).toBe(true);
      expect(logs.filter((l) => l.includes('hook-secret-123')), 'the webhook\'s secret is in the log').toEqual([]);
    } finally {
      await hooked.close();
    }
  });
});
