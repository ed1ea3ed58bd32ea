import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, CEDAR_DIR, seedPrincipals, startTestNode, type TestNode } from '../support/node.ts';
import { peoplePins, personToken } from '../support/people.ts';
import { pay, payToken, registerPayBot } from '../support/payments.ts';

// Approvals on one embedded node, with the finance example of cedar/: a payment over 10,000
// by pay-bot waits for alice (its owner) to approve that very payment, and goes through once.

let node: TestNode;
let token: string;

const answer = (id: string, verb: 'approve' | 'deny', body: Record<string, unknown>, bearer: string | null = ADMIN_TOKEN) =>
  node.api('POST', `/v1/approvals/${id}/${verb}`, body, {}, bearer);

beforeAll(async () => {
  node = await startTestNode({ kind: 'pglite', dataDir: null }, { humanPins: peoplePins });
  await seedPrincipals(node);
  for (const body of [{ id: 'eve', email: 'eve@example.com', groups: [] }, { id: 'frank', email: 'frank@example.com', groups: ['finance'] }]) {
    expect((await node.api('POST', '/v1/humans', body)).status).toBe(201);
  }
  await registerPayBot(node);
  token = await payToken();
});
afterAll(async () => node?.close());

describe('a payment over the limit', () => {
  it('is allowed at once under the limit, needs alice\'s approval over it, and goes through once when she approves', async () => {
    const small = await pay(node, token, 500);
    expect(small).toMatchObject({ decision: true, context: { layer: 'all' } });
    expect(small.context.approval).toBeUndefined();

    const held = await pay(node, token, 25_000);
    expect(held).toMatchObject({ decision: false, context: { layer: 'agent', code: 'APPROVAL_REQUIRED', reasons: ['large-payments-need-the-owners-approval'] } });
    const approval = held.context.approval!;
    expect(approval).toMatchObject({ approvers: ['human:alice'] });
    expect(Date.parse(approval.expiresAt!) - Date.now()).toBeGreaterThan(200_000);

    // The approvers see it as pending, bound to the request.
    const shown = await node.api('GET', `/v1/approvals/${approval.id}`, undefined, {}, await personToken('alice'));
    expect(shown.status).toBe(200);
    expect(shown.body).toMatchObject({ status: 'pending', agent: 'pay-bot', human: 'alice', action: 'pay', resource: { type: 'Document', id: 'inv-1' }, decisionId: held.context.id });
    // Until it is answered, the repeat is held back too, naming the same approval.
    const early = await pay(node, token, 25_000, 'inv-1', { approvalId: approval.id });
    expect(early.context).toMatchObject({ code: 'APPROVAL_REQUIRED', approval: { id: approval.id } });

    const approved = await answer(approval.id, 'approve', { reason: 'invoice checked' }, await personToken('alice'));
    expect(approved.status).toBe(200);
    expect(approved.body).toMatchObject({ status: 'approved', answeredBy: 'human:alice', reason: 'invoice checked', nodesConfirmed: 1 });

    const allowed = await pay(node, token, 25_000, 'inv-1', { approvalId: approval.id });
    expect(allowed).toMatchObject({ decision: true, context: { layer: 'all', code: 'APPROVED', approval: { id: approval.id } } });
    expect(allowed.context.reasons).toContain('large-payments-need-the-owners-approval');
    const used = await node.api('GET', `/v1/approvals/${approval.id}`);
    expect(used.body).toMatchObject({ status: 'used', usedBy: allowed.context.id });

    // Once: the same request again needs an approval of its own.
    const again = await pay(node, token, 25_000, 'inv-1', { approvalId: approval.id });
    expect(again).toMatchObject({ decision: false, context: { code: 'APPROVAL_REQUIRED' } });
    expect(again.context.approval!.id).not.toBe(approval.id);
  });

  it('binds the approval to that one request: another amount, invoice or agent with its id is refused', async () => {
    const held = await pay(node, token, 30_000, 'inv-2');
    const id = held.context.approval!.id;
    expect((await answer(id, 'approve', { reason: 'ok' }, await personToken('alice'))).status).toBe(200);
    for (const [amount, doc] of [[30_001, 'inv-2'], [30_000, 'inv-3']] as const) {
      const other = await pay(node, token, amount, doc, { approvalId: id });
      expect(other, `${amount} ${doc}`).toMatchObject({ decision: false, context: { code: 'APPROVAL_NOT_MATCHING' } });
    }
    // A context member added changes the request too.
    const extra = await node.api('POST', '/access/v1/evaluation', {
      subject: { type: 'agent', id: 'pay-bot', properties: { token } }, action: { name: 'pay' }, resource: { type: 'Document', id: 'inv-2' },
      context: { amount: 30_000, approvalId: id, entities: [{ uid: { type: 'Document', id: 'inv-2' }, attrs: {}, parents: [{ type: 'Folder', id: 'invoices' }, { type: 'Folder', id: 'other' }] }] },
    }, {}, 'test-pep-token-0123456789abcdef');
    expect(extra.body.context.code).toBe('APPROVAL_NOT_MATCHING');
    // The refusals spent nothing: the request it was given for still goes through.
    expect(await pay(node, token, 30_000, 'inv-2', { approvalId: id })).toMatchObject({ decision: true });
  });

  it('a denied approval refuses the request, with its code', async () => {
    const id = (await pay(node, token, 40_000, 'inv-4')).context.approval!.id;
    const denied = await answer(id, 'deny', { reason: 'not in the budget' }, await personToken('alice'));
    expect(denied.body).toMatchObject({ status: 'denied', answeredBy: 'human:alice' });
    expect(await pay(node, token, 40_000, 'inv-4', { approvalId: id })).toMatchObject({ decision: false, context: { code: 'APPROVAL_DENIED' } });
    // An answer is final.
    expect((await answer(id, 'approve', { reason: 'changed my mind' }, await personToken('alice'))).body).toMatchObject({ status: 409, code: 'INVALID_TRANSITION' });
  });

  it('a retry without an answer reuses the pending approval instead of asking again', async () => {
    const first = await pay(node, token, 50_000, 'inv-5');
    const before = await node.eventCount();
    const second = await pay(node, token, 50_000, 'inv-5');
    expect(second.context.approval!.id).toBe(first.context.approval!.id);
    expect(await node.eventCount()).toBe(before);
  });
});

