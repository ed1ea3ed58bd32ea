import { Writable } from 'node:stream';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freshPglite } from '../support/backends.ts';
import { PEP_TOKEN, agentBody, agentPrivateKey, seedPrincipals, startTestNode, type TestNode } from '../support/node.ts';

// The request log: every line of a request carries its request id (the caller's X-Request-ID
// when it is sane), and a decision request's lines name the decisions it made, so a log line
// leads to the decision's trace. Tokens never reach it.

const folder = (id: string) => ({ type: 'Folder', id });
const lines: Record<string, any>[] = [];
let node: TestNode;
let token: string;

const evaluation = (doc: string) => ({
  subject: { type: 'agent', id: 'log-bot', properties: { token } }, action: { name: 'read' }, resource: { type: 'Document', id: doc },
  context: { entities: [{ uid: { type: 'Document', id: doc }, attrs: {}, parents: [folder('invoices')] }] },
});
const ofRequest = (id: string) => lines.filter((l) => l.reqId === id);

beforeAll(async () => {
  const stream = new Writable({ write(chunk, _enc, done) { for (const l of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(l)); done(); } });
  node = await startTestNode(freshPglite(), { logger: { level: 'info', stream } as never });
  await seedPrincipals(node);
  expect((await node.api('POST', '/v1/agents', agentBody({ id: 'log-bot', ceiling: { template: 'ceiling-folder', values: { '?resource': folder('invoices') } } }))).status).toBe(201);
  expect((await node.api('POST', '/v1/agents/log-bot/authorize', { grants: [{ template: 'grant-read-folder', values: { '?resource': folder('invoices') } }] })).status).toBe(200);
  await new Promise((r) => setTimeout(r, 1100));
  const now = Math.floor(Date.now() / 1000);
  token = await new SignJWT({ authorization_details: [{ type: 'leash:cedar', actions: ['read'], resourceIn: folder('invoices') }], jti: crypto.randomUUID() })
    .setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setIssuer('https://idp.example').setAudience('leash').setSubject('log-bot').setIssuedAt(now).setExpirationTime(now + 120).sign(agentPrivateKey);
});
afterAll(async () => node?.close());

describe('request log lines', () => {
  it('a decision request: both its lines carry the caller\'s request id, the completed one the decision id', async () => {
    const res = await node.api('POST', '/access/v1/evaluation', evaluation('d-1'), { 'x-request-id': 'req-log-0001' }, PEP_TOKEN);
    expect(res.status).toBe(200);
    expect(res.headers['x-request-id']).toBe('req-log-0001');
    const mine = ofRequest('req-log-0001');
    expect(mine.map((l) => l.msg)).toEqual(['incoming request', 'request completed']);
    expect(mine[1]).toMatchObject({ decisionId: res.body.context.id, res: { statusCode: 200 } });
  });

  it('a batch: how many decisions, and the first ten ids (a line stays bounded however big the batch)', async () => {
    const res = await node.api('POST', '/access/v1/evaluations', { evaluations: Array.from({ length: 12 }, (_, i) => evaluation(`b-${i}`)) }, { 'x-request-id': 'req-log-0002' }, PEP_TOKEN);
    expect(res.status).toBe(200);
    const done = ofRequest('req-log-0002').find((l) => l.msg === 'request completed')!;
    expect(done.decisions).toBe(12);
    expect(done.decisionIds).toEqual(res.body.evaluations.slice(0, 10).map((e: { context: { id: string } }) => e.context.id));
  });

  it('an id that is not sane is replaced by one of ours; no line holds a token or the Authorization header', async () => {
    await node.api('POST', '/access/v1/evaluation', evaluation('d-2'), { 'x-request-id': 'bad id\nwith a newline'.padEnd(300, 'x') }, PEP_TOKEN);
    expect(lines.some((l) => String(l.reqId).includes('newline'))).toBe(false);
    const text = lines.map((l) => JSON.stringify(l)).join('\n');
    expect(text).not.toContain(token);
    expect(text).not.toContain(PEP_TOKEN);
    expect(lines.every((l) => typeof l.reqId === 'string' || l.msg === undefined || !('req' in l))).toBe(true);
  });
});
