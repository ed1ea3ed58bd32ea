// The approval round trip over HTTP: `leash serve` in its own process on PostgreSQL, one client
// here doing what a PEP and an approver do, one after the other: the payment over the limit is
// asked (APPROVAL_REQUIRED, the approval recorded), alice approves it with her own token (a
// recorded admin decision, the answer fenced), and the payment is asked again with the approval
// (allowed, the approval spent). The baseline, in the same run on the same server, is three
// plain decisions in a row (a payment under the limit): the same number of round trips with
// nothing to record but the decisions. Not a test: it measures, it asserts nothing.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { SignJWT, exportJWK, generateKeyPair, type CryptoKey } from 'jose';
import { PEP, startServer } from './http.ts';
import type { Latencies } from './tokens.ts';

const ADMIN = 'bench-operator-token-0123456789';
const ISSUER = 'https://idp.example/people';
const AUDIENCE = 'leash-admin';
const invoices = { type: 'Folder', id: 'invoices' };

export interface ApprovalRun {
  roundTrip: Latencies;
  baseline: Latencies;
  rounds: number;
}

async function call(url: string, method: string, path: string, body: unknown, bearer = ADMIN): Promise<any> {
  const res = await fetch(`${url}${path}`, { method, headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  const answer = await res.json();
  if (res.status >= 300) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(answer)}`);
  return answer;
}

const stats = (times: number[], seconds: number): Latencies => {
  const sorted = [...times].sort((a, b) => a - b);
  const at = (p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
  return { perSecond: times.length / seconds, median: at(0.5), p99: at(0.99) };
};

export async function benchApprovals(databaseUrl: string, options: { rounds: number }): Promise<ApprovalRun> {
  const dir = mkdtempSync(join(tmpdir(), 'leash-bench-people-'));
  const people = await generateKeyPair('ES256', { extractable: true });
  const jwksFile = join(dir, 'people.jwks.json');
  writeFileSync(jwksFile, JSON.stringify({ keys: [{ ...(await exportJWK(people.publicKey)), alg: 'ES256', kid: 'people-1' }] }));
  const server = await startServer({ DATABASE_URL: databaseUrl, LEASH_HUMAN_ISSUER: ISSUER, LEASH_HUMAN_AUDIENCE: AUDIENCE, LEASH_HUMAN_JWKS_FILE: jwksFile });
  try {
    const { url } = server;
    await call(url, 'POST', '/v1/groups', { id: 'finance', parents: [] });
    await call(url, 'POST', '/v1/groups', { id: 'finance-agents', parents: [] });
    await call(url, 'POST', '/v1/humans', { id: 'alice', email: 'alice@example.com', groups: ['finance'] });
    const agent = await generateKeyPair('ES256', { extractable: true });
    await call(url, 'POST', '/v1/agents', {
      id: 'pay-bot', owner: 'alice', purpose: 'pay invoices', provenance: { model: 'm', modelVersion: '1', environment: 'production' }, trustScore: 70, groups: ['finance-agents'], tags: [],
      credentials: { issuer: 'https://idp.example', audience: 'leash', algorithms: ['ES256'], clockSkewSeconds: 30, maxTokenLifetimeSeconds: 3600, jwks: { keys: [{ ...(await exportJWK(agent.publicKey)), alg: 'ES256', kid: 'k1' }] } },
      ceiling: { template: 'ceiling-payments', values: { '?resource': invoices } },
    });
    await call(url, 'POST', '/v1/agents/pay-bot/authorize', { grants: [] });
    await new Promise((r) => setTimeout(r, 1100)); // tokens issued after the authorize (whole seconds)
    const token = await sign(agent.privateKey, { sub: 'pay-bot', iss: 'https://idp.example', aud: 'leash', authorization_details: [{ type: 'leash:cedar', actions: ['pay'], resourceIn: invoices }] }, 'k1', 3000);
    const alice = await sign(people.privateKey, { sub: 'alice', iss: ISSUER, aud: AUDIENCE }, 'people-1', 3000);
    const pay = (amount: number, doc: string, approvalId?: string) => call(url, 'POST', '/access/v1/evaluation', {
      subject: { type: 'agent', id: 'pay-bot', properties: { token } }, action: { name: 'pay' }, resource: { type: 'Document', id: doc },
      context: { amount, ...(approvalId ? { approvalId } : {}), entities: [{ uid: { type: 'Document', id: doc }, attrs: {}, parents: [invoices] }] },
    }, PEP);

    const roundTrip = async (i: number) => {
      const held = await pay(25_000, `inv-${i}`);
      if (held.context.code !== 'APPROVAL_REQUIRED') throw new Error(`expected APPROVAL_REQUIRED, got ${JSON.stringify(held)}`);
      await call(url, 'POST', `/v1/approvals/${held.context.approval.id}/approve`, { reason: 'checked' }, alice);
      const allowed = await pay(25_000, `inv-${i}`, held.context.approval.id);
      if (!allowed.decision) throw new Error(`expected the approved payment to be allowed, got ${JSON.stringify(allowed)}`);
    };
    const plain = async (i: number) => {
      for (let k = 0; k < 3; k++) if (!(await pay(500, `small-${i}-${k}`)).decision) throw new Error('the small payment was not allowed');
    };
    // Warm-up, then alternating blocks of each, so both see the same machine.
    for (let i = 0; i < 50; i++) await roundTrip(-1 - i);
    for (let i = 0; i < 50; i++) await plain(-1 - i);
    const times = { roundTrip: [] as number[], baseline: [] as number[] };
    const spent = { roundTrip: 0, baseline: 0 };
    for (let block = 0; block < 10; block++) {
      for (const [kind, op] of [['roundTrip', roundTrip], ['baseline', plain]] as const) {
        const start = performance.now();
        for (let i = 0; i < options.rounds / 10; i++) {
          const t = performance.now();
          await op(block * 1_000_000 + i);
          times[kind].push(performance.now() - t);
        }
        spent[kind] += (performance.now() - start) / 1000;
      }
    }
    return { roundTrip: stats(times.roundTrip, spent.roundTrip), baseline: stats(times.baseline, spent.baseline), rounds: options.rounds };
  } finally {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function sign(key: CryptoKey, claims: Record<string, unknown>, kid: string, seconds: number): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ ...claims, jti: crypto.randomUUID() }).setProtectedHeader({ alg: 'ES256', kid }).setIssuedAt(now).setExpirationTime(now + seconds).sign(key);
}