describe('who may answer', () => {
  it('nobody but a designated approver: not another person, not the agent, not a PEP; the operator only naming one', async () => {
    const id = (await pay(node, token, 60_000, 'inv-6')).context.approval!.id;
    const before = await node.eventCount();
    // frank is in finance too, but the approval is alice's (the owner's).
    const frank = await answer(id, 'approve', { reason: 'me' }, await personToken('frank'));
    expect(frank.status).toBe(403);
    expect(frank.body).toMatchObject({ code: 'FORBIDDEN' });
    expect((await answer(id, 'approve', { reason: 'me' }, await personToken('eve'))).status).toBe(403);
    // alice's token cannot answer as someone else, nor the operator for someone who is not an approver.
    expect((await answer(id, 'approve', { reason: 'x', approver: 'frank' }, await personToken('alice'))).status).toBe(403);
    expect((await answer(id, 'approve', { reason: 'x', approver: 'frank' })).status).toBe(403);
    expect((await answer(id, 'approve', { reason: 'x', approver: 'nobody' })).body).toMatchObject({ code: 'HUMAN_NOT_FOUND' });
    expect((await answer(id, 'approve', { reason: 'x' })).body).toMatchObject({ status: 400, code: 'VALIDATION_FAILED' });
    // The agent's own token and a PEP's caller token are no way in.
    expect((await answer(id, 'approve', { reason: 'x' }, token)).status).toBe(401);
    expect((await answer(id, 'approve', { reason: 'x' }, 'test-pep-token-0123456789abcdef')).status).toBe(401);
    expect((await answer(id, 'approve', { reason: 'x' }, null)).status).toBe(401);
    expect(await node.eventCount()).toBe(before);
    expect(await pay(node, token, 60_000, 'inv-6', { approvalId: id })).toMatchObject({ decision: false, context: { code: 'APPROVAL_REQUIRED' } });

    // The operator answering for alice: recorded as break-glass, naming her.
    const ok = await answer(id, 'approve', { reason: 'alice on the phone', approver: 'alice' });
    expect(ok.body).toMatchObject({ status: 'approved', answeredBy: 'human:alice' });
    const event = (await node.store.readStream(`approval/${id}`)).at(-1)!;
    expect(event).toMatchObject({ type: 'ApprovalGranted', metadata: { actor: 'operator', breakGlass: true } });
  });

  it('a person lists the approvals addressed to them; others see none of them', async () => {
    const id = (await pay(node, token, 70_000, 'inv-7')).context.approval!.id;
    const alice = await node.api('GET', '/v1/approvals?status=pending', undefined, {}, await personToken('alice'));
    expect(alice.status).toBe(200);
    expect(alice.body.approvals.map((a: { id: string }) => a.id)).toContain(id);
    expect(alice.body.approvals.every((a: { status: string }) => a.status === 'pending')).toBe(true);
    const eve = await node.api('GET', '/v1/approvals', undefined, {}, await personToken('eve'));
    expect(eve.body.approvals).toEqual([]);
    expect((await node.api('GET', `/v1/approvals/${id}`, undefined, {}, await personToken('eve'))).status).toBe(403);
    const all = await node.api('GET', '/v1/approvals?agent=pay-bot&limit=500');
    expect(all.body.approvals.length).toBeGreaterThanOrEqual(6);
  });

  it('a long poll returns as soon as the approval is answered', async () => {
    const id = (await pay(node, token, 80_000, 'inv-8')).context.approval!.id;
    const polled = node.api('GET', `/v1/approvals/${id}?wait=30`);
    await new Promise((r) => setTimeout(r, 50));
    await answer(id, 'approve', { reason: 'ok' }, await personToken('alice'));
    expect((await polled).body).toMatchObject({ status: 'approved' });
  });
});

