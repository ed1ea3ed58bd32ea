import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SignJWT, exportJWK, generateKeyPair, type JWTPayload } from 'jose';
import * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import fc from 'fast-check';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readDecisions, verifyDecisionChain } from '../../src/audit/decision-reads.ts';
import { entitiesFor } from '../../src/authz/engine.ts';
import { freshPostgres } from '../support/backends.ts';
import { freePort } from '../support/servers.ts';
import { PEP_TOKEN, agentBody, startTestNode, type TestNode } from '../support/node.ts';

// SPEC §3: token → details → ceiling → agent → human, all must allow; any forbid wins; the
// decision names the layer that refused. Every rejected-token kind has its own code.

const schema = readFileSync(new URL('../../cedar/schema.cedarschema', import.meta.url), 'utf8');
const policies = `
@id("agents-read-invoices")
permit (principal in Group::"finance-agents", action == Action::"read", resource in Folder::"invoices");

@id("finance-reads-invoices")
permit (principal in Group::"finance", action == Action::"read", resource in Folder::"invoices");

@id("finance-writes-invoices")
permit (principal in Group::"finance", action == Action::"write", resource in Folder::"invoices");

@id("everyone-reads-reports")
permit (principal, action == Action::"read", resource in Folder::"reports");

@id("no-secrets")
forbid (principal, action, resource in Folder::"secret");

@id("ceiling-no-writes-to-locked")
@layer("ceiling")
forbid (principal, action == Action::"write", resource in Folder::"locked");

@id("ceiling-folder")
@layer("ceiling")
permit (principal, action in [Action::"read", Action::"write"], resource in ?resource);

@id("no-large-limits")
forbid (principal, action == Action::"write", resource)
when { context has limit && context.limit.greaterThan(decimal("12345678901234.1233")) };

@id("no-huge-amounts")
forbid (principal, action == Action::"write", resource)
when { context has amount && context.amount > 9007199254740990 };

@id("grant-write-folder")
permit (principal, action == Action::"write", resource in ?resource);
`;

const ISSUER = 'https://idp.example';
const keys = await generateKeyPair('ES256', { extractable: true });
const otherKeys = await generateKeyPair('ES256', { extractable: true });
const jwk = { ...(await exportJWK(keys.publicKey)), alg: 'ES256', kid: 'k1' };
const pins = { issuer: ISSUER, audience: 'leash', algorithms: ['ES256'], clockSkewSeconds: 5, maxTokenLifetimeSeconds: 300, jwks: { keys: [jwk] } };
const folder = (id: string) => ({ type: 'Folder', id });
const invoicesCeiling = { template: 'ceiling-folder', values: { '?resource': folder('invoices') } };

/** Documents and folders the PEP describes: d1 in invoices, s1 in secret in invoices, l1 in locked in invoices, r1 in reports. */
const entities = [
  { uid: folder('invoices'), attrs: {}, parents: [] },
  { uid: folder('secret'), attrs: {}, parents: [folder('invoices')] },
  { uid: folder('locked'), attrs: {}, parents: [folder('invoices')] },
  { uid: folder('reports'), attrs: {}, parents: [] },
  { uid: { type: 'Document', id: 'd1' }, attrs: {}, parents: [folder('invoices')] },
  { uid: { type: 'Document', id: 's1' }, attrs: {}, parents: [folder('secret')] },
  { uid: { type: 'Document', id: 'l1' }, attrs: {}, parents: [folder('locked')] },
  { uid: { type: 'Document', id: 'r1' }, attrs: {}, parents: [folder('reports')] },
];

const readInvoices = [{ type: 'leash:cedar', actions: ['read'], resourceIn: folder('invoices') }];
const now = () => Math.floor(Date.now() / 1000);

async function mint(claims: JWTPayload & Record<string, unknown>, options: { key?: Parameters<SignJWT['sign']>[0]; kid?: string; lifetime?: number; omit?: string[] } = {}): Promise<string> {
  const iat = claims.iat ?? now();
  const body: Record<string, unknown> = { iss: ISSUER, aud: 'leash', iat, exp: iat + (options.lifetime ?? 120), authorization_details: readInvoices, jti: crypto.randomUUID(), ...claims };
  for (const k of options.omit ?? []) delete body[k];
  return new SignJWT(body).setProtectedHeader({ alg: 'ES256', kid: options.kid ?? 'k1', typ: 'at+jwt' }).sign(options.key ?? keys.privateKey);
}

