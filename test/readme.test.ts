import { spawn } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort } from './support/servers.ts';

// The README's shell blocks, taken from the README itself and run top to bottom in one bash
// session on a fresh checkout-like directory, against the server its first block starts. A
// block may be marked by an HTML comment on the line before it:
//   <!-- readme-test: server -->       runs in the background; the next block waits for /readyz
//   <!-- readme-test: stop-server -->  the server is stopped (SIGTERM) before this block
//   <!-- readme-test: skip … -->       not run (the comment says why)
// Every curl in them fails the run on a 4xx or 5xx answer, so a block that stops working
// (an id taken twice, a missing file, a refused body) fails this test.

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const README = readFileSync(join(ROOT, 'README.md'), 'utf8');

interface Block {
  line: number;
  mark: 'run' | 'server' | 'stop-server' | 'skip';
  code: string;
}

function shellBlocks(markdown: string): Block[] {
  const lines = markdown.split('\n');
  const blocks: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (lines[i] !== '```sh') continue;
    let before = i - 1;
    while (before >= 0 && lines[before]!.trim() === '') before--;
    const marker = /^<!-- readme-test: (server|stop-server|skip)\b.*-->$/.exec(lines[before] ?? '');
    const end = lines.indexOf('```', i + 1);
    if (end < 0) throw new Error(`README.md:${i + 1}: a shell block is not closed`);
    blocks.push({ line: i + 1, mark: (marker?.[1] as Block['mark'] | undefined) ?? 'run', code: lines.slice(i + 1, end).join('\n') });
    i = end;
  }
  return blocks;
}

/** The blocks of the walk-through: from "## Try it" to the end of the Audit section. */
const walkthrough = (() => {
  const from = README.indexOf('\n## Try it');
  const to = README.indexOf('\n## Tests and benchmarks');
  return shellBlocks(README.slice(0, to)).filter((b) => README.split('\n').slice(0, b.line).join('\n').length > from);
})();

