import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, chownSync } from 'node:fs';
import { createServer, connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// Real PostgreSQL and nats-server for tests and benchmarks (and Chromium for the console's
// browser tests): Debian packages, free ports, temp dirs, stopped afterwards. Installed on the spot when running as root with apt;
// otherwise the error names the exact command to run. Never skipped, never mocked.

const APT_PACKAGES = ['postgresql', 'nats-server', 'chromium'];
const INSTALL_HINT = `sudo apt-get update && sudo apt-get install -y ${APT_PACKAGES.join(' ')}`;

const isRoot = () => process.getuid?.() === 0;

function postgresBinDir(): string | null {
  const base = '/usr/lib/postgresql';
  if (!existsSync(base)) return null;
  const versions = readdirSync(base)
    .filter((v) => existsSync(join(base, v, 'bin', 'initdb')))
    .sort((a, b) => Number(b) - Number(a));
  return versions.length ? join(base, versions[0]!, 'bin') : null;
}

function natsServerBin(): string | null {
  for (const candidate of ['/usr/bin/nats-server', '/usr/sbin/nats-server', '/usr/local/bin/nats-server']) {
    if (existsSync(candidate)) return candidate;
  }
  return null;
}

const chromiumBin = (): string | null => ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p)) ?? null;

/** Makes sure the servers and the browser are installed, installing them with apt when we may. */
export function ensureServerPackages(): { pgBin: string; natsBin: string; chromium: string } {
  let pgBin = postgresBinDir();
  let natsBin = natsServerBin();
  let chromium = chromiumBin();
  if (pgBin && natsBin && chromium) return { pgBin, natsBin, chromium };
  const missing = [!pgBin && 'postgresql', !natsBin && 'nats-server', !chromium && 'chromium'].filter(Boolean).join(' and ');
  if (!isRoot() || !existsSync('/usr/bin/apt-get')) {
    throw new Error(`The integration tests need ${missing} (Debian packages). Install them with:\n\n  ${INSTALL_HINT}\n`);
  }
  process.stderr.write(`[test servers] installing ${APT_PACKAGES.join(' ')} with apt-get…\n`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
  execFileSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...APT_PACKAGES], { stdio: 'inherit', env });
  pgBin = postgresBinDir();
  natsBin = natsServerBin();
  chromium = chromiumBin();
  if (!pgBin || !natsBin || !chromium) throw new Error(`apt-get finished but ${missing} is still missing; try: ${INSTALL_HINT}`);
  return { pgBin, natsBin, chromium };
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

async function waitForPort(port: number, timeoutMs: number, child?: ChildProcess): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child && child.exitCode !== null) throw new Error(`process exited with ${child.exitCode} before listening on ${port}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = tcpConnect(port, '127.0.0.1');
      s.once('connect', () => (s.destroy(), resolve(true)));
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing listened on port ${port} within ${timeoutMs} ms`);
}

export interface RunningServer {
  url: string;
  stop(): Promise<void>;
}

/**
 * initdb + pg_ctl in a temp dir. As root, the cluster runs as the `postgres` user (initdb
 * refuses root). `durable: false` turns fsync off, for tests only; benchmarks keep it on.
 */
export async function startPostgres(options: { durable?: boolean } = {}): Promise<RunningServer> {
  const { pgBin } = ensureServerPackages();
  const dir = mkdtempSync(join(tmpdir(), 'leash-pg-'));
  const asPostgres = isRoot();
  if (asPostgres) {
    const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres']).toString().trim());
    chownSync(dir, uid, gid);
  }
  const run = (bin: string, args: string[]) =>
    asPostgres
      ? execFileSync('runuser', ['-u', 'postgres', '--', join(pgBin, bin), ...args], { stdio: 'pipe' })
      : execFileSync(join(pgBin, bin), args, { stdio: 'pipe' });
  const data = join(dir, 'data');
  const port = await freePort();
  run('initdb', ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-locale', '--no-sync']);
  const settings = [
    `-p ${port}`,
    `-k ${dir}`,
    '-c listen_addresses=127.0.0.1',
    '-c max_connections=200',
    ...(options.durable ? [] : ['-c fsync=off', '-c synchronous_commit=off', '-c full_page_writes=off']),
  ].join(' ');
  run('pg_ctl', ['-D', data, '-l', join(dir, 'postgres.log'), '-o', settings, '-w', '-t', '60', 'start']);
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    async stop() {
      try {
        run('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}

export interface NatsServer extends RunningServer {
  port: number;
  /** The server's process (benchmarks read its CPU time). */
  pid: number;
  /** The cluster port other servers route to (with `cluster`). */
  clusterPort: number | null;
}

/**
 * nats-server on a free (or given) port. `cluster` joins a cluster of servers routed on
 * loopback: its own cluster port and the routes to the others.
 */
export async function startNats(options: { port?: number; cluster?: { port: number; routes: number[] } } = {}): Promise<NatsServer> {
  const { natsBin } = ensureServerPackages();
  const dir = mkdtempSync(join(tmpdir(), 'leash-nats-'));
  const port = options.port ?? (await freePort());
  const args = ['-a', '127.0.0.1', '-p', String(port), '--pid', join(dir, 'nats.pid')];
  if (options.cluster) {
    args.push('--cluster_name', 'leash-test', '--cluster', `nats://127.0.0.1:${options.cluster.port}`);
    if (options.cluster.routes.length) args.push('--routes', options.cluster.routes.map((p) => `nats://127.0.0.1:${p}`).join(','));
  }
  // One OS thread runs its Go code. Here nats-server shares two cores with several node
  // processes and Postgres, and with a second thread the Go scheduler spins looking for work
  // while the nodes it has just written to wait for a core (8-node revoke benchmark, median:
  // 3.6 → 3.3 ms, p99 8.5 → 8.0 ms). A caller's own GOMAXPROCS wins.
  const child = spawn(natsBin, args, { stdio: 'ignore', env: { ...process.env, GOMAXPROCS: process.env.GOMAXPROCS ?? '1' } });
  await waitForPort(port, 10_000, child);
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    pid: child.pid!,
    clusterPort: options.cluster?.port ?? null,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
