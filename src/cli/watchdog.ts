import { Worker } from 'node:worker_threads';

/**
 * Ends the process when its main thread stops turning the event loop for `boundMs`, so a
 * supervisor restarts the node instead of leaving it wedged: holding connections, answering
 * nothing, deaf even to SIGTERM. Node 20's V8 can deadlock this way (seen in a benchmark: the
 * main thread waiting at a GC safepoint for a background compiler thread that waits on a lock
 * the main thread holds). Nothing is lost by exiting: an answer leaves only after its
 * decision is durable, and other nodes stop counting on this one once its heartbeats stop.
 *
 * The main thread bumps a shared counter; a worker thread, with its own isolate and event
 * loop, checks that it moves, and if not writes one fatal log line to stderr and sends the
 * process SIGKILL (which, unlike SIGTERM, needs no JavaScript on the stuck thread).
 */
export function startWatchdog(options: { boundMs: number; nodeId: string }): () => void {
  const beats = new Int32Array(new SharedArrayBuffer(4));
  const every = Math.max(10, Math.min(1000, Math.floor(options.boundMs / 4)));
  const beat = setInterval(() => Atomics.add(beats, 0, 1), every);
  beat.unref();
  const worker = new Worker(WATCHER, { eval: true, workerData: { beats, boundMs: options.boundMs, every, nodeId: options.nodeId } });
  worker.unref();
  return () => {
    clearInterval(beat);
    void worker.terminate();
  };
}

const WATCHER = `
const { workerData } = require('node:worker_threads');
const { writeSync } = require('node:fs');
const { beats, boundMs, every, nodeId } = workerData;
let seen = Atomics.load(beats, 0);
let since = Date.now();
setInterval(() => {
  const now = Date.now();
  const current = Atomics.load(beats, 0);
  if (current !== seen) {
    seen = current;
    since = now;
    return;
  }
  if (now - since < boundMs) return;
  const line = { level: 60, time: now, pid: process.pid, nodeId, blockedMs: now - since, msg: 'the event loop has not turned within LEASH_WATCHDOG_MS; ending the process so it can be restarted' };
  try { writeSync(2, JSON.stringify(line) + '\\n'); } catch {}
  process.kill(process.pid, 'SIGKILL');
}, every);
`;
