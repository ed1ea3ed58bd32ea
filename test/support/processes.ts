import { readdirSync, readFileSync } from 'node:fs';

// The process table, from Linux's /proc: which processes a test's child started, and whether
// a pid is still running (a zombie counts as gone: it has exited, only its entry is left, and
// where nothing reaps orphans it stays for good).

interface ProcEntry {
  pid: number;
  ppid: number;
  state: string;
  /** The command line, arguments joined by spaces. */
  cmdline: string;
}

function entry(pid: number): ProcEntry | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    let cmdline = '';
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
    } catch {
      // gone in between
    }
    return { pid, ppid: Number(fields[1]), state: fields[0]!, cmdline };
  } catch {
    return null;
  }
}

/** Every running process below `pid` (children, their children, …). */
export function descendants(pid: number): ProcEntry[] {
  const all = readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map((d) => entry(Number(d))).filter((e): e is ProcEntry => e !== null && e.state !== 'Z');
  const found: ProcEntry[] = [];
  const parents = new Set([pid]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const e of all) {
      if (parents.has(e.ppid) && !parents.has(e.pid)) {
        parents.add(e.pid);
        found.push(e);
        grew = true;
      }
    }
  }
  return found;
}

export function isRunning(pid: number): boolean {
  const e = entry(pid);
  return e !== null && e.state !== 'Z' && e.state !== 'X';
}

/** Waits until none of `pids` runs; returns those still running at the deadline. */
export async function waitGone(pids: number[], timeoutMs: number): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const left = pids.filter(isRunning);
    if (left.length === 0 || Date.now() > deadline) return left;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** SIGKILL, for cleaning up after a failed test; a pid already gone is fine. */
export function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // gone
  }
}