let node: TestNode;
const ask = async (agent: string, token: string | undefined, action: string, doc: string, context: Record<string, unknown> = {}) => {
  const res = await node.api(
    'POST',
    '/access/v1/evaluation',
    {
      subject: { type: 'agent', id: agent, ...(token === undefined ? {} : { properties: { token } }) },
      action: { name: action },
      resource: { type: 'Document', id: doc },
      context: { entities, ...context },
    },
    {},
    PEP_TOKEN,
  );
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body as { decision: boolean; context: { id: string; layer: string; code?: string; reasons: string[]; policyVersion: number } };
};

beforeAll(async () => {
  node = await startTestNode(await freshPostgres());
  expect((await node.api('PUT', '/v1/policy-set', { schema, policies })).status).toBe(200);
  for (const id of ['finance', 'finance-agents']) await node.api('POST', '/v1/groups', { id });
  await node.api('POST', '/v1/humans', { id: 'alice', email: 'alice@example.com', groups: ['finance'] });
  await node.api('POST', '/v1/humans', { id: 'eve', email: 'eve@example.com', groups: [] });
  const register = async (id: string, overrides: Record<string, unknown> = {}, authorize: unknown = { grants: [] }) => {
    const res = await node.api('POST', '/v1/agents', agentBody({ id, credentials: pins, ceiling: invoicesCeiling, groups: ['finance-agents'], ...overrides }));
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    if (authorize) expect((await node.api('POST', `/v1/agents/${id}/authorize`, authorize)).status).toBe(200);
  };
  await register('bot');
  await register('bot-eve', { owner: 'eve' });
  await register('bot-no-ceiling', { ceiling: null });
  await register('bot-writer', {}, { grants: [{ template: 'grant-write-folder', values: { '?resource': folder('invoices') } }] });
  await register('bot-suspended');
  await node.api('POST', '/v1/agents/bot-suspended/suspend', { reason: 'anomaly' });
  await register('bot-parent');
  await register('bot-child');
  await register('bot-revoked-parent');
  await node.api('POST', '/v1/agents/bot-revoked-parent/revoke', { mode: 'immediate', reason: 'compromised' });
});
afterAll(async () => node?.close());

describe('an agent with a good token', () => {
  it('is allowed when every layer allows, and the decision names the policies', async () => {
    const d = await ask('bot', await mint({ sub: 'bot' }), 'read', 'd1');
    expect(d).toMatchObject({ decision: true, context: { layer: 'all', policyVersion: 2 } });
    expect(d.context.reasons).toEqual(expect.arrayContaining(['ceiling:bot', 'agents-read-invoices', 'finance-reads-invoices']));
  });

  it('a token acting for a human (act claim) is honoured for the agent\'s owner only: the agent does not pick whom it is checked against', async () => {
    expect(await ask('bot', await mint({ sub: 'alice', act: { sub: 'bot' } }), 'read', 'd1')).toMatchObject({ decision: true });
    // eve is a registered human; the agent signing a token that names her changes nothing.
    for (const sub of ['eve', 'nobody']) {
      expect(await ask('bot', await mint({ sub, act: { sub: 'bot' } }), 'read', 'd1'), sub).toMatchObject({ decision: false, context: { layer: 'token', code: 'DELEGATION_NOT_GRANTED' } });
    }
    // Acting for nobody in particular is not acting for the owner either.
    for (const sub of ['', 123, ['alice'], undefined]) {
      const token = await mint({ sub: sub as string, act: { sub: 'bot' } }, { omit: sub === undefined ? ['sub'] : [] });
      expect(await ask('bot', token, 'read', 'd1'), JSON.stringify(sub)).toMatchObject({ decision: false, context: { layer: 'token', code: 'TOKEN_MALFORMED' } });
    }
  });

  it('a sub-agent is allowed only while every agent above it in the act chain is active', async () => {
    expect(await ask('bot-child', await mint({ sub: 'alice', act: { sub: 'bot-child', act: { sub: 'bot-parent' } } }), 'read', 'd1')).toMatchObject({ decision: true });
    expect(await ask('bot-child', await mint({ sub: 'alice', act: { sub: 'bot-child', act: { sub: 'bot-revoked-parent' } } }), 'read', 'd1')).toMatchObject({
      decision: false, context: { layer: 'token', code: 'DELEGATION_CHAIN_BROKEN' },
    });
  });

  it('grants (template links from authorize) extend the agent layer', async () => {
    const writeInvoices = [{ type: 'leash:cedar', actions: ['write'], resourceIn: folder('invoices') }];
    expect(await ask('bot-writer', await mint({ sub: 'bot-writer', authorization_details: writeInvoices }), 'write', 'd1')).toMatchObject({ decision: true, context: { layer: 'all' } });
    // Without the grant the same request stops at the agent layer, though the human may write.
    expect(await ask('bot', await mint({ sub: 'bot', authorization_details: writeInvoices }), 'write', 'd1')).toMatchObject({ decision: false, context: { layer: 'agent' } });
  });

  it('an answer remembered for identical inputs is not reused once the agent changes', async () => {
    const writeInvoices = [{ type: 'leash:cedar', actions: ['write'], resourceIn: folder('invoices') }];
    expect((await node.api('POST', '/v1/agents', agentBody({ id: 'bot-memo', credentials: pins, ceiling: invoicesCeiling, groups: ['finance-agents'] }))).status).toBe(201);
    expect((await node.api('POST', '/v1/agents/bot-memo/authorize', { grants: [] })).status).toBe(200);
    for (let i = 0; i < 2; i++) {
      expect(await ask('bot-memo', await mint({ sub: 'bot-memo', authorization_details: writeInvoices }), 'write', 'd1')).toMatchObject({ decision: false, context: { layer: 'agent' } });
    }
    expect((await node.api('POST', '/v1/agents/bot-memo/suspend', { reason: 'regrant' })).status).toBe(200);
    expect((await node.api('POST', '/v1/agents/bot-memo/authorize', { grants: [{ template: 'grant-write-folder', values: { '?resource': folder('invoices') } }] })).status).toBe(200);
    expect(await ask('bot-memo', await mint({ sub: 'bot-memo', authorization_details: writeInvoices }), 'write', 'd1')).toMatchObject({ decision: true, context: { layer: 'all' } });
  });
});

