import { execFile } from 'node:child_process';
import { cpSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { SignJWT, generateKeyPair } from 'jose';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { archiveAudit } from '../../src/audit/archive.ts';
import { ArchiveSource } from '../../src/audit/archive-source.ts';
import { replay } from '../../src/audit/replay.ts';
import { replayInParallel } from '../../src/audit/replay-parallel.ts';
import { traceDecision } from '../../src/audit/trace.ts';
import { PostgresSource } from '../../src/audit/source.ts';
import { readPolicyFiles } from '../../src/authz/policy-files.ts';
import { freshPostgres } from '../support/backends.ts';
import { CEDAR_DIR, PEP_TOKEN, agentBody, agentPrivateKey, seedPrincipals, startTestNode, type TestNode } from '../support/node.ts';

// SPEC §8 replay and what-if: a run with registrations, rotations, revocations in every mode
// and two policy versions; replay must reproduce every recorded decision, and a what-if must
// report exactly the decisions a known policy change flips.

const folder = (id: string) => ({ type: 'Folder', id });
const entities = [
  { uid: folder('invoices'), attrs: {}, parents: [] },
  { uid: folder('archive'), attrs: {}, parents: [folder('invoices')] },
  { uid: { type: 'Document', id: 'inv-1' }, attrs: {}, parents: [folder('invoices')] },
  { uid: { type: 'Document', id: 'old-1' }, attrs: {}, parents: [folder('archive')] },
];
const details = (actions: string[], resourceIn = folder('invoices')) => [{ type: 'leash:cedar', actions, resourceIn }];
const otherKey = (await generateKeyPair('ES256')).privateKey;

async function mint(agent: string, options: { actions?: string[]; key?: Parameters<SignJWT['sign']>[0]; delegated?: { human: string; from: string } } = {}): Promise<string> {
  const iat = Math.floor(Date.now() / 1000);
  const act = options.delegated ? { act: { sub: agent, act: { sub: options.delegated.from } } } : {};
  return new SignJWT({ authorization_details: details(options.actions ?? ['read', 'write']), ...act })
    .setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setIssuer('https://idp.example').setAudience('leash').setSubject(options.delegated?.human ?? agent)
    .setIssuedAt(iat).setExpirationTime(iat + 240).sign(options.key ?? agentPrivateKey);
}

/** Which way the what-if candidate below should move each request; '' for "stays". */
type Expect = '' | 'allow→deny' | 'deny→allow';

describe('audit replay and what-if', () => {
  let node: TestNode;
  let url: string;
  /** Decision id → what the candidate policy set should do to it. */
  const made: { id: string; decision: boolean; code: string | null; flips: Expect }[] = [];
  let delegatedId = '';

  async function ask(subject: { type: string; id: string; token?: string }, action: string, resource: string, flips: Expect = ''): Promise<boolean> {
    const { token, ...s } = subject;
    const res = await node.api('POST', '/access/v1/evaluation', {
      subject: { ...s, ...(token === undefined ? {} : { properties: { token } }) }, action: { name: action }, resource: { type: 'Document', id: resource }, context: { entities },
    }, {}, PEP_TOKEN);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    made.push({ id: res.body.context.id, decision: res.body.decision, code: res.body.context.code ?? null, flips });
    return res.body.decision;
  }
  const agent = (id: string, token: string) => ({ type: 'agent', id, token });
  const op = async (method: string, path: string, body: unknown) => {
    const res = await node.api(method, path, body);
    expect(res.status, JSON.stringify(res.body)).toBe(method === 'POST' && path === '/v1/agents' ? 201 : 200);
  };

  beforeAll(async () => {
    const backend = await freshPostgres();
    url = backend.url;
    node = await startTestNode(backend);
    await seedPrincipals(node);
    const grants = { grants: [{ template: 'grant-read-folder', values: { '?resource': folder('invoices') } }] };
    for (const id of ['bot-a', 'bot-b', 'bot-g', 'bot-q']) {
      await op('POST', '/v1/agents', agentBody({ id, ceiling: { template: 'ceiling-folder', values: { '?resource': folder('invoices') } } }));
      await op('POST', `/v1/agents/${id}/authorize`, grants);
    }

    // Policy version 1 (the example policies).
    const early = await mint('bot-b');
    expect(await ask(agent('bot-a', await mint('bot-a')), 'read', 'inv-1')).toBe(true);
    expect(await ask(agent('bot-a', await mint('bot-a')), 'read', 'old-1', 'allow→deny')).toBe(true);
    expect(await ask(agent('bot-a', await mint('bot-a')), 'write', 'inv-1', 'deny→allow')).toBe(false);
    expect(await ask(agent('bot-a', await mint('bot-a')), 'write', 'old-1')).toBe(false); // archive-is-read-only holds either way
    expect(await ask(agent('bot-a', await mint('bot-a', { actions: ['read'] })), 'write', 'inv-1')).toBe(false); // details do not cover it
    expect(await ask(agent('bot-a', await mint('bot-a', { key: otherKey })), 'read', 'inv-1')).toBe(false); // bad signature
    expect(await ask(agent('bot-a', ''), 'read', 'inv-1')).toBe(false);
    expect(await ask({ type: 'human', id: 'alice' }, 'read', 'old-1', 'allow→deny')).toBe(true);
    expect(await ask({ type: 'human', id: 'alice' }, 'write', 'inv-1', 'deny→allow')).toBe(false);
    expect(await ask(agent('bot-b', early), 'read', 'inv-1')).toBe(true);
    // bot-g passed work for alice on to bot-b (RFC 8693 nested act).
    expect(await ask(agent('bot-b', await mint('bot-b', { delegated: { human: 'alice', from: 'bot-g' } })), 'read', 'inv-1')).toBe(true);
    delegatedId = made.at(-1)!.id;

    // Rotation (in a later second than the early token's iat): the early token is refused from here on, a new one works.
    await new Promise((r) => setTimeout(r, 1000 - (Date.now() % 1000) + 10));
    await op('POST', '/v1/agents/bot-b/rotate', { credentials: agentBody().credentials });
    expect(await ask(agent('bot-b', early), 'read', 'inv-1')).toBe(false);
    await new Promise((r) => setTimeout(r, 1000 - (Date.now() % 1000) + 10)); // the rotation's own second is refused too
    expect(await ask(agent('bot-b', await mint('bot-b')), 'read', 'old-1', 'allow→deny')).toBe(true);

    // Revocations in the three modes.
    const gracefulToken = await mint('bot-g');
    const quarantinedToken = await mint('bot-q');
    const revokedToken = await mint('bot-a');
    await op('POST', '/v1/agents/bot-a/revoke', { mode: 'immediate', reason: 'test' });
    await op('POST', '/v1/agents/bot-g/revoke', { mode: 'graceful', reason: 'test', gracePeriodSeconds: 600 });
    await op('POST', '/v1/agents/bot-q/revoke', { mode: 'quarantine', reason: 'test' });
    expect(await ask(agent('bot-a', revokedToken), 'read', 'inv-1')).toBe(false);
    expect(await ask(agent('bot-g', gracefulToken), 'read', 'old-1', 'allow→deny')).toBe(true);
    expect(await ask(agent('bot-q', quarantinedToken), 'read', 'inv-1')).toBe(false);

    // Policy version 2: finance writes invoices, for people only (agents still lack a write permit).
    const v1 = readPolicyFiles(CEDAR_DIR);
    await op('PUT', '/v1/policy-set', { ...v1, policies: `${v1.policies}\n@id("finance-writes-invoices")\npermit (principal in Group::"finance", action == Action::"write", resource in Folder::"invoices");\n` });
    expect(await ask({ type: 'human', id: 'alice' }, 'write', 'inv-1')).toBe(true);
    expect(await ask({ type: 'human', id: 'alice' }, 'write', 'old-1')).toBe(false);
    expect(await ask(agent('bot-b', await mint('bot-b')), 'read', 'inv-1')).toBe(true);
    expect(await ask(agent('bot-b', await mint('bot-b')), 'write', 'inv-1', 'deny→allow')).toBe(false);

    // The same request before and after bot-r gets its grant: identical Cedar inputs but for
    // the agent's version, so replay must not answer the second from its memory of the first.
    await op('POST', '/v1/agents', agentBody({ id: 'bot-r', ceiling: { template: 'ceiling-folder', values: { '?resource': folder('invoices') } } }));
    await op('POST', '/v1/agents/bot-r/authorize', { grants: [] });
    expect(await ask(agent('bot-r', await mint('bot-r')), 'read', 'inv-1')).toBe(false);
    await op('POST', '/v1/agents/bot-r/suspend', { reason: 'regrant' });
    await op('POST', '/v1/agents/bot-r/authorize', grants);
    expect(await ask(agent('bot-r', await mint('bot-r')), 'read', 'inv-1')).toBe(true);
  });
  afterAll(async () => node?.close());

  it('reproduces every recorded decision: both policy versions, rotation, each revocation mode, non-agent subjects', async () => {
    const codes = made.map((m) => m.code);
    for (const code of ['TOKEN_BAD_SIGNATURE', 'TOKEN_MISSING', 'DETAILS_NOT_COVERING', 'TOKEN_ISSUED_BEFORE_ROTATION', 'AGENT_NOT_ACTIVE', 'REVOKED_GRACE_PERIOD', 'AGENT_QUARANTINED']) {
      expect(codes).toContain(code);
    }
    const progress: string[] = [];
    const report = await replay(new PostgresSource(node.connection.db), { progress: (stage) => progress.push(stage) });
    expect(report).toMatchObject({ mode: 'replay', decisions: made.length, differing: 0, records: [], range: { from: 1, to: made.length }, next: null });
    // The bad signature's and the empty token's refusals (no claims to check again) are taken from the record.
    expect(report.tokenFromRecord).toBe(2);
    expect(progress).toContain('events');
    expect(progress).toContain('decisions');
  });

  it('reports, record by record, a decision that does not come out as recorded', async () => {
    // A rewritten record (as a superuser could): replay shows the difference even where the hash chain was fixed up too.
    const target = made.find((m) => m.decision && m.code === null)!;
    const { reasons } = (await sql<{ reasons: unknown }>`select reasons from decisions where id = ${target.id}`.execute(node.connection.db)).rows[0]!;
    await sql.raw('alter table decisions disable trigger user').execute(node.connection.db);
    await sql`update decisions set decision = false, reasons = '[]'::jsonb where id = ${target.id}`.execute(node.connection.db);
    await sql.raw('alter table decisions enable trigger user').execute(node.connection.db);
    try {
      const report = await replay(new PostgresSource(node.connection.db));
      expect(report.differing).toBe(1);
      expect(report.denyToAllow).toBe(1);
      expect(report.records).toEqual([expect.objectContaining({ id: target.id, recorded: expect.objectContaining({ decision: false }), replayed: expect.objectContaining({ decision: true }) })]);
      expect(report.records[0]!.change).toMatch(/^decision deny → allow; reasons \[\] → \[/);
    } finally {
      await sql.raw('alter table decisions disable trigger user').execute(node.connection.db);
      await sql`update decisions set decision = true, reasons = ${JSON.stringify(reasons)}::jsonb where id = ${target.id}`.execute(node.connection.db);
      await sql.raw('alter table decisions enable trigger user').execute(node.connection.db);
    }
  });

  /** The example policies, minus archive reads, plus writes to invoices for finance people and agents. */
  function candidate(): string {
    const dir = mkdtempSync(join(tmpdir(), 'leash-candidate-'));
    cpSync(CEDAR_DIR, dir, { recursive: true });
    writeFileSync(join(dir, 'policies', 'zz-change.cedar'), `
@id("archive-is-sealed")
forbid (principal, action == Action::"read", resource in Folder::"archive");

@id("finance-writes-invoices")
permit (principal in Group::"finance", action == Action::"write", resource in Folder::"invoices");

@id("agents-write-invoices")
permit (principal in Group::"finance-agents", action == Action::"write", resource in Folder::"invoices");
`);
    return dir;
  }

  it('what-if: exactly the decisions the candidate set flips, each way, with the policies involved', async () => {
    const report = await replay(new PostgresSource(node.connection.db), { candidate: readPolicyFiles(candidate()) });
    const expected = (way: Expect) => made.filter((m) => m.flips === way).map((m) => m.id).sort();
    const reported = (way: Expect) => report.records.filter((r) => r.change === way).map((r) => r.id).sort();
    expect(reported('allow→deny')).toEqual(expected('allow→deny'));
    expect(reported('deny→allow')).toEqual(expected('deny→allow'));
    expect(report).toMatchObject({ mode: 'what-if', decisions: made.length, differing: report.records.length, allowToDeny: expected('allow→deny').length, denyToAllow: expected('deny→allow').length });
    const sealed = report.records.find((r) => r.change === 'allow→deny')!;
    expect(sealed.replayed!.reasons).toContain('archive-is-sealed');
    expect(sealed.recorded.reasons.length).toBeGreaterThan(0);
  });

  it('in worker threads: the ranges split, the reports add up to the single-threaded one', async () => {
    const options = { candidate: readPolicyFiles(candidate()) };
    const single = await replay(new PostgresSource(node.connection.db), options);
    const parallel = await replayInParallel({ backend: { kind: 'postgres', url }, archive: null }, options, 3);
    // (What each worker's memory answered depends on the split; how many calls were needed does not.)
    expect({ ...parallel, memory: null }).toEqual({ ...single, memory: null });
    expect(parallel.memory.asked).toBe(single.memory.asked);
    const replayed = await replayInParallel({ backend: { kind: 'postgres', url }, archive: null }, { from: 2 }, 2);
    expect(replayed).toMatchObject({ decisions: made.length - 1, differing: 0, range: { from: 2, to: made.length } });
    await expect(replayInParallel({ backend: { kind: 'postgres', url }, archive: null }, { candidate: { schema: 'nonsense', policies: '' } }, 2)).rejects.toMatchObject({ code: 'POLICY_INVALID' });
  });

  it('what-if refuses an invalid candidate set with Cedar\'s diagnostics', async () => {
    await expect(replay(new PostgresSource(node.connection.db), { candidate: { schema: readPolicyFiles(CEDAR_DIR).schema, policies: 'permit (principal, action == Action::"fly", resource);' } }))
      .rejects.toMatchObject({ code: 'POLICY_INVALID' });
  });

  it('a range: --from/--to and times select the decisions; maxDecisions says where to continue', async () => {
    const part = await replay(new PostgresSource(node.connection.db), { from: 3, to: 7 });
    expect(part).toMatchObject({ decisions: 5, differing: 0, range: { from: 3, to: 7 } });
    const capped = await replay(new PostgresSource(node.connection.db), { from: 2, maxDecisions: 4 });
    expect(capped).toMatchObject({ decisions: 4, range: { from: 2, to: 5 }, next: 6 });
    const none = await replay(new PostgresSource(node.connection.db), { since: new Date(Date.now() + 60_000) });
    expect(none).toMatchObject({ decisions: 0, range: { from: null, to: null } });
  });

  it('over HTTP: what-if and replay for a console, a page at a time; bad input refused', async () => {
    const candidateSet = readPolicyFiles(candidate());
    const whatIf = await node.api('POST', '/v1/audit/what-if', { policies: candidateSet, maxDecisions: 5 });
    expect(whatIf.status, JSON.stringify(whatIf.body)).toBe(200);
    expect(whatIf.body).toMatchObject({ mode: 'what-if', decisions: 5, range: { from: 1, to: 5 }, next: 6 });
    const firstFive = made.slice(0, 5).filter((m) => m.flips).map((m) => m.id).sort();
    expect(whatIf.body.records.map((r: { id: string }) => r.id).sort()).toEqual(firstFive);
    const rest = await node.api('POST', '/v1/audit/what-if', { policies: candidateSet, from: 6 });
    expect(rest.body.next).toBeNull();
    expect(whatIf.body.differing + rest.body.differing).toBe(made.filter((m) => m.flips).length);

    const replayed = await node.api('POST', '/v1/audit/replay', {});
    expect(replayed.body).toMatchObject({ mode: 'replay', decisions: made.length, differing: 0 });

    const invalid = await node.api('POST', '/v1/audit/what-if', { policies: { schema: candidateSet.schema, policies: 'permit (principal, action == Action::"fly", resource);' } });
    expect(invalid.status).toBe(422);
    expect(invalid.body.code).toBe('POLICY_INVALID');
    for (const body of [{ from: 0 }, { from: 5, to: 2 }, { since: 'yesterday' }, { maxDecisions: 1_000_000 }, { policies: candidateSet }, { extra: 1 }]) {
      const res = await node.api('POST', '/v1/audit/replay', body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(res.body.code).toBe('VALIDATION_FAILED');
    }
    expect((await node.api('POST', '/v1/audit/what-if', {})).status).toBe(400);
    expect((await node.api('POST', '/v1/audit/replay', {}, {}, PEP_TOKEN)).status).toBe(401); // a PEP may decide, not read the log
  });

  it('trace: who acted for whom, the events behind each agent\'s state then, and the policy version', async () => {
    const res = await node.api('GET', `/v1/audit/decisions/${delegatedId}/trace`);
    expect(res.status).toBe(200);
    expect(res.body.chain).toEqual([
      { type: 'Human', id: 'alice', role: 'initiator', from: 'token' },
      { type: 'Agent', id: 'bot-g', role: 'delegate', from: 'token' },
      { type: 'Agent', id: 'bot-b', role: 'actor', from: 'token' },
    ]);
    expect(res.body.policy).toMatchObject({ version: 1 });
    // As things stood then: both active, no rotation or revocation yet (those came later).
    const byId = Object.fromEntries(res.body.agents.map((a: { id: string }) => [a.id, a]));
    expect(byId['bot-b']).toMatchObject({ status: 'active', owner: 'alice' });
    expect(byId['bot-b'].events.map((e: { type: string }) => e.type)).toEqual(['AgentRegistered', 'AgentAuthorized']);
    expect(byId['bot-g'].events.map((e: { type: string }) => e.type)).toEqual(['AgentRegistered', 'AgentAuthorized']);
    expect(JSON.stringify(res.body)).not.toContain('"x"'); // no key material from the pins

    // A later decision for bot-g shows its graceful revocation, with mode and reason.
    const graceful = made.find((m) => m.code === 'REVOKED_GRACE_PERIOD')!;
    const later = await node.api('GET', `/v1/audit/decisions/${graceful.id}/trace`);
    expect(later.body.chain).toEqual([
      { type: 'Human', id: 'alice', role: 'initiator', from: 'registry' },
      { type: 'Agent', id: 'bot-g', role: 'actor', from: 'token' },
    ]);
    expect(later.body.agents[0]).toMatchObject({ status: 'revoked' });
    expect(later.body.agents[0].events.at(-1)).toMatchObject({ type: 'AgentRevoked', actor: expect.any(String), detail: { mode: 'graceful', reason: 'test', gracePeriodSeconds: 600 } });

    expect((await node.api('GET', `/v1/audit/decisions/${crypto.randomUUID()}/trace`)).status).toBe(404);
    expect((await node.api('GET', '/v1/audit/decisions/not-a-uuid/trace')).status).toBe(400);
  });

  it('leash audit replay: exit 0 with a summary; --policies lists the flips; bad options refused', async () => {
    const cli = join(import.meta.dirname, '..', '..', 'src', 'cli', 'leash.js');
    const run = (...args: string[]) =>
      promisify(execFile)(process.execPath, [cli, 'audit', 'replay', '--database-url', url, ...args]).then(
        (r) => ({ code: 0, ...r }),
        (e: { code: number; stdout: string; stderr: string }) => e,
      );
    const ok = await run();
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toContain(`replayed ${made.length} decisions (seq 1–${made.length})`);
    expect(ok.stdout).toContain(`all ${made.length} came out the same`);
    expect(ok.stderr).toContain('decisions:'); // plain progress lines off a terminal

    const whatIf = await run('--policies', candidate(), '--json');
    expect(whatIf.code).toBe(0);
    const report = JSON.parse(whatIf.stdout);
    expect(report.allowToDeny + report.denyToAllow).toBe(made.filter((m) => m.flips).length);
    // The same what-if on one thread (--workers 1: no worker threads, each of which loads
    // tsx and the deciding code anew), printed for a person; the JSON run above went through
    // the default, a thread per core, and "in worker threads" shows both give one report.
    const text = await run('--policies', candidate(), '--workers', '1');
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(/would change: \d+ allow→deny, \d+ deny→allow/);
    expect(text.stdout).toMatch(/#2 \S+ agent::"bot-a" read Document::"old-1": allow→deny\n {6}recorded allow \(all: [^)]+\); candidate deny \([a-z]+: archive-is-sealed\)/);

    expect((await run('--from', 'x')).stderr).toContain('--from takes a decision sequence number');
    expect((await run('--since', 'yesterday')).stderr).toContain('--since takes a time');
    const missing = await run('--policies', '/nonexistent');
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('no Cedar schema at /nonexistent');

    const trace = await promisify(execFile)(process.execPath, [cli, 'audit', 'trace', delegatedId, '--database-url', url]);
    expect(trace.stdout).toContain('who for whom: Human::"alice" (initiator) → Agent::"bot-g" (delegate) → Agent::"bot-b" (actor)');
    expect(trace.stdout).toMatch(/agent bot-b: active at that moment \(version 2, owner alice\)\n +\d+ \S+ AgentRegistered/);
  }, 120_000); // eight runs of the real executable, each starting Node and its worker threads

  it('from an archive: replay and trace read the archived decisions (and after them Postgres) the same; verify --archive-only offline', async () => {
    const dir = join(mkdtempSync(join(tmpdir(), 'leash-archive-')), 'a');
    const archived = await archiveAudit(node.connection.db, { dir, before: new Date(), segmentSize: 7 });
    expect(archived.records.decisions).toBe(made.length - 1); // the newest stays in Postgres
    const both = await replay(new ArchiveSource(dir, new PostgresSource(node.connection.db)));
    expect(both).toMatchObject({ decisions: made.length, differing: 0, range: { from: 1, to: made.length } });
    const offline = await replay(new ArchiveSource(dir, null));
    expect(offline).toMatchObject({ decisions: made.length - 1, differing: 0 });
    const whatIf = await replay(new ArchiveSource(dir, new PostgresSource(node.connection.db)), { candidate: readPolicyFiles(candidate()) });
    expect(whatIf.differing).toBe(made.filter((m) => m.flips).length);
    expect((await traceDecision(new ArchiveSource(dir, null), delegatedId))?.chain.map((l) => l.id)).toEqual(['alice', 'bot-g', 'bot-b']);

    const cli = join(import.meta.dirname, '..', '..', 'src', 'cli', 'leash.js');
    const verify = await promisify(execFile)(process.execPath, [cli, 'audit', 'verify', '--archive', dir, '--archive-only']);
    expect(verify.stdout).toContain(`decisions: ${made.length - 1} records in 1 node chain, intact`);
    expect(verify.stdout).toContain('anchors: not checked offline (they are kept in the database)');
    const replayed = await promisify(execFile)(process.execPath, [cli, 'audit', 'replay', '--archive', dir, '--database-url', url]);
    expect(replayed.stdout).toContain(`all ${made.length} came out the same`);
  });
});

