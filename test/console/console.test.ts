import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SignJWT } from 'jose';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freshPglite } from '../support/backends.ts';
import { ADMIN_TOKEN, PEP_TOKEN, agentBody, agentPrivateKey, seedPrincipals, startTestNode, type TestNode } from '../support/node.ts';
import { pay, payToken, registerPayBot } from '../support/payments.ts';
import { ensureServerPackages } from '../support/servers.ts';

// The console in a real Chromium (Debian's, driven by playwright-core; nothing downloaded),
// against a real node: sign in, find an agent, open its timeline, revoke it and see the status
// change, run a what-if, approve a payment, pull the kill switch for a tag, and what an
// anonymous visitor gets. Screenshots go to
// test-artifacts/console/ (not committed).

const ARTIFACTS = fileURLToPath(new URL('../../test-artifacts/console/', import.meta.url));
const folder = (id: string) => ({ type: 'Folder', id });

describe('the console', () => {
  let node: TestNode;
  let url: string;
  let browser: Browser;
  let page: Page;
  /** Every request the page made to Leash beyond its own static files, with whether it carried the token. */
  const calls: { url: string; authorized: boolean }[] = [];

  const shot = (name: string) => page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });

  beforeAll(async () => {
    const { chromium: executablePath } = ensureServerPackages();
    mkdirSync(ARTIFACTS, { recursive: true });
    node = await startTestNode(freshPglite());
    await node.app.listen({ port: 0, host: '127.0.0.1' });
    url = `http://127.0.0.1:${(node.app.server.address() as { port: number }).port}`;
    await seedPrincipals(node);
    for (const id of ['invoice-bot', 'report-bot', 'helper-bot']) {
      expect((await node.api('POST', '/v1/agents', agentBody({ id, ceiling: { template: 'ceiling-folder', values: { '?resource': folder('invoices') } } }))).status).toBe(201);
      expect((await node.api('POST', `/v1/agents/${id}/authorize`, { grants: [{ template: 'grant-read-folder', values: { '?resource': folder('invoices') } }] })).status).toBe(200);
    }
    await registerPayBot(node);
    await new Promise((r) => setTimeout(r, 1100)); // tokens issued after the authorize (whole seconds)
    const now = Math.floor(Date.now() / 1000);
    const token = await new SignJWT({ authorization_details: [{ type: 'leash:cedar', actions: ['read'], resourceIn: folder('invoices') }], jti: crypto.randomUUID() })
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setIssuer('https://idp.example').setAudience('leash').setSubject('invoice-bot').setIssuedAt(now).setExpirationTime(now + 120).sign(agentPrivateKey);
    for (const doc of ['inv-1', 'inv-2', 'inv-3']) {
      const res = await node.api('POST', '/access/v1/evaluation', {
        subject: { type: 'agent', id: 'invoice-bot', properties: { token } }, action: { name: 'read' }, resource: { type: 'Document', id: doc },
        context: { entities: [{ uid: { type: 'Document', id: doc }, attrs: {}, parents: [folder('invoices')] }] },
      }, {}, PEP_TOKEN);
      expect(res.body.decision).toBe(true);
    }
    // report-bot hands part of its token to helper-bot (token exchange; both in finance-agents).
    const assertion = (agent: string) => new SignJWT({ iss: agent, sub: agent, aud: 'http://127.0.0.1:8080', jti: crypto.randomUUID() })
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setIssuedAt(now).setExpirationTime(now + 60).sign(agentPrivateKey);
    const oauth = async (form: Record<string, string>) => {
      const res = await fetch(`${url}/oauth/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(form).toString() });
      expect(res.status).toBe(200);
      return (await res.json()) as { access_token: string };
    };
    const details = JSON.stringify([{ type: 'leash:cedar', actions: ['read'], resourceIn: folder('invoices') }]);
    const bearer = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
    const parent = await oauth({ grant_type: 'client_credentials', client_assertion_type: bearer, client_assertion: await assertion('report-bot'), authorization_details: details });
    await oauth({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange', client_assertion_type: bearer, client_assertion: await assertion('report-bot'),
      subject_token: parent.access_token, subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      actor_token: await assertion('helper-bot'), actor_token_type: 'urn:ietf:params:oauth:token-type:jwt', authorization_details: details,
    });
    browser = await chromium.launch({ executablePath, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.on('request', (r) => {
      const path = new URL(r.url()).pathname;
      if (!path.startsWith('/console')) calls.push({ url: path, authorized: (r.headers().authorization ?? '') === `Bearer ${ADMIN_TOKEN}` });
    });
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
    await node?.close();
  });

  it('an anonymous visitor sees only the sign-in page; a wrong token is refused there', async () => {
    const res = await page.goto(`${url}/console`);
    expect(res?.status()).toBe(200);
    expect(res?.headers()['content-security-policy']).toMatch(/default-src 'none'; script-src 'self' 'sha256-[\w+/=]+'/);
    await page.getByRole('heading', { name: 'Sign in to Leash' }).waitFor();
    expect(await page.locator('table').count()).toBe(0);
    await page.goto(`${url}/console/#/agents`);
    await page.getByRole('heading', { name: 'Sign in to Leash' }).waitFor();
    await page.getByLabel('Token').fill('not-the-token');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('alert').filter({ hasText: 'That token is not accepted.' }).waitFor();
    await shot('sign-in');
    // And the API itself answers nothing without the token, whatever the console shows.
    expect((await fetch(`${url}/v1/agents`)).status).toBe(401);
  });

  it('signed in: finds an agent, opens its timeline and recent decisions, revokes it and sees the status change', async () => {
    await page.getByLabel('Token').fill(ADMIN_TOKEN);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Agents' }).waitFor();
    await page.locator('tr[data-agent="report-bot"]').waitFor();
    await page.getByLabel('Owner').fill('alice');
    await page.getByLabel('Owner').press('Enter');
    await page.getByLabel('Status').selectOption('active');
    await page.locator('tr[data-agent="invoice-bot"]').waitFor();
    await shot('agents');
    await page.getByRole('link', { name: 'invoice-bot' }).click();
    await page.getByRole('heading', { name: /Agent invoice-bot/ }).waitFor();
    const timeline = page.locator('table.timeline');
    await timeline.getByText('AgentAuthorized').waitFor();
    expect(await timeline.getByText('AgentRegistered').count()).toBe(1);
    expect(await page.getByRole('link', { name: /\d/ }).count()).toBeGreaterThanOrEqual(3); // the three decisions, each a link to its trace
    await page.getByRole('button', { name: 'Revoke' }).click();
    await page.getByLabel('Reason').fill('revoked from the console');
    await page.getByRole('button', { name: 'Confirm: Revoke' }).click();
    await page.locator('h1 .status.revoked').waitFor();
    await timeline.getByText('AgentRevoked').waitFor();
    await shot('agent-revoked');
    expect(node.view.agents.get('invoice-bot')!.record.status).toBe('revoked');
    expect((await node.api('GET', '/v1/agents/invoice-bot/events')).body.events.at(-1)).toMatchObject({ type: 'AgentRevoked', data: { reason: 'revoked from the console' }, actor: 'operator' });
  });

  it('opens a decision\'s trace: who for whom, the deciding layer, the policies and the policy version', async () => {
    await page.locator('table').last().getByRole('link').first().click();
    await page.getByRole('heading', { name: /Decision/ }).waitFor();
    expect(await page.locator('dd.chain').textContent()).toBe('initiator Human alice → actor Agent invoice-bot');
    expect(await page.locator('dd.reasons').textContent()).toMatch(/ceiling:invoice-bot/);
    await shot('decision-trace');
  });

  it('runs a what-if with a candidate set and lists the decisions that would flip', async () => {
    await page.getByRole('link', { name: 'What if' }).click();
    const policies = page.getByLabel(/Candidate policies/);
    await policies.waitFor();
    const current = await policies.inputValue();
    expect(current).toContain('permit');
    await policies.fill(`${current}\nforbid (principal, action, resource in Folder::"invoices");`);
    await page.getByRole('button', { name: 'Run what-if' }).click();
    await page.locator('p.summary').waitFor();
    expect(await page.locator('p.summary').textContent()).toMatch(/^3 decisions replayed: 3 would change \(3 allow→deny, 0 deny→allow\)\.$/);
    expect(await page.locator('table.flips tbody tr').count()).toBe(3);
    await shot('what-if');
  });

  it('shows the delegation: alice, the agents she owns, and the sub-agent report-bot handed its token to', async () => {
    await page.getByRole('link', { name: 'Delegation' }).click();
    const alice = page.locator('li[data-human="alice"]');
    await alice.waitFor();
    await alice.locator('li[data-agent="report-bot"] li[data-agent="helper-bot"]').waitFor();
    expect(await alice.locator('li[data-agent="invoice-bot"] li[data-agent]').count()).toBe(0);
    await shot('delegation');
  });

  it('approves a payment waiting for alice, naming her as the operator token must, and the payment goes through', async () => {
    const token = await payToken();
    const held = await pay(node, token, 25_000);
    expect(held.context.code).toBe('APPROVAL_REQUIRED');
    await page.getByRole('link', { name: 'Approvals' }).click();
    await page.getByRole('heading', { name: 'Approvals waiting' }).waitFor();
    await page.getByRole('button', { name: 'Approve' }).click();
    await page.getByLabel('Reason').fill('invoice checked');
    await page.getByLabel(/Approver/).fill('alice');
    await page.getByRole('button', { name: 'Confirm: Approve' }).click();
    await page.getByText('Nothing waits.').waitFor();
    await shot('approvals');
    expect((await pay(node, token, 25_000, 'inv-1', { approvalId: held.context.approval!.id })).context.code).toBe('APPROVED');
  });

  it('pulls the kill switch for a tag: refused until REVOKE is typed, then only the tagged agents are revoked, on every node', async () => {
    for (const id of ['lab-bot-1', 'lab-bot-2']) {
      expect((await node.api('POST', '/v1/agents', agentBody({ id, tags: ['lab'] }))).status).toBe(201);
      expect((await node.api('POST', `/v1/agents/${id}/authorize`, { grants: [] })).status).toBe(200);
    }
    await page.getByRole('link', { name: 'Kill switch' }).click();
    await page.getByRole('heading', { name: 'Kill switch' }).waitFor();
    await page.getByLabel('Scope').selectOption('tag');
    await page.getByLabel('tag', { exact: true }).fill('lab');
    await page.getByRole('button', { name: 'Revoke them all' }).click();
    await page.getByLabel('Reason').fill('lab agents misbehaving');
    await page.getByLabel('Type REVOKE').fill('revoke');
    await page.getByRole('button', { name: 'Confirm: Revoke them all' }).click();
    await page.getByRole('alert').filter({ hasText: 'Type REVOKE to confirm.' }).waitFor();
    expect(node.view.agents.get('lab-bot-1')!.record.status).toBe('active');
    await page.getByLabel('Type REVOKE').fill('REVOKE');
    await page.getByRole('button', { name: 'Confirm: Revoke them all' }).click();
    const summary = page.locator('p.summary');
    await summary.waitFor();
    // (Revoked side by side: in the order they were committed.)
    expect(await summary.textContent()).toMatch(/^Revoked 2: (lab-bot-1, lab-bot-2|lab-bot-2, lab-bot-1); confirmed by 1 of 1 nodes\.$/);
    await shot('kill-switch');
    for (const id of ['lab-bot-1', 'lab-bot-2']) expect(node.view.agents.get(id)!.record.status).toBe('revoked');
    expect(node.view.agents.get('pay-bot')!.record.status).toBe('active');
  });

  it('every API call the console made carried the signed-in token', () => {
    expect(calls.length).toBeGreaterThan(5);
    // The only calls without it are the sign-in attempt with the wrong token.
    const without = calls.filter((c) => !c.authorized);
    expect(without).toEqual([{ url: '/v1/agents', authorized: false }]);
  });
});