describe('hostile approval ids and parameters', () => {
  it('an approval id of the wrong type or size is a 400; an unknown one does not match', async () => {
    for (const approvalId of [42, true, null, {}, [], '', 'x'.repeat(65)]) {
      const res = await pay(node, token, 25_000, 'inv-1', { approvalId });
      expect(res.status, JSON.stringify(approvalId)).toBe(400);
    }
    for (const approvalId of [crypto.randomUUID(), 'not-a-uuid', 'a\u0000b', '../../x', '%2e%2e']) {
      expect((await pay(node, token, 25_000, 'inv-1', { approvalId })).context.code, approvalId).toBe('APPROVAL_NOT_MATCHING');
    }
  });

  it('paths and queries that are not an approval are refused plainly', async () => {
    for (const url of ['/v1/approvals/not-a-uuid', '/v1/approvals/%00', `/v1/approvals/${'a'.repeat(600)}`, '/v1/approvals/x?wait=1']) {
      expect((await node.api('GET', url)).status, url).toBeGreaterThanOrEqual(400);
    }
    expect((await node.api('GET', `/v1/approvals/${crypto.randomUUID()}`)).body).toMatchObject({ status: 404, code: 'APPROVAL_NOT_FOUND' });
    for (const q of ['wait=61', 'wait=-1', 'wait=abc']) expect((await node.api('GET', `/v1/approvals/${crypto.randomUUID()}?${q}`)).status, q).toBe(400);
    for (const q of ['status=open', 'limit=0', 'limit=501', 'agent=a/b']) expect((await node.api('GET', `/v1/approvals?${q}`)).status, q).toBe(400);
    const id = crypto.randomUUID();
    for (const body of [{}, { reason: '' }, { reason: 'x'.repeat(1001) }, { reason: 'x', extra: 1 }, { reason: 7 }]) {
      expect((await answer(id, 'approve', body)).status, JSON.stringify(body)).toBe(400);
    }
  });
});

