import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { freePort } from './servers.ts';

// `leash serve` as deployed: its own process, configured by environment, ready when
// /readyz says so. Used by the multi-node tests and the HTTP benchmarks.

const CLI = fileURLToPath(new URL('../../src/cli/leash.js', import.meta.url));

export interface ServeProcess {
  url: string;
  port: number;
  child: ChildProcess;
  /** Everything it printed (JSON log lines), for failure messages. */
  output(): string;
  /** SIGTERM, and wait for it to exit. */
  stop(): Promise<void>;
}

export async function serveLeash(env: Record<string, string>, options: { port?: number; nodeArgs?: string[]; readyTimeoutMs?: number } = {}): Promise<ServeProcess> {
  const port = options.port ?? (await freePort());
  const clean = { ...process.env };
  for (const k of ['DATABASE_URL', 'NATS_URL', 'LEASH_DATA_DIR', 'LEASH_NODE_ID', 'LEASH_STALENESS_MS']) delete clean[k];
  const child = spawn(process.execPath, [...(options.nodeArgs ?? []), CLI, 'serve'], {
    // Tests serve JWKS from loopback, as with startTestNode (takes effect once `serve` passes the setting to startNode).
    env: { ...clean, LOG_LEVEL: 'warn', LEASH_ALLOW_PRIVATE_URLS: '1', ...env, PORT: String(port) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (d) => (output += d));
  child.stderr!.on('data', (d) => (output += d));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + (options.readyTimeoutMs ?? 60_000);
  for (;;) {
    if (child.exitCode !== null) throw new Error(`leash serve exited with ${child.exitCode}: ${output}`);
    if (await fetch(`${url}/readyz`).then((r) => r.ok, () => false)) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`leash serve did not become ready: ${output}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url,
    port,
    child,
    output: () => output,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    },
  };
}