describe('exact values on the way to Cedar', () => {
  const writes = [{ type: 'leash:cedar', actions: ['write'], resourceIn: folder('invoices') }];
  const write = async (context: Record<string, unknown>) => ask('bot-writer', await mint({ sub: 'bot-writer', authorization_details: writes }), 'write', 'd1', context);
  const decimal = (arg: string) => ({ __extn: { fn: 'decimal', arg } });

  it('decimals keep every digit (these two are the same double)', async () => {
    expect(12345678901234.1234).toBe(12345678901234.1233);
    expect(await write({ limit: decimal('12345678901234.1233') })).toMatchObject({ decision: true });
    expect(await write({ limit: decimal('12345678901234.1234') })).toMatchObject({ decision: false, context: { reasons: ['no-large-limits'] } });
  });

  it('integers up to 2^53 - 1 arrive exactly; beyond it the request is refused', async () => {
    expect(await write({ amount: 9007199254740990 })).toMatchObject({ decision: true });
    expect(await write({ amount: 9007199254740991 })).toMatchObject({ decision: false, context: { reasons: ['no-huge-amounts'] } });
    expect(await write({ sourceIp: { __extn: { fn: 'ip', arg: '10.0.0.1' } } })).toMatchObject({ decision: true });
  });
});

describe('layer intersection (SPEC §3)', () => {
  it('ceiling allows but the human does not → denied at the human layer', async () => {
    expect(await ask('bot-eve', await mint({ sub: 'bot-eve' }), 'read', 'd1')).toMatchObject({ decision: false, context: { layer: 'human' } });
  });

  it('human and agent allow but the ceiling does not → denied (details beyond the ceiling)', async () => {
    const reports = [{ type: 'leash:cedar', actions: ['read'], resourceIn: folder('reports') }];
    expect(await ask('bot', await mint({ sub: 'bot', authorization_details: reports }), 'read', 'r1')).toMatchObject({
      decision: false, context: { layer: 'details', code: 'DETAILS_BEYOND_CEILING' },
    });
  });

  it('a forbid in the ceiling layer wins', async () => {
    const writes = [{ type: 'leash:cedar', actions: ['write'], resourceIn: folder('invoices') }];
    const d = await ask('bot-writer', await mint({ sub: 'bot-writer', authorization_details: writes }), 'write', 'l1');
    expect(d).toMatchObject({ decision: false, context: { layer: 'ceiling', reasons: ['ceiling-no-writes-to-locked'] } });
  });

  it('a forbid in the ordinary policies wins, naming the forbid', async () => {
    const d = await ask('bot', await mint({ sub: 'bot' }), 'read', 's1');
    expect(d).toMatchObject({ decision: false, context: { layer: 'agent', reasons: ['no-secrets'] } });
  });

  it('an agent with no ceiling is denied', async () => {
    expect(await ask('bot-no-ceiling', await mint({ sub: 'bot-no-ceiling' }), 'read', 'd1')).toMatchObject({ decision: false, context: { layer: 'ceiling', code: 'NO_CEILING' } });
  });

  it('details that cover a different resource or action are denied', async () => {
    const other = [{ type: 'leash:cedar', actions: ['read'], resource: { type: 'Document', id: 'd9' } }];
    expect(await ask('bot', await mint({ sub: 'bot', authorization_details: other }), 'read', 'd1')).toMatchObject({ decision: false, context: { layer: 'details', code: 'DETAILS_NOT_COVERING' } });
    const writeOnly = [{ type: 'leash:cedar', actions: ['write'], resourceIn: folder('invoices') }];
    expect(await ask('bot', await mint({ sub: 'bot', authorization_details: writeOnly }), 'read', 'd1')).toMatchObject({ decision: false, context: { code: 'DETAILS_NOT_COVERING' } });
    const exact = [{ type: 'leash:cedar', actions: ['read'], resource: { type: 'Document', id: 'd1' } }];
    expect(await ask('bot', await mint({ sub: 'bot', authorization_details: exact }), 'read', 'd1')).toMatchObject({ decision: true });
  });

  it('a token asking for more than the ceiling is refused outright, although this request is inside it', async () => {
    const greedy = [...readInvoices, { type: 'leash:cedar', actions: ['read'], resourceIn: folder('reports') }];
    expect(await ask('bot', await mint({ sub: 'bot', authorization_details: greedy }), 'read', 'd1')).toMatchObject({
      decision: false, context: { layer: 'details', code: 'DETAILS_BEYOND_CEILING' },
    });
  });

  it.each([
    ['missing', undefined, 'DETAILS_MISSING'],
    ['not an array', { type: 'leash:cedar' }, 'DETAILS_MALFORMED'],
    ['empty', [], 'DETAILS_MALFORMED'],
    ['of an unknown type', [{ type: 'payment_initiation', actions: ['read'] }], 'DETAILS_UNSUPPORTED_TYPE'],
    ['with both resource and resourceIn', [{ type: 'leash:cedar', actions: ['read'], resource: folder('invoices'), resourceIn: folder('invoices') }], 'DETAILS_MALFORMED'],
    ['with no actions', [{ type: 'leash:cedar', actions: [], resourceIn: folder('invoices') }], 'DETAILS_MALFORMED'],
  ])('authorization_details %s → %s', async (_name, details, code) => {
    const token = await mint({ sub: 'bot', authorization_details: details }, { omit: details === undefined ? ['authorization_details'] : [] });
    expect(await ask('bot', token, 'read', 'd1')).toMatchObject({ decision: false, context: { layer: 'details', code } });
  });
});

