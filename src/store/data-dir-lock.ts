import { createHash, randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

// The embedded database (PGlite) serves one process. Two processes on one data directory both
// start, both acknowledge writes, and one side's are lost. So a process opening it first
// takes this lock: a file in the data directory, created with O_EXCL, naming its owner.
//
// A lock whose owner is gone (killed outright: SIGKILL, the watchdog, a power cut) stays
// behind. It is taken over, but only by one of the processes that find it at the same time:
// the one that creates `leash.lock.takeover-<id of that stale content>` (O_EXCL again) may
// remove it, after checking the lock still holds that content; the others start over and then
// find the winner's live lock. Removing the file without that marker is not safe: a racer
// that read the stale content just before a winner replaced it would remove the winner's lock.

export const dataDirLockFile = (dataDir: string): string => join(dataDir, 'leash.lock');

export interface DataDirOwner {
  pid: number;
  /** What it runs, e.g. `leash serve`. */
  command: string;
  /** When it took the lock (ISO 8601). */
  since: string;
  /**
   * Its start time in clock ticks since boot (Linux, /proc/<pid>/stat), so that a pid reused
   * by another process (containers hand out the same low pids on every start) is not taken
   * for the owner.
   */
  procStart?: string;
}

export class DataDirInUseError extends Error {
  constructor(
    readonly dataDir: string,
    readonly owner: DataDirOwner,
  ) {
    super(`the data directory ${dataDir} is in use by pid ${owner.pid} (${owner.command}, since ${owner.since}); stop it first, or point LEASH_DATA_DIR elsewhere`);
    this.name = 'DataDirInUseError';
  }
}

/** The lock files this process holds: a lock naming our own pid is ours only if listed here. */
const held = new Set<string>();

/**
 * Takes `dataDir`'s lock for this process (creating the directory), or throws
 * DataDirInUseError naming the live owner. Returns the release function: it removes the file
 * if it is still this process's lock, and may be called more than once.
 */
export function acquireDataDirLock(dataDir: string, command: string): () => void {
  mkdirSync(dataDir, { recursive: true });
  const file = dataDirLockFile(dataDir);
  const self = procStat(process.pid);
  const owner: DataDirOwner & { nonce: string } = {
    pid: process.pid,
    command,
    since: new Date().toISOString(),
    ...(self ? { procStart: self.start } : {}),
    nonce: randomUUID(), // makes every lock's content unique, which the takeover relies on
  };
  const mine = `${JSON.stringify(owner)}\n`;
  let unreadable = { content: '', seen: 0 };
  for (let attempt = 0; attempt < 200; attempt++) {
    try {
      writeFileSync(file, mine, { flag: 'wx', mode: 0o644 });
      held.add(file);
      return () => release(file, mine);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const current = readIfThere(file);
    if (current === null) continue; // released in between: try again
    const found = parseOwner(current);
    if (found === null) {
      // Empty or partial: most likely a starter between its create and its write. Content that
      // stays unreadable for a second is a lock nobody will finish (or not one leash wrote).
      unreadable = unreadable.content === current ? { content: current, seen: unreadable.seen + 1 } : { content: current, seen: 1 };
      if (unreadable.seen < 40) {
        sleep(25);
        continue;
      }
    } else if (isAlive(found, file)) {
      throw new DataDirInUseError(dataDir, found);
    }
    takeOver(file, current);
  }
  throw new Error(`could not take ${file}: it kept changing; is something else creating and removing it?`);
}

function release(file: string, mine: string): void {
  if (!held.delete(file)) return;
  try {
    // Only our own lock: had this process been judged gone, the file could be another's now.
    if (readIfThere(file) === mine) unlinkQuietly(file);
  } catch {
    // Best effort (it also runs on the way out of a failing process): a lock left behind
    // names a pid that is gone, and the next start takes it over.
  }
}

/** Removes the stale lock `stale` if this process wins the right to; the caller starts over either way. */
function takeOver(file: string, stale: string): void {
  const marker = `${file}.takeover-${createHash('sha256').update(stale).digest('hex').slice(0, 16)}`;
  try {
    writeFileSync(marker, `${process.pid}\n`, { flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    // Another process is taking this lock over (it holds the marker for microseconds). A
    // marker that old was left by one that died in between; it only stops takeovers, so clear it.
    const age = ageMs(marker);
    if (age !== null && age > 10_000) unlinkQuietly(marker);
    else sleep(5);
    return;
  }
  try {
    // Whoever holds the marker for this content is the only one that may remove it (its owner
    // is gone); so if it is still there now, it is still there when unlinked.
    if (readIfThere(file) === stale) unlinkQuietly(file);
  } finally {
    // A later racer that creates the marker again finds other content and leaves it alone.
    unlinkQuietly(marker);
  }
}

function isAlive(owner: DataDirOwner, file: string): boolean {
  // Our own pid: our lock if we hold it, else a dead predecessor's that had the same pid.
  if (owner.pid === process.pid) return held.has(file);
  try {
    process.kill(owner.pid, 0);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ESRCH') return false;
    if (code !== 'EPERM') throw err; // EPERM: alive, another user's
  }
  const stat = procStat(owner.pid);
  // No /proc entry for a pid that answered: it just ended, or there is no procfs (macOS).
  if (stat === null) return !existsSync('/proc/self/stat');
  // A zombie has exited; where nothing reaps orphans it keeps its pid for good.
  if (stat.state === 'Z' || stat.state === 'X') return false;
  return owner.procStart === undefined || owner.procStart === stat.start;
}

function parseOwner(text: string): DataDirOwner | null {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  const o = value as Partial<DataDirOwner> | null;
  if (typeof o !== 'object' || o === null || !Number.isInteger(o.pid) || o.pid! <= 0) return null; // pid 0 or less would signal process groups
  return {
    pid: o.pid!,
    command: typeof o.command === 'string' ? o.command : 'unknown command',
    since: typeof o.since === 'string' ? o.since : 'an unknown time',
    ...(typeof o.procStart === 'string' ? { procStart: o.procStart } : {}),
  };
}

/** State and start time (ticks since boot) of a process, from Linux's /proc; null without it. */
function procStat(pid: number): { state: string; start: string } | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // "pid (comm) state ppid …": comm may hold spaces and parentheses, so split after the last ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const state = fields[0];
  const start = fields[19]; // field 22 of the whole line
  return state && start ? { state, start } : null;
}

function readIfThere(file: string): string | null {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

function ageMs(file: string): number | null {
  try {
    return Date.now() - statSync(file).mtimeMs;
  } catch {
    return null;
  }
}

function unlinkQuietly(file: string): void {
  try {
    unlinkSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

const sleeper = new Int32Array(new SharedArrayBuffer(4));
/** A short synchronous pause: acquiring is synchronous, done once before anything else runs. */
const sleep = (ms: number) => void Atomics.wait(sleeper, 0, 0, ms);