describe('expiry', () => {
  it('an approval not used in time is refused as expired, and can no longer be answered', async () => {
    const short = await startTestNode({ kind: 'pglite', dataDir: null }, { humanPins: peoplePins, approvalTtlSeconds: 1 });
    try {
      await seedPrincipals(short);
      await registerPayBot(short);
      const token = await payToken();
      const held = await pay(short, token, 25_000);
      const id = held.context.approval!.id;
      expect((await short.api('POST', `/v1/approvals/${id}/approve`, { reason: 'ok' }, {}, await personToken('alice'))).status).toBe(200);
      const late = await pay(short, token, 25_000, 'inv-1', {});
      const other = late.context.approval!.id;
      await new Promise((r) => setTimeout(r, 1_100));
      expect(await pay(short, token, 25_000, 'inv-1', { approvalId: id })).toMatchObject({ decision: false, context: { code: 'APPROVAL_EXPIRED' } });
      expect((await short.api('POST', `/v1/approvals/${other}/approve`, { reason: 'ok' }, {}, await personToken('alice'))).body).toMatchObject({ status: 409, code: 'APPROVAL_EXPIRED' });
      expect((await short.api('GET', `/v1/approvals/${id}`)).body.status).toBe('expired');
    } finally {
      await short.close();
    }
  });
});

describe('@approval in a policy set', () => {
  const cedar = (file: string) => readFileSync(join(CEDAR_DIR, file), 'utf8');
  const policiesWith = (finance: string) => ['admin.cedar', 'examples.cedar'].map((f) => cedar(`policies/${f}`)).join('\n') + '\n' + finance;
  const publish = (policies: string) => node.api('PUT', '/v1/policy-set', { schema: cedar('schema.cedarschema'), policies });

  it('names its approvers plainly, on an ordinary static permit, or the set is refused', async () => {
    const finance = cedar('policies/finance.cedar');
    for (const [bad, why] of [
      [finance.replace('@approval("owner")', '@approval("boss")'), 'an unknown approver'],
      [finance.replace('@approval("owner")', '@approval("group:")'), 'an empty group'],
      [finance.replace('@approval("owner")', '@approval("group:a/b")'), 'a group id with a slash'],
      [finance.replace('@approval("owner")', '@approval'), 'no value'],
      [`${finance}\n@id("x") @approval("owner") forbid (principal, action == Action::"pay", resource);`, 'a forbid'],
      [`${finance}\n@id("x") @layer("ceiling") @approval("owner") permit (principal, action == Action::"pay", resource);`, 'a ceiling policy'],
      [`${finance}\n@id("x") @layer("admin") @approval("owner") permit (principal, action == Action::"admin:read", resource);`, 'an admin policy'],
      [`${finance}\n@id("x") @approval("owner") permit (principal, action == Action::"pay", resource in ?resource);`, 'a template'],
    ] as const) {
      const res = await publish(policiesWith(bad));
      expect(res.status, why).toBe(422);
      expect(res.body.code, why).toBe('POLICY_INVALID');
    }
  });

  it('group:<id> asks any member of the group, through parent groups; nobody else', async () => {
    for (const [url, body] of [
      ['/v1/groups', { id: 'treasury', parents: [] }],
      ['/v1/groups', { id: 'treasury-leads', parents: ['treasury'] }],
      ['/v1/humans', { id: 'tom', email: 'tom@example.com', groups: ['treasury-leads'] }],
    ] as const) expect((await node.api('POST', url, body)).status).toBe(201);
    expect((await publish(policiesWith(cedar('policies/finance.cedar').replace('@approval("owner")', '@approval("group:treasury")')))).status).toBe(200);
    try {
      const held = await pay(node, await payToken(), 90_000, 'inv-9');
      expect(held.context.approval!.approvers).toEqual(['group:treasury']);
      const id = held.context.approval!.id;
      // alice owns the agent, but the approval is treasury's.
      expect((await answer(id, 'approve', { reason: 'mine' }, await personToken('alice'))).status).toBe(403);
      expect((await answer(id, 'approve', { reason: 'ok' }, await personToken('tom'))).body).toMatchObject({ status: 'approved', answeredBy: 'human:tom' });
      expect(await pay(node, await payToken(), 90_000, 'inv-9', { approvalId: id })).toMatchObject({ decision: true, context: { code: 'APPROVED' } });
    } finally {
      expect((await publish(policiesWith(cedar('policies/finance.cedar')))).status).toBe(200);
    }
  });
});