describe('rejected tokens, each with its own code', () => {
  const unsigned = (claims: Record<string, unknown>) =>
    `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.`;

  it.each<[string, () => Promise<string | undefined>, string, string?]>([
    ['no token', async () => undefined, 'TOKEN_MISSING'],
    ['garbage', async () => 'not.a.jwt', 'TOKEN_MALFORMED'],
    ['alg none', async () => unsigned({ sub: 'bot', iss: ISSUER, aud: 'leash', iat: now(), exp: now() + 60, authorization_details: readInvoices }), 'TOKEN_ALG_NOT_ALLOWED'],
    ['HS256 keyed with the public key', async () => new SignJWT({ sub: 'bot', iss: ISSUER, aud: 'leash', iat: now(), exp: now() + 60 }).setProtectedHeader({ alg: 'HS256', kid: 'k1' }).sign(new TextEncoder().encode(JSON.stringify(jwk))), 'TOKEN_ALG_NOT_ALLOWED'],
    ['an unknown kid', async () => mint({ sub: 'bot' }, { key: otherKeys.privateKey, kid: 'k-unknown' }), 'TOKEN_UNKNOWN_KEY'],
    ['a signature by another key', async () => mint({ sub: 'bot' }, { key: otherKeys.privateKey }), 'TOKEN_BAD_SIGNATURE'],
    ['expired', async () => mint({ sub: 'bot', iat: now() - 200 }, { lifetime: 100 }), 'TOKEN_EXPIRED'],
    ['no exp', async () => mint({ sub: 'bot' }, { omit: ['exp'] }), 'TOKEN_MISSING_EXP'],
    ['no iat', async () => mint({ sub: 'bot' }, { omit: ['iat'] }), 'TOKEN_MISSING_IAT'],
    ['nbf in the future', async () => mint({ sub: 'bot', nbf: now() + 120 }), 'TOKEN_NOT_YET_VALID'],
    ['iat in the future', async () => mint({ sub: 'bot', iat: now() + 120 }), 'TOKEN_NOT_YET_VALID'],
    ['a far-future exp', async () => mint({ sub: 'bot' }, { lifetime: 30 * 24 * 3600 }), 'TOKEN_LIFETIME_TOO_LONG'],
    ['another issuer', async () => mint({ sub: 'bot', iss: 'https://evil.example' }), 'TOKEN_WRONG_ISSUER'],
    ['another audience', async () => mint({ sub: 'bot', aud: 'someone-else' }), 'TOKEN_WRONG_AUDIENCE'],
    ['issued before the last authorize/rotation', async () => mint({ sub: 'bot', iat: now() - 240 }, { lifetime: 290 }), 'TOKEN_ISSUED_BEFORE_ROTATION'],
    ['naming another agent', async () => mint({ sub: 'bot-eve' }), 'TOKEN_SUBJECT_MISMATCH'],
    ['for a suspended agent', async () => mint({ sub: 'bot-suspended' }), 'AGENT_NOT_ACTIVE', 'bot-suspended'],
    ['for an agent that does not exist', async () => mint({ sub: 'ghost' }), 'AGENT_UNKNOWN', 'ghost'],
  ])('%s → %s', async (_name, token, code, agent = 'bot') => {
    expect(await ask(agent, await token(), 'read', 'd1')).toMatchObject({ decision: false, context: { layer: 'token', code } });
  });

  it('a token verified (and cached) a moment ago is refused the moment the agent is revoked', async () => {
    await node.api('POST', '/v1/agents', agentBody({ id: 'bot-cached', credentials: pins, ceiling: invoicesCeiling, groups: ['finance-agents'] }));
    await node.api('POST', '/v1/agents/bot-cached/authorize', { grants: [] });
    await new Promise((r) => setTimeout(r, 1100));
    const token = await mint({ sub: 'bot-cached' });
    expect((await ask('bot-cached', token, 'read', 'd1')).decision).toBe(true);
    expect((await ask('bot-cached', token, 'read', 'd1')).decision).toBe(true); // from the cache
    await node.api('POST', '/v1/agents/bot-cached/revoke', { mode: 'immediate', reason: 'compromised' });
    expect(await ask('bot-cached', token, 'read', 'd1')).toMatchObject({ decision: false, context: { layer: 'token' } });
  });

  it('rotating credentials kills tokens issued before, even with the same key and in the same second', async () => {
    await node.api('POST', '/v1/agents', agentBody({ id: 'bot-rotating', credentials: pins, ceiling: invoicesCeiling, groups: ['finance-agents'] }));
    await node.api('POST', '/v1/agents/bot-rotating/authorize', { grants: [] });
    await new Promise((r) => setTimeout(r, 1100)); // iat has whole seconds
    // Issued at the very start of a second, used, and the rotation follows within that second:
    // the token's iat cannot tell it from a later one, so the whole second is refused.
    await new Promise((r) => setTimeout(r, 1000 - (Date.now() % 1000)));
    const old = await mint({ sub: 'bot-rotating' });
    expect((await ask('bot-rotating', old, 'read', 'd1')).decision).toBe(true);
    const rotated = await node.api('POST', '/v1/agents/bot-rotating/rotate', { credentials: pins });
    expect(rotated.status).toBe(200);
    expect(await ask('bot-rotating', old, 'read', 'd1')).toMatchObject({ decision: false, context: { code: 'TOKEN_ISSUED_BEFORE_ROTATION' } });
    await new Promise((r) => setTimeout(r, 1100));
    expect((await ask('bot-rotating', await mint({ sub: 'bot-rotating' }), 'read', 'd1')).decision).toBe(true);
  });
});

