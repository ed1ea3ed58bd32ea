import { SignJWT } from 'jose';
import { expect } from 'vitest';
import { PEP_TOKEN, agentBody, agentPrivateKey, type TestNode } from './node.ts';

// The finance example of cedar/ (policies/finance.cedar): pay-bot, of finance-agents and owned
// by alice (of finance), pays invoices; over 10,000 a payment waits for alice's approval.

export const invoices = { type: 'Folder', id: 'invoices' };
export const payInvoices = [{ type: 'leash:cedar', actions: ['pay'], resourceIn: invoices }];

/** Registers and authorizes pay-bot (call after seedPrincipals). */
export async function registerPayBot(node: TestNode, id = 'pay-bot'): Promise<void> {
  const ceiling = { template: 'ceiling-payments', values: { '?resource': invoices } };
  expect((await node.api('POST', '/v1/agents', agentBody({ id, ceiling }))).status).toBe(201);
  expect((await node.api('POST', `/v1/agents/${id}/authorize`, { grants: [] })).status).toBe(200);
}

/** pay-bot's own token (kid k1 of agentBody's pins), for paying invoices. */
export async function payToken(agent = 'pay-bot'): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ authorization_details: payInvoices, jti: crypto.randomUUID() }).setProtectedHeader({ alg: 'ES256', kid: 'k1' })
    .setIssuer('https://idp.example').setAudience('leash').setSubject(agent).setIssuedAt(now).setExpirationTime(now + 240).sign(agentPrivateKey);
}

/** The AuthZEN request for paying `amount` on invoice `doc`; `extra` joins the context (approvalId). */
export function payment(token: string, amount: number, doc = 'inv-1', extra: Record<string, unknown> = {}, agent = 'pay-bot') {
  return {
    subject: { type: 'agent', id: agent, properties: { token } }, action: { name: 'pay' }, resource: { type: 'Document', id: doc },
    context: { amount, entities: [{ uid: { type: 'Document', id: doc }, attrs: {}, parents: [invoices] }], ...extra },
  };
}

export interface Answer {
  decision: boolean;
  context: { id: string; layer: string; code?: string; reasons: string[]; approval?: { id: string; expiresAt?: string; approvers?: string[] } };
}

/** Asks `node` (through fastify.inject) as a PEP. */
export async function pay(node: TestNode, token: string, amount: number, doc = 'inv-1', extra: Record<string, unknown> = {}): Promise<Answer & { status: number }> {
  const res = await node.api('POST', '/access/v1/evaluation', payment(token, amount, doc, extra), {}, PEP_TOKEN);
  return { status: res.status, ...(res.body as Answer) };
}
