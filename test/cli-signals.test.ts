import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { freshPglite } from './support/backends.ts';
import { CEDAR_DIR } from './support/node.ts';
import { descendants, killQuietly, waitGone } from './support/processes.ts';
import { freePort } from './support/servers.ts';

// A supervisor stops the service with SIGTERM to the process it started: `npm start`, or the
// `leash` executable. Either way the node that serves must end, not live on as an orphan
// still holding the port and the data directory.

const ROOT = join(import.meta.dirname, '..');
const LEASH = join(ROOT, 'src', 'cli', 'leash.js');
/** Every process a test started, and what they started: killed afterwards whatever happened. */
const pids = new Set<number>();

afterEach(() => {
  for (const pid of pids) killQuietly(pid);
  pids.clear();
});

// Both tests open an embedded database that already exists (a copy of the one global setup
// had PGlite create): creating one is the slow part of a start, and cli.test starts on an
// empty directory.
const { dataDir } = freshPglite();

function env(port: number): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, PORT: String(port), LEASH_DATA_DIR: dataDir, LEASH_CEDAR_DIR: CEDAR_DIR, LOG_LEVEL: 'warn', npm_config_update_notifier: 'false' };
  for (const k of ['DATABASE_URL', 'NATS_URL', 'LEASH_ADMIN_TOKEN', 'LEASH_NODE_ID']) delete env[k];
  return env;
}

/**
 * tsx compiles what is not in its cache (/tmp/tsx-<uid>) with esbuild, whose service is a
 * child process: there after a source changed, gone with the node (its stdin closes).
 */
const isEsbuild = (p: { cmdline: string }) => / --service=\S+ --ping$/.test(p.cmdline) && p.cmdline.includes('esbuild');

const answers = (port: number) => fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.ok, () => false);

async function untilHealthy(child: ChildProcess, port: number, output: () => string): Promise<void> {
  const deadline = Date.now() + 90_000;
  while (!(await answers(port))) {
    if (child.exitCode !== null) throw new Error(`exited with ${child.exitCode} before serving: ${output()}`);
    if (Date.now() > deadline) throw new Error(`nothing answered /healthz on ${port}: ${output()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function started(command: string, args: string[], port: number): { child: ChildProcess; output: () => string; exited: Promise<number | null> } {
  const child = spawn(command, args, { cwd: ROOT, env: env(port), stdio: ['ignore', 'pipe', 'pipe'] });
  pids.add(child.pid!);
  let output = '';
  child.stdout!.on('data', (d) => (output += d));
  child.stderr!.on('data', (d) => (output += d));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, output: () => output, exited };
}

describe('stopping the service with a signal', () => {
  it('SIGTERM to `npm start` ends the node it runs: the port stops answering and no process of it remains', async () => {
    const port = await freePort();
    const npm = started('npm', ['start'], port);
    await untilHealthy(npm.child, port, npm.output);
    const below = descendants(npm.child.pid!);
    for (const p of below) pids.add(p.pid);
    expect(below.some((p) => p.cmdline.includes('leash.js serve'))).toBe(true);

    npm.child.kill('SIGTERM');
    await npm.exited;
    expect(await waitGone(below.map((p) => p.pid), 10_000)).toEqual([]);
    expect(await answers(port)).toBe(false);
    // Why: the script's shell replaced itself with the node (`exec`), so nothing stands
    // between npm, which passes the signal on, and the node; /bin/sh (dash) does not pass it.
    expect(below.filter((p) => !isEsbuild(p)).map((p) => p.cmdline)).toEqual(['node ./src/cli/leash.js serve']);
  }, 120_000);

  it('the `leash` executable is a single node process (tsx runs inside it), and SIGTERM ends it with exit code 0', async () => {
    const port = await freePort();
    const leash = started(process.execPath, [LEASH, 'serve'], port);
    await untilHealthy(leash.child, port, leash.output);
    const below = descendants(leash.child.pid!);
    for (const p of below) pids.add(p.pid);
    expect(below.filter((p) => !isEsbuild(p))).toEqual([]);

    leash.child.kill('SIGTERM');
    expect(await leash.exited).toBe(0);
    expect(await answers(port)).toBe(false);
    expect(await waitGone(below.map((p) => p.pid), 10_000)).toEqual([]);
  }, 120_000);
});