describe('revocation modes (SPEC §6)', () => {
  /** A newly authorized agent and a token issued after the authorize. */
  const fresh = async (id: string) => {
    expect((await node.api('POST', '/v1/agents', agentBody({ id, credentials: pins, ceiling: invoicesCeiling, groups: ['finance-agents'] }))).status).toBe(201);
    expect((await node.api('POST', `/v1/agents/${id}/authorize`, { grants: [] })).status).toBe(200);
    await new Promise((r) => setTimeout(r, 1100)); // iat has whole seconds
    return mint({ sub: id });
  };

  it('quarantine: the caller is denied, and the decision log records what would have been decided', async () => {
    const token = await fresh('bot-quarantined');
    expect((await ask('bot-quarantined', token, 'read', 'd1')).decision).toBe(true);
    const revoked = await node.api('POST', '/v1/agents/bot-quarantined/revoke', { mode: 'quarantine', reason: 'odd traffic' });
    expect(revoked.body).toMatchObject({ status: 'quarantined', nodesConfirmed: 1, nodesExpected: 1 });

    const wouldAllow = await ask('bot-quarantined', token, 'read', 'd1');
    const wouldDeny = await ask('bot-quarantined', token, 'write', 'd1');
    for (const d of [wouldAllow, wouldDeny]) {
      expect(d).toMatchObject({ decision: false, context: { layer: 'token', code: 'AGENT_QUARANTINED', reasons: [] } });
      expect(JSON.stringify(d)).not.toContain('shadow'); // the agent learns nothing from probing
    }
    const shadows = (await sql<{ id: string; shadow: unknown }>`select id, shadow from decisions where id in (${wouldAllow.context.id}, ${wouldDeny.context.id})`.execute(node.connection.db)).rows;
    const shadowOf = (id: string) => shadows.find((r) => r.id === id)!.shadow;
    expect(shadowOf(wouldAllow.context.id)).toMatchObject({ decision: true, layer: 'all', reasons: expect.arrayContaining(['ceiling:bot-quarantined', 'agents-read-invoices']) });
    expect(shadowOf(wouldDeny.context.id)).toMatchObject({ decision: false, layer: 'details', code: 'DETAILS_NOT_COVERING' });
    // The records with a shadow are in the hash chain like any other.
    expect(verifyDecisionChain(await readDecisions(node.connection.db, 0, 100_000))).toEqual({ ok: true });
  });

  it('graceful: tokens from before the revocation finish within the grace period, no new one starts, and then nothing', async () => {
    const before = await fresh('bot-graceful');
    const revokedAt = Date.now();
    const revoked = await node.api('POST', '/v1/agents/bot-graceful/revoke', { mode: 'graceful', reason: 'winding down', gracePeriodSeconds: 3 });
    expect(revoked.body).toMatchObject({ status: 'revoked', revocation: { mode: 'graceful', gracePeriodSeconds: 3 } });
    expect(await ask('bot-graceful', before, 'read', 'd1')).toMatchObject({ decision: true, context: { layer: 'all', code: 'REVOKED_GRACE_PERIOD' } });
    // Layers still apply during the grace period: it finishes work, it gains nothing.
    expect(await ask('bot-graceful', before, 'write', 'd1')).toMatchObject({ decision: false });
    await new Promise((r) => setTimeout(r, 1100));
    const after = await mint({ sub: 'bot-graceful' });
    expect(await ask('bot-graceful', after, 'read', 'd1')).toMatchObject({ decision: false, context: { layer: 'token', code: 'AGENT_NOT_ACTIVE' } });
    await new Promise((r) => setTimeout(r, Math.max(0, revokedAt + 3100 - Date.now())));
    expect(await ask('bot-graceful', before, 'read', 'd1')).toMatchObject({ decision: false, context: { layer: 'token', code: 'AGENT_NOT_ACTIVE' } });
  });

  it('graceful without a period records the default of 60 s', async () => {
    const token = await fresh('bot-default-grace');
    const revoked = await node.api('POST', '/v1/agents/bot-default-grace/revoke', { mode: 'graceful', reason: 'default' });
    expect(revoked.body.revocation).toMatchObject({ mode: 'graceful', gracePeriodSeconds: 60 });
    expect(await ask('bot-default-grace', token, 'read', 'd1')).toMatchObject({ decision: true, context: { code: 'REVOKED_GRACE_PERIOD' } });
  });
});