function script(blocks: Block[], port: number): string {
  const out = [
    'set -euo pipefail',
    // A refusal anywhere fails the run; no call may hang it.
    'curl() { command curl --fail-with-body --max-time 30 "$@"; }',
    'leash_wait_ready() { for _ in $(seq 300); do command curl -sf localhost:$PORT/readyz >/dev/null && return 0; sleep 0.1; done; echo "the server did not become ready" >&2; cat server.log >&2; return 1; }',
    'leash_stop() { if [ -n "${LEASH_SERVER:-}" ]; then kill -TERM "$LEASH_SERVER"; wait "$LEASH_SERVER" || true; LEASH_SERVER=; fi; }',
    'trap leash_stop EXIT',
    // `npx leash` is the package's own bin: resolved through npx once here, then run directly
    // (npx's own start-up is over a second of CPU a call, and the walkthrough makes dozens).
    'command npx leash --help > /dev/null',
    'LEASH_BIN="$PWD/src/cli/leash.js"', // package.json's bin
    'npx() { if [ "${1:-}" = leash ]; then shift; node "$LEASH_BIN" "$@"; else command npx "$@"; fi; }',
  ];
  for (const b of blocks) {
    const code = b.code.replaceAll('localhost:8080', `localhost:${port}`);
    out.push(`echo "### README.md:${b.line}" >&2`);
    if (b.mark === 'skip') continue;
    if (b.mark === 'stop-server') out.push('leash_stop');
    if (b.mark === 'server') {
      out.push(`( ${code} ) > server.log 2>&1 &`, 'LEASH_SERVER=$!', 'leash_wait_ready');
    } else {
      out.push(code);
    }
  }
  return `${out.join('\n')}\n`;
}

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('the README', () => {
  it('marks its blocks: one server, stopped before the audit commands; nothing outside the walk-through is run unmarked', () => {
    expect(walkthrough.filter((b) => b.mark === 'server')).toHaveLength(1);
    expect(walkthrough.filter((b) => b.mark === 'stop-server')).toHaveLength(1);
    expect(walkthrough.filter((b) => b.mark === 'run').length).toBeGreaterThanOrEqual(7);
    expect(README).not.toMatch(/SPEC §/);
    // The run below calls the bin directly after one real `npx leash`: it must be the one npx runs.
    expect(JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).bin).toEqual({ leash: './src/cli/leash.js' });
  });

  it('runs as written, top to bottom, on a fresh directory', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'leash-readme-'));
    dirs.push(dir);
    for (const f of ['package.json', 'node_modules', 'src', 'migrations', 'tsconfig.json']) symlinkSync(join(ROOT, f), join(dir, f));
    cpSync(join(ROOT, 'cedar'), join(dir, 'cedar'), { recursive: true }); // a copy: the blocks may change their own
    const port = await freePort();
    writeFileSync(join(dir, 'readme.sh'), script(walkthrough, port));
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(LEASH_|DATABASE_URL|NATS_URL|PORT$|HOST$)/.test(k)));
    const { code, stdout, stderr } = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn('bash', ['readme.sh'], { cwd: dir, env: { ...env, PORT: String(port) }, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      child.on('close', (c) => resolve({ code: c, stdout, stderr }));
    });
    expect(code, `stdout:\n${stdout.slice(-4000)}\nstderr:\n${stderr.slice(-4000)}`).toBe(0);

    // What the comments beside the commands say they show.
    const decisions = stdout.split('\n').filter((l) => l.startsWith('{"decision"')).map((l) => JSON.parse(l) as { decision: boolean; context: { layer: string; code?: string; reasons: string[]; policyVersion: number } });
    expect(decisions.map((d) => [d.decision, d.context.layer, d.context.code ?? null])).toEqual([
      [true, 'all', null],
      [false, 'details', 'DETAILS_NOT_COVERING'],
      [false, 'details', 'DETAILS_BEYOND_CEILING'],
      [true, 'all', null], // with the token Leash issued
      [false, 'details', 'DETAILS_NOT_COVERING'],
      [true, 'all', null], // the sub-agent, with the token its parent handed on
      [false, 'details', 'DETAILS_NOT_COVERING'],
      [false, 'agent', null],
      [false, 'token', 'DELEGATION_CHAIN_BROKEN'], // its parent suspended
      [true, 'all', null], // acting for carol, within her grant
      [false, 'details', 'DETAILS_NOT_COVERING'],
      [true, 'all', null], // a payment under the limit
      [false, 'agent', 'APPROVAL_REQUIRED'], // over it
      [true, 'all', 'APPROVED'], // once alice approved it
      [false, 'agent', 'APPROVAL_REQUIRED'], // and only once
      [false, 'token', 'AGENT_NOT_ACTIVE'], // pay-bot, suspended by the monitor after 20 denies
      [false, 'token', 'AGENT_NOT_ACTIVE'], // reader-bot, suspended: inv-9 seen, not used
      [true, 'all', null], // after the suggestion was applied: inv-8, which it used
      [false, 'agent', null], // and inv-9, which it never did
    ]);
    // The suggestion narrowed the folder to the two documents used, and its what-if flipped nothing.
    expect(stdout).toMatch(/grant-read-folder on Folder::"invoices" → Document::"inv-7", Document::"inv-8"/);
    expect(stdout).toMatch(/0 allow→deny/);
    // The monitor's finding, the trust score it took, the suspension; sam's clearing gave the score back.
    expect(stdout).toMatch(/"type": "AnomalyDetected"[\s\S]*"type": "TrustScoreChanged"[\s\S]*"type": "AgentSuspended"/);
    expect(stdout).toMatch(/^\s*"trustScore": 70,$/m);
    // The approval named alice; the second ask after it was spent is a new approval.
    const asked = decisions.filter((d) => d.context.code === 'APPROVAL_REQUIRED').map((d) => (d.context as { approval?: { id: string; approvers: string[] } }).approval!);
    expect(asked[0]!.approvers).toEqual(['human:alice']);
    expect(asked[1]!.id).not.toBe(asked[0]!.id);
    // The token endpoint answered curl too, and the exchange put the parent above the sub-agent.
    expect(stdout).toMatch(/^\{"access_token":"[\w-]+\.[\w-]+\.[\w-]+","token_type":"Bearer","expires_in":\d+,"authorization_details":\[/m);
    expect(stdout).toMatch(/^urn:ietf:params:oauth:token-type:access_token \{"sub":"summary-bot","act":\{"sub":"reader-bot"\}\}$/m);
    expect(stdout).toMatch(/^\{"active":false\}$/m);
    // A person's admin call: alice refused by the admin policies, sam (security) allowed and named.
    expect(stdout).toMatch(/"code":"FORBIDDEN".*"layer":"admin"/);
    expect(stdout).toMatch(/"actor": "human:sam"/);
    expect(stdout).toMatch(/^\{"id":"[0-9a-f-]{36}","human":"carol","agent":"summary-bot",.*"status":"active","consentedBy":"human:carol"/m);
    // No token for more than the ceiling: the CLI says why, and the block goes on.
    expect(stdout).toMatch(/^refused$/m);
    expect(stderr).toMatch(/leash: invalid_authorization_details: /);
    expect(decisions[0]!.context.reasons).toEqual(expect.arrayContaining(['ceiling:reader-bot', 'grant:reader-bot:0', 'finance-reads-invoices']));
    expect(decisions[7]!.context).toMatchObject({ reasons: ['freeze-invoices'], policyVersion: 2 });
    expect(stdout).toMatch(/decisions: \d+ records in 1 node chain, intact/);
    expect(stdout).toMatch(/anchors: [1-9]\d* records, chain intact/); // the server anchored its chain's head, at least as it stopped
    expect(stdout).toMatch(/all 39 came out the same/);
    expect(stdout).toMatch(/1 would change: 1 allow→deny, 0 deny→allow/);
    expect(stdout).toMatch(/allow \(all\) by ceiling:reader-bot/);
    // The security event stream: the revoke polled as a CAEP session-revoked SET, then acknowledged; a Prometheus scrape.
    expect(stdout).toMatch(/^temp-bot https:\/\/schemas\.openid\.net\/secevent\/caep\/event-type\/session-revoked end of the demo$/m);
    expect(stdout).toMatch(/^\{"sets":\{\},"moreAvailable":false\}$/m);
    expect(stdout).toMatch(/^leash_decisions_total\{decision="allow",layer="all"\} \d+$/m);
  }, 300_000);
});
