import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

// `leash serve`'s watchdog: a node whose event loop stands still (a V8 deadlock was seen in
// Node 20) is ended, so a supervisor restarts it, and a node that is merely busy is not.

const FIXTURE = fileURLToPath(new URL('./support/watchdog-fixture.ts', import.meta.url));

function run(mode: string, boundMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string; ms: number }> {
  const started = Date.now();
  const child = spawn(process.execPath, ['--import', 'tsx', FIXTURE, mode, String(boundMs)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  return new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal, stdout, stderr, ms: Date.now() - started })));
}

describe('watchdog', () => {
  it('ends a process whose event loop stands still past the bound, with one fatal log line', async () => {
    const r = await run('block', 1000);
    expect(r.signal).toBe('SIGKILL');
    expect(r.stdout).not.toContain('unblocked');
    expect(r.ms).toBeLessThan(15_000); // the block alone lasts 20 s
    const line = JSON.parse(r.stderr.trim().split('\n').pop()!) as Record<string, unknown>;
    expect(line).toMatchObject({ level: 60, nodeId: 'fixture', msg: expect.stringContaining('LEASH_WATCHDOG_MS') });
    expect(line.blockedMs).toBeGreaterThanOrEqual(1000);
  }, 30_000);

  it('leaves a busy process alone while its event loop keeps turning', async () => {
    const r = await run('work', 1000);
    expect(r).toMatchObject({ code: 0, signal: null });
    expect(r.stdout).toContain('done');
    expect(r.stderr).toBe('');
  }, 30_000);

  it('does not keep an idle process alive', async () => {
    const r = await run('idle', 1000);
    expect(r).toMatchObject({ code: 0, signal: null });
    expect(r.ms).toBeLessThan(10_000);
  }, 30_000);
});