describe('decision log', () => {
  const rows = async () => (await sql<{ id: string; request: any; decision: boolean; layer: string; code: string | null; reasons: string[]; policy_version: number }>`select * from decisions order by seq`.execute(node.connection.db)).rows;

  it('records every decision with claims and jti, never the raw token', async () => {
    const token = await mint({ sub: 'bot' });
    const allowed = await ask('bot', token, 'read', 'd1');
    const denied = await ask('bot', await mint({ sub: 'bot', iss: 'https://evil.example' }), 'read', 'd1');
    const all = await rows();
    const a = all.find((r) => r.id === allowed.context.id)!;
    const d = all.find((r) => r.id === denied.context.id)!;
    expect(a).toMatchObject({ decision: true, layer: 'all', policy_version: 2 });
    expect(a.request.subject.properties.token).toMatchObject({ sha256: expect.stringMatching(/^[0-9a-f]{64}$/), claims: { sub: 'bot', iss: ISSUER }, jti: expect.any(String) });
    expect(d).toMatchObject({ decision: false, layer: 'token', code: 'TOKEN_WRONG_ISSUER' });
    expect(d.request.subject.properties.token.claims).toBeUndefined(); // unverified claims are not trusted, not kept
    const everything = JSON.stringify(all);
    expect(everything).not.toContain(token);
    expect(everything).not.toContain(token.split('.')[2]); // not even the signature
  });

  it('gives no answer when the decision cannot be recorded', async () => {
    const token = await mint({ sub: 'bot' });
    await sql`alter table decisions rename to decisions_away`.execute(node.connection.db);
    try {
      const res = await node.api('POST', '/access/v1/evaluation', {
        subject: { type: 'agent', id: 'bot', properties: { token } }, action: { name: 'read' }, resource: { type: 'Document', id: 'd1' }, context: { entities },
      }, {}, PEP_TOKEN);
      expect(res.status).toBe(503);
      expect(res.body.code).toBe('NOT_READY');
      expect(res.body.decision).toBeUndefined();
      expect(JSON.stringify(res.body)).not.toMatch(/relation|decisions_away|sql/i); // no internals
    } finally {
      await sql`alter table decisions_away rename to decisions`.execute(node.connection.db);
    }
    expect((await ask('bot', token, 'read', 'd1')).decision).toBe(true);
  });
});

