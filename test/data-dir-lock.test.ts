import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterEach, describe, expect, it } from 'vitest';
import { acquireDataDirLock, dataDirLockFile, DataDirInUseError } from '../src/store/data-dir-lock.ts';
import { isRunning, killQuietly } from './support/processes.ts';

// The lock that keeps a second process off an embedded (PGlite) data directory, with real
// processes as its owners: live ones, exited ones, zombies, and racers.

const ROOT = join(import.meta.dirname, '..');
const RACER = join(import.meta.dirname, 'support', 'data-dir-lock-racer.ts');
const started: ChildProcess[] = [];

afterEach(() => {
  for (const child of started.splice(0)) killQuietly(child.pid!);
});

const freshDir = () => mkdtempSync(join(tmpdir(), 'leash-lock-'));
const lockOf = (dir: string) => JSON.parse(readFileSync(dataDirLockFile(dir), 'utf8'));
const writeLock = (dir: string, owner: Record<string, unknown>) => writeFileSync(dataDirLockFile(dir), JSON.stringify(owner));
const procStart = (pid: number) => {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
};

/** A live process that is not this one. */
async function sleeper(): Promise<number> {
  const child = spawn('sleep', ['30'], { stdio: 'ignore' });
  started.push(child);
  await new Promise((r) => child.once('spawn', r));
  return child.pid!;
}

/** The pid of a process that has exited (and been reaped). */
async function deadPid(): Promise<number> {
  const child = spawn('true', { stdio: 'ignore' });
  await new Promise((r) => child.once('exit', r));
  return child.pid!;
}

/** The pid of a zombie: a shell backgrounds a short sleep, then becomes a long one, which never reaps it. */
async function zombiePid(): Promise<number> {
  const child = spawn('sh', ['-c', 'sleep 0.1 & echo $!; exec sleep 30'], { stdio: ['ignore', 'pipe', 'ignore'] });
  started.push(child);
  const [line] = await new Promise<string[]>((r) => createInterface({ input: child.stdout! }).once('line', (l) => r([l])));
  const pid = Number(line);
  while (isRunning(pid)) await new Promise((r) => setTimeout(r, 10));
  expect(existsSync(`/proc/${pid}`)).toBe(true); // exited, not reaped
  return pid;
}

describe('the data directory lock', () => {
  it('holds the directory for one owner, naming it to anyone else, until released', () => {
    const dir = freshDir();
    const release = acquireDataDirLock(dir, 'leash serve');
    expect(lockOf(dir)).toMatchObject({ pid: process.pid, command: 'leash serve' });
    const since = lockOf(dir).since as string;
    const refused = (() => {
      try {
        acquireDataDirLock(dir, 'leash migrate');
      } catch (err) {
        return err;
      }
    })();
    expect(refused).toBeInstanceOf(DataDirInUseError);
    expect(refused).toMatchObject({ dataDir: dir, owner: { pid: process.pid, command: 'leash serve', since } });
    expect((refused as Error).message).toBe(
      `the data directory ${dir} is in use by pid ${process.pid} (leash serve, since ${since}); stop it first, or point LEASH_DATA_DIR elsewhere`,
    );
    release();
    expect(existsSync(dataDirLockFile(dir))).toBe(false);
    release(); // twice is fine
    acquireDataDirLock(dir, 'leash migrate')();
    expect(existsSync(dataDirLockFile(dir))).toBe(false);
  });

  it('refuses while another live process holds it, and leaves its lock alone', async () => {
    const dir = freshDir();
    const pid = await sleeper();
    const owner = { pid, command: 'leash serve', since: '2026-01-02T03:04:05.000Z', procStart: procStart(pid) };
    writeLock(dir, owner);
    expect(() => acquireDataDirLock(dir, 'leash audit verify')).toThrow(`is in use by pid ${pid} (leash serve, since 2026-01-02T03:04:05.000Z)`);
    expect(lockOf(dir)).toEqual(owner);
  });

  it('takes over a lock whose owner is gone: exited, a zombie, or its pid now another process\'s', async () => {
    const owners = [
      { pid: await deadPid(), command: 'leash serve', since: '2026-01-01T00:00:00.000Z' },
      { pid: await zombiePid(), command: 'leash serve', since: '2026-01-01T00:00:00.000Z' },
      // a live pid, but started at another time than the lock's owner: the pid was reused
      { pid: await sleeper(), command: 'leash serve', since: '2026-01-01T00:00:00.000Z', procStart: '1' },
    ];
    for (const owner of owners) {
      const dir = freshDir();
      writeLock(dir, owner);
      const release = acquireDataDirLock(dir, 'leash serve');
      expect(lockOf(dir)).toMatchObject({ pid: process.pid, command: 'leash serve' });
      release();
      expect(existsSync(dataDirLockFile(dir))).toBe(false);
    }
  });

  it('takes over an empty lock file (its starter died between creating and writing it) after a second of waiting for it', () => {
    const dir = freshDir();
    writeFileSync(dataDirLockFile(dir), '');
    const began = Date.now();
    acquireDataDirLock(dir, 'leash serve')();
    expect(Date.now() - began).toBeGreaterThanOrEqual(900);
  });

  it('release removes only its own lock', () => {
    const dir = freshDir();
    const release = acquireDataDirLock(dir, 'leash serve');
    const other = { pid: 999_999, command: 'leash serve', since: '2026-01-01T00:00:00.000Z', nonce: 'someone else' };
    writeLock(dir, other); // as if this process had been judged gone and its lock taken over
    release();
    expect(lockOf(dir)).toEqual(other);
  });

  it('when several processes find one stale lock at the same moment, exactly one takes it over', async () => {
    const racers = await Promise.all(
      Array.from({ length: 4 }, async () => {
        const child = spawn(process.execPath, ['--import', 'tsx', RACER], { cwd: ROOT, stdio: ['pipe', 'pipe', 'inherit'] });
        started.push(child);
        const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
        const next = async () => (await lines.next()).value as string;
        expect(await next()).toBe('ready');
        return { pid: child.pid!, child, next };
      }),
    );
    const stale = { pid: await deadPid(), command: 'leash serve', since: '2026-01-01T00:00:00.000Z' };
    for (let round = 0; round < 30; round++) {
      const dir = freshDir();
      writeLock(dir, stale);
      for (const r of racers) r.child.stdin!.write(`${dir}\n`); // all at once: each is waiting on its stdin
      const answers = await Promise.all(racers.map(async (r) => ({ pid: r.pid, answer: await r.next() })));
      const winners = answers.filter((a) => a.answer === `won ${dir}`);
      expect(winners, JSON.stringify(answers)).toHaveLength(1);
      const winner = winners[0]!.pid;
      for (const a of answers) if (a.pid !== winner) expect(a.answer).toBe(`refused ${dir} ${winner}`);
      expect(lockOf(dir).pid).toBe(winner);
    }
  });
});
