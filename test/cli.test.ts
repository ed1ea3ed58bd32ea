import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Command } from 'commander';
import { importJWK, jwtVerify } from 'jose';
import { afterAll, describe, expect, it } from 'vitest';
import { freshPostgres } from './support/backends.ts';
import { agentBody } from './support/node.ts';
import { descendants } from './support/processes.ts';
import { freePort } from './support/servers.ts';

// The real executable, as a user runs it: `leash serve` on the embedded default, driven by
// the `leash` CLI commands.

const ROOT = join(import.meta.dirname, '..');
const LEASH = join(ROOT, 'src', 'cli', 'leash.js');
const run = promisify(execFile);
const children: ChildProcess[] = [];

function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env = { ...process.env, ...extra };
  for (const k of ['DATABASE_URL', 'LEASH_ADMIN_TOKEN', 'NATS_URL']) if (!(k in extra)) delete env[k];
  return env;
}

interface Served {
  child: ChildProcess;
  output: () => string;
  stdout: () => string;
  stderr: () => string;
}

async function serve(env: Record<string, string>): Promise<Served> {
  const child = spawn(process.execPath, [LEASH, 'serve'], { env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let output = '';
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => ((output += d), (stdout += d)));
  child.stderr!.on('data', (d) => ((output += d), (stderr += d)));
  const deadline = Date.now() + 60_000;
  while (!output.includes('leash is serving')) {
    if (child.exitCode !== null) throw new Error(`leash serve exited ${child.exitCode}: ${output}`);
    if (Date.now() > deadline) throw new Error(`leash serve did not start: ${output}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return { child, output: () => output, stdout: () => stdout, stderr: () => stderr };
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
  // These run in order on one data directory: creating a fresh embedded database is the slow
  // part of a start, so the tests share it and each start after the first reopens it.
  const dataDir = mkdtempSync(join(tmpdir(), 'leash-cli-'));
  const tokenFile = join(dataDir, 'admin-token');
  const lockFile = join(dataDir, 'leash.lock');
  const readLock = () => JSON.parse(readFileSync(lockFile, 'utf8')) as { pid: number; command: string; since: string };
  let env: Record<string, string>;
  let running: Served;

  const cli = async (...args: string[]) => {
    const { stdout } = await run(process.execPath, [LEASH, ...args, '--url', `http://127.0.0.1:${env.PORT}`, '--data-dir', dataDir], { env: cleanEnv({}) });
    return JSON.parse(stdout);
  };

  it('generates the operator token on first start, stores it 0600, and with stdout not a terminal prints only where it is', async () => {
    env = { LEASH_DATA_DIR: dataDir, PORT: String(await freePort()) };
    running = await serve(env);
    const token = readFileSync(tokenFile, 'utf8').trim();
    expect(token).toMatch(/^lsh_[\w-]{43}$/);
    expect(statSync(tokenFile).mode & 0o777).toBe(0o600);
    expect(running.output()).not.toContain(token);
    expect(running.stderr()).toContain(`Leash operator token generated and stored in ${tokenFile} (not printed: stdout is not a terminal)\n`);
  }, 120_000);

  it('while one process serves the data directory, a second serve or an audit verify refuses, naming it', async () => {
    const lock = readLock();
    expect(lock).toMatchObject({ pid: running.child.pid, command: 'leash serve' });
    const other = cleanEnv({ ...env, PORT: String(await freePort()) });
    const refusals = await Promise.all(
      [['serve'], ['audit', 'verify']].map((args) => run(process.execPath, [LEASH, ...args], { env: other }).catch((e) => e)),
    );
    for (const refused of refusals) {
      expect(refused.code).toBe(1);
      expect(refused.stderr).toBe(`leash: the data directory ${dataDir} is in use by pid ${running.child.pid} (leash serve, since ${lock.since}); stop it first, or point LEASH_DATA_DIR elsewhere\n`);
      expect(refused.stdout).toBe('');
    }
    expect(readLock()).toEqual(lock); // the owner's lock is left alone
    expect((await fetch(`http://127.0.0.1:${env.PORT}/healthz`)).status).toBe(200);
  }, 120_000);

  it('serves and drives the whole lifecycle through the CLI', async () => {
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
    const refused = await run(process.execPath, [LEASH, 'agents', 'suspend', 'invoice-bot', '--reason', 'x', '--url', `http://127.0.0.1:${env.PORT}`, '--data-dir', dataDir], { env: cleanEnv({}) }).catch((e) => e);
    expect(refused.code).toBe(1);
    expect(JSON.parse(refused.stderr)).toMatchObject({ code: 'INVALID_TRANSITION', currentState: 'quarantined' });
  }, 120_000);

  it('after a SIGTERM stop the data directory is free: the next start keeps the data and the token', async () => {
    expect(await stop(running.child)).toBe(0);
    expect(existsSync(lockFile)).toBe(false);
    running = await serve(env);
    expect(readLock().pid).toBe(running.child.pid);
    expect(running.output()).not.toContain('Leash operator token');
    expect(await cli('agents', 'get', 'invoice-bot')).toMatchObject({ status: 'quarantined', version: 3 });
  }, 120_000);

  it('a node killed outright loses nothing acknowledged; its lock stays behind and the next start takes it over', async () => {
    expect(await cli('agents', 'retire', 'invoice-bot', '--reason', 'done')).toMatchObject({ status: 'retired', version: 4 });
    const killed = running.child.pid;
    running.child.kill('SIGKILL');
    await new Promise((resolve) => running.child.once('exit', resolve));
    expect(readLock().pid).toBe(killed); // nothing ran to release it
    running = await serve(env);
    expect(readLock()).toMatchObject({ pid: running.child.pid, command: 'leash serve' });
    expect(await cli('agents', 'get', 'invoice-bot')).toMatchObject({ status: 'retired', version: 4 });
  }, 120_000);

  it('on a terminal, shows a newly generated operator token once', async () => {
    expect(await stop(running.child)).toBe(0);
    rmSync(tokenFile); // the next start generates a new one
    // script(1) runs the command with a pseudo-terminal as its stdout.
    const child = spawn('script', ['-qfec', `exec ${process.execPath} ${LEASH} serve`, '/dev/null'], { env: cleanEnv(env), stdio: ['pipe', 'pipe', 'pipe'] });
    children.push(child);
    let output = '';
    child.stdout!.on('data', (d) => (output += d));
    const deadline = Date.now() + 60_000;
    while (!output.includes('leash is serving')) {
      if (child.exitCode !== null) throw new Error(`script exited ${child.exitCode}: ${output}`);
      if (Date.now() > deadline) throw new Error(`leash serve did not start on a terminal: ${output}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const shown = /Leash operator token \(shown once, stored in (\S+)\):\r?\n\r?\n {2}(lsh_[\w-]+)/.exec(output);
    expect(shown?.slice(1)).toEqual([tokenFile, readFileSync(tokenFile, 'utf8').trim()]);
    // On a terminal the log is for a person (pino-pretty): a level and a message, not JSON lines.
    expect(output).toMatch(/INFO[^\n]*leash is serving/);
    expect(output).not.toMatch(/^\{"level"/m);
    const leash = descendants(child.pid!).find((p) => p.cmdline.includes('leash.js serve'));
    expect(leash).toBeDefined();
    const exited = new Promise((resolve) => child.once('exit', resolve));
    process.kill(leash!.pid, 'SIGTERM');
    await exited;
  }, 120_000);

  it('a client command against a server that is not running says it cannot reach it, in one line', async () => {
    const url = `http://127.0.0.1:${await freePort()}`;
    const token = ['--token', 'an-operator-token-0123456789'];
    const results = await Promise.all([
      run(process.execPath, [LEASH, 'agents', 'list', '--url', url, ...token], { env: cleanEnv({}) }).catch((e) => e),
      run(process.execPath, [LEASH, 'kill-switch', '--all', '--reason', 'drill', ...token], { env: cleanEnv({ LEASH_URL: url }) }).catch((e) => e),
    ]);
    for (const r of results) {
      expect(r.code).toBe(1);
      expect(r.stderr).toBe(`leash: cannot reach ${url} (connection refused); is the server running? (set --url or LEASH_URL)\n`);
      expect(r.stdout).toBe('');
    }
  }, 120_000);

  it('no help text cites a document users do not have', async () => {
    const { program } = await import('../src/cli/main.ts');
    const helps: string[] = [];
    const walk = (cmd: Command) => {
      helps.push(cmd.helpInformation());
      cmd.commands.forEach(walk);
    };
    walk(program);
    expect(helps.length).toBeGreaterThan(20);
    for (const help of helps) expect(help).not.toMatch(/SPEC|§/);
    const register = program.commands.find((c) => c.name() === 'agents')!.commands.find((c) => c.name() === 'register')!;
    expect(register.helpInformation().replace(/\s+/g, ' ')).toContain('the JSON body of POST /v1/agents, as in the README\'s agent registration example');
  });

  it('git ignores the private key files (and the token) the README\'s demo writes', async () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    // The keys, and the token a block keeps in a file.
    const keyFiles = [...new Set([...readme.matchAll(/leash keys generate (\S+)|tee ([\w.-]*token[\w.-]*)/g)].map((m) => (m[1] ?? m[2])!))];
    expect(keyFiles.length).toBeGreaterThan(0);
    for (const file of keyFiles) await run('git', ['check-ignore', '--quiet', file], { cwd: ROOT }); // exit 1: not ignored
  });

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