describe('property: random requests', () => {
  // An independent oracle for the layers: plain cedar-wasm calls on the policy text split by
  // hand (ordinary, ceiling, templates), not the service's preparsed sets and unions.
  const parts = cedar.policySetTextToParts(policies);
  if (parts.type !== 'success') throw new Error('test policies do not parse');
  const annotated = (text: string, key: string) => new RegExp(`@${key}\\("([^"]+)"\\)`).exec(text)?.[1];
  const ordinary: Record<string, string> = {};
  const ceilingStatic: Record<string, string> = {};
  for (const text of parts.policies) (annotated(text, 'layer') === 'ceiling' ? ceilingStatic : ordinary)[annotated(text, 'id')!] = text;
  const templates = Object.fromEntries(parts.policy_templates.map((t) => [annotated(t, 'id')!, t]));

  const allows = (principal: { type: string; id: string }, action: string, resource: { type: string; id: string }, entityList: unknown[], context: Record<string, unknown>, set: cedar.PolicySet) => {
    const r = cedar.isAuthorized({ principal, action: { type: 'Action', id: action }, resource, context: context as cedar.Context, entities: entityList as cedar.Entities, schema, validateRequest: false, policies: set });
    return r.type === 'success' && r.response.decision === 'allow';
  };

  // Weighted towards well-formed, relevant requests, so that allows (the interesting case
  // for the oracle) are common; malformed and unknown values still appear.
  const uidArb = fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom(folder('invoices'), folder('reports'), folder('secret'), folder('locked'), { type: 'Document', id: 'd1' }, { type: 'Document', id: 'r1' }) },
    { weight: 1, arbitrary: fc.record({ type: fc.constantFrom('Document', 'Folder', 'Nope', ''), id: fc.string({ maxLength: 8 }) }) },
  );
  const detailArb = fc.oneof(
    { weight: 5, arbitrary: fc.record({ type: fc.constant('leash:cedar'), actions: fc.subarray(['read', 'write', 'delete'], { minLength: 1 }), resourceIn: uidArb }) },
    { weight: 3, arbitrary: fc.record({ type: fc.constant('leash:cedar'), actions: fc.subarray(['read', 'write'], { minLength: 1 }), resource: uidArb }) },
    { weight: 1, arbitrary: fc.jsonValue() },
  );
  const requestArb = fc.record({
    agent: fc.constantFrom('bot', 'bot', 'bot-writer', 'bot-writer', 'bot-eve', 'bot-no-ceiling', 'bot-suspended'),
    action: fc.constantFrom('read', 'read', 'write', 'delete'),
    doc: fc.oneof({ weight: 4, arbitrary: fc.constantFrom('d1', 's1', 'l1', 'r1') }, { weight: 1, arbitrary: fc.string({ maxLength: 12 }) }),
    details: fc.option(fc.array(detailArb, { minLength: 1, maxLength: 4 }), { nil: undefined, freq: 10 }),
    context: fc.oneof(fc.constant({}), fc.record({ limit: fc.constantFrom({ __extn: { fn: 'decimal', arg: '1.5' } }, { __extn: { fn: 'decimal', arg: 'x' } }) }), fc.dictionary(fc.string({ maxLength: 6 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 3 })),
  });

  it('never a 500, and never an allow that any single layer denies', async () => {
    await fc.assert(
      fc.asyncProperty(requestArb, async ({ agent, action, doc, details, context }) => {
        const token = await mint({ sub: agent, authorization_details: details }, { omit: details === undefined ? ['authorization_details'] : [] });
        const res = await node.api('POST', '/access/v1/evaluation', {
          subject: { type: 'agent', id: agent, properties: { token } }, action: { name: action }, resource: { type: 'Document', id: doc }, context: { entities, ...context },
        }, {}, PEP_TOKEN);
        expect([200, 400], JSON.stringify(res.body)).toContain(res.status);
        if (res.status === 400) {
          expect(res.body.code).toBe('VALIDATION_FAILED');
          return;
        }
        if (!res.body.decision) return;

        const record = node.view.agents.get(agent)!.record;
        const A = { type: 'Agent', id: agent };
        const H = { type: 'Human', id: record.owner! };
        const resource = { type: 'Document', id: doc };
        const entityList = [...entitiesFor(node.view, [{ uid: A }, { uid: H }], entities).values()];
        expect(record.status).toBe('active');
        expect(allows(H, action, resource, entityList, context, { staticPolicies: ordinary })).toBe(true);
        const grants = record.grants.map((g, i) => ({ templateId: g.template, newId: `g${i}`, values: g.values as Record<string, cedar.EntityUid> }));
        expect(allows(A, action, resource, entityList, context, { staticPolicies: ordinary, templates, templateLinks: grants })).toBe(true);
        const ceilingLink = [{ templateId: record.ceiling!.template, newId: 'c', values: record.ceiling!.values as Record<string, cedar.EntityUid> }];
        const ceiling = { staticPolicies: ceilingStatic, templates, templateLinks: ceilingLink };
        expect(allows(A, action, resource, entityList, context, ceiling)).toBe(true);
        for (const d of details as { actions: string[]; resource?: { type: string; id: string }; resourceIn?: { type: string; id: string } }[]) {
          for (const a of d.actions) expect(allows(A, a, (d.resource ?? d.resourceIn)!, entityList, context, ceiling)).toBe(true);
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('keys from a JWKS URL', () => {
  it('fetches and caches the agent\'s keys, follows a key rollover, and fails closed when unreachable', async () => {
    const next = await generateKeyPair('ES256', { extractable: true });
    const k2 = { ...(await exportJWK(next.publicKey)), alg: 'ES256', kid: 'k2' };
    let served: unknown[] = [jwk];
    let fetches = 0;
    const server = createServer((req, res) => {
      fetches++;
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ keys: served }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json`;
    try {
      const remote = { ...pins, jwks: undefined, jwksUri: url };
      expect((await node.api('POST', '/v1/agents', agentBody({ id: 'bot-remote', credentials: remote, ceiling: invoicesCeiling, groups: ['finance-agents'] }))).status).toBe(201);
      await node.api('POST', '/v1/agents/bot-remote/authorize', { grants: [] });
      await new Promise((r) => setTimeout(r, 1100)); // tokens must be issued after the authorize
      expect((await ask('bot-remote', await mint({ sub: 'bot-remote' }), 'read', 'd1')).decision).toBe(true);
      expect((await ask('bot-remote', await mint({ sub: 'bot-remote' }), 'read', 'd1')).decision).toBe(true);
      expect(fetches).toBe(1); // cached

      served = [k2]; // the agent rolls its key over
      await new Promise((r) => setTimeout(r, 5200)); // past the refetch cooldown
      expect((await ask('bot-remote', await mint({ sub: 'bot-remote' }, { key: next.privateKey, kid: 'k2' }), 'read', 'd1')).decision).toBe(true);
      expect(await ask('bot-remote', await mint({ sub: 'bot-remote' }), 'read', 'd1')).toMatchObject({ decision: false, context: { code: 'TOKEN_UNKNOWN_KEY' } });
    } finally {
      server.close();
    }

    const closed = { ...pins, jwks: undefined, jwksUri: `http://127.0.0.1:${await freePort()}/jwks.json` };
    await node.api('POST', '/v1/agents', agentBody({ id: 'bot-offline-keys', credentials: closed, ceiling: invoicesCeiling, groups: ['finance-agents'] }));
    await node.api('POST', '/v1/agents/bot-offline-keys/authorize', { grants: [] });
    await new Promise((r) => setTimeout(r, 1100));
    expect(await ask('bot-offline-keys', await mint({ sub: 'bot-offline-keys' }), 'read', 'd1')).toMatchObject({ decision: false, context: { layer: 'token', code: 'TOKEN_KEYS_UNAVAILABLE' } });
  }, 30_000);
});
