import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { importJWK, jwtVerify } from 'jose';
import { afterAll, describe, expect, it } from 'vitest';
import { freshPostgres } from './support/backends.ts';
import { agentBody } from './support/node.ts';
import { freePort } from './support/servers.ts';

// The real executable, as a user runs it: `leash serve` on the embedded default, driven by
// the `leash` CLI commands.

const LEASH = join(import.meta.dirname, '..', 'src', 'cli', 'leash.js');
const run = promisify(execFile);
const children: ChildProcess[] = [];

function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env = { ...process.env, ...extra };
  for (const k of ['DATABASE_URL', 'LEASH_ADMIN_TOKEN', 'NATS_URL']) if (!(k in extra)) delete env[k];
  return env;
}

async function serve(env: Record<string, string>): Promise<{ child: ChildProcess; output: () => string }> {
  const child = spawn(process.execPath, [LEASH, 'serve'], { env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let output = '';
  child.stdout!.on('data', (d) => (output += d));
  child.stderr!.on('data', (d) => (output += d));
  const deadline = Date.now() + 30_000;
  while (!output.includes('leash is serving')) {
    if (child.exitCode !== null) throw new Error(`leash serve exited ${child.exitCode}: ${output}`);
    if (Date.now() > deadline) throw new Error(`leash serve did not start: ${output}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return { child, output: () => output };
}

async function stop(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode; // already gone
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.kill('SIGTERM');
  return exited;
}

afterAll(async () => {
  await Promise.all(children.map(stop));
});

describe('leash serve + CLI on the embedded default', () => {
  it('generates the operator token once, then serves and drives the whole lifecycle', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'leash-cli-'));
    const port = String(await freePort());
    const env = { LEASH_DATA_DIR: dataDir, PORT: port };
    const first = await serve(env);
    const token = /Leash operator token[^\n]*\n\n {2}(lsh_[\w-]+)/.exec(first.output())?.[1];
    expect(token).toBeDefined();
    expect(statSync(join(dataDir, 'admin-token')).mode & 0o777).toBe(0o600);
    // The log lines (JSON) never carry the token.
    expect(first.output().split('\n').filter((l) => l.startsWith('{')).join('\n')).not.toContain(token);

    const cli = async (...args: string[]) => {
      const { stdout } = await run(process.execPath, [LEASH, ...args, '--url', `http://127.0.0.1:${port}`, '--data-dir', dataDir], { env: cleanEnv({}) });
      return JSON.parse(stdout);
    };
    expect(await cli('groups', 'create', 'finance')).toMatchObject({ id: 'finance' });
    expect(await cli('groups', 'create', 'finance-agents')).toMatchObject({ id: 'finance-agents' });
    expect(await cli('humans', 'create', 'alice', '--email', 'alice@example.com', '--group', 'finance')).toMatchObject({ groups: ['finance'] });
    const file = join(dataDir, 'agent.json');
    writeFileSync(file, JSON.stringify(agentBody()));
    expect(await cli('agents', 'register', '--file', file)).toMatchObject({ id: 'invoice-bot', status: 'registered' });
    expect(await cli('agents', 'authorize', 'invoice-bot')).toMatchObject({ status: 'active' });
    expect(await cli('agents', 'revoke', 'invoice-bot', '--mode', 'quarantine', '--reason', 'odd traffic')).toMatchObject({ status: 'quarantined' });
    expect((await cli('agents', 'list', '--status', 'quarantined')).agents.map((a: { id: string }) => a.id)).toEqual(['invoice-bot']);
    expect((await cli('agents', 'events', 'invoice-bot')).events).toHaveLength(3);

    // A refused command exits non-zero and prints the problem on stderr.
    const refused = await run(process.execPath, [LEASH, 'agents', 'suspend', 'invoice-bot', '--reason', 'x', '--url', `http://127.0.0.1:${port}`, '--data-dir', dataDir], { env: cleanEnv({}) }).catch((e) => e);
    expect(refused.code).toBe(1);
    expect(JSON.parse(refused.stderr)).toMatchObject({ code: 'INVALID_TRANSITION', currentState: 'quarantined' });

    expect(await stop(first.child)).toBe(0);
    const second = await serve(env);
    expect(second.output()).not.toContain('Leash operator token');
    expect(await cli('agents', 'get', 'invoice-bot')).toMatchObject({ status: 'quarantined', version: 3 });

    // A crash (SIGKILL, no shutdown) loses nothing that was acknowledged.
    expect(await cli('agents', 'retire', 'invoice-bot', '--reason', 'done')).toMatchObject({ status: 'retired', version: 4 });
    second.child.kill('SIGKILL');
    await new Promise((resolve) => second.child.once('exit', resolve));
    await serve(env);
    expect(await cli('agents', 'get', 'invoice-bot')).toMatchObject({ status: 'retired', version: 4 });
  }, 120_000);

  it('keys generate + token mint a token that verifies against the printed public key', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'leash-keys-'));
    const keyFile = join(dir, 'agent.json');
    const { stdout: pub } = await run(process.execPath, [LEASH, 'keys', 'generate', keyFile, '--kid', 'k7'], { env: cleanEnv({}) });
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    const publicJwk = JSON.parse(pub);
    expect(publicJwk).toMatchObject({ kty: 'EC', kid: 'k7', alg: 'ES256' });
    expect(publicJwk.d).toBeUndefined(); // never the private part
    const details = [{ type: 'leash:cedar', actions: ['read'], resourceIn: { type: 'Folder', id: 'f' } }];
    const { stdout: token } = await run(process.execPath, [LEASH, 'token', '--key', keyFile, '--agent', 'bot', '--on-behalf-of', 'alice', '--details', JSON.stringify(details)], { env: cleanEnv({}) });
    const { payload, protectedHeader } = await jwtVerify(token.trim(), await importJWK(publicJwk, 'ES256'), { issuer: 'https://idp.example', audience: 'leash' });
    expect(protectedHeader).toMatchObject({ alg: 'ES256', kid: 'k7', typ: 'at+jwt' });
    expect(payload).toMatchObject({ sub: 'alice', act: { sub: 'bot' }, authorization_details: details });
    expect(payload.exp! - payload.iat!).toBe(120);
  });

  it('refuses to start on a shared database without an operator token', async () => {
    const { url } = await freshPostgres();
    const result = await run(process.execPath, [LEASH, 'serve'], { env: cleanEnv({ DATABASE_URL: url, PORT: String(await freePort()) }) }).catch((e) => e);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('LEASH_ADMIN_TOKEN is required');
  });

  it('refuses to start with a watchdog bound it cannot honour, naming the allowed range', async () => {
    const result = await run(process.execPath, [LEASH, 'serve'], { env: cleanEnv({ LEASH_WATCHDOG_MS: '10', PORT: String(await freePort()) }) }).catch((e) => e);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('LEASH_WATCHDOG_MS must be 0 (off) or a whole number of milliseconds from 100 to 3600000, got "10"');
  });

  it('leash migrate brings a Postgres database up to date, then finds nothing to do', async () => {
    const url = new URL((await freshPostgres()).url);
    url.password = 's3cret-password'; // the test server trusts local connections; the password must not be echoed
    const first = await run(process.execPath, [LEASH, 'migrate'], { env: cleanEnv({ DATABASE_URL: url.toString() }) });
    expect(first.stdout).toContain('applied: 0001_events');
    const second = await run(process.execPath, [LEASH, 'migrate'], { env: cleanEnv({ DATABASE_URL: url.toString() }) });
    expect(second.stdout).toContain('already up to date');
    expect(second.stdout + second.stderr).not.toContain('s3cret-password');
  });
});
