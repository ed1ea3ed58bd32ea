import { Worker } from 'node:worker_threads';
import { LeashError, type ErrorCode } from '../errors.ts';
import { checkPolicySet, policySetDigest, type CheckedPolicySet, type PolicySetSource } from './policy-set.ts';

// Parsing and strictly validating a policy set is most of what publishing one costs (1.8 s of
// 2.7 s at 3,000 policies), and it is pure: it runs here, on a thread of its own, while the
// node goes on deciding with the version in force. What comes back is plain data, which the
// node prepares (policy-set.ts `prepareCompiled`) and switches to in one step.

export type ToChecker = { id: number; source: PolicySetSource };
export type FromChecker =
  | { ready: true }
  | { id: number; statics: CheckedPolicySet['statics'] }
  | { id: number; checked: CheckedPolicySet }
  | { id: number; refused: { code: ErrorCode; message: string; details: Record<string, unknown> } }
  | { id: number; failed: string };

/** The longest one check may take before the thread is stopped and the set refused. */
export const CHECK_TIMEOUT_MS = 120_000;

type Waiting = { resolve: (c: CheckedPolicySet) => void; reject: (e: Error) => void; timer: NodeJS.Timeout; statics: CheckedPolicySet['statics'] };

/** One thread for the process, started on first use, kept (unreferenced) while idle. */
class Checker {
  private worker: Worker | null = null;
  private readonly pending = new Map<number, Waiting>();
  private nextId = 1;

  check(source: PolicySetSource): Promise<CheckedPolicySet> {
    const worker = this.worker ?? this.start();
    const id = this.nextId++;
    return new Promise<CheckedPolicySet>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.stop(worker, new LeashError('POLICY_INVALID', `the policy set took longer than ${CHECK_TIMEOUT_MS / 1000} s to check`, { diagnostics: [] }));
      }, CHECK_TIMEOUT_MS);
      timer.unref();
      if (this.pending.size === 0) worker.ref();
      this.pending.set(id, { resolve, reject, timer, statics: [] });
      worker.postMessage({ id, source } satisfies ToChecker);
    });
  }

  private start(): Worker {
    const worker = new Worker(new URL('./policy-worker.js', import.meta.url));
    this.worker = worker;
    worker.on('message', (m: FromChecker) => {
      if ('ready' in m) return;
      const waiting = this.pending.get(m.id);
      if (!waiting) return;
      if ('statics' in m) {
        for (const p of m.statics) waiting.statics.push(p);
        return;
      }
      this.pending.delete(m.id);
      clearTimeout(waiting.timer);
      if (this.pending.size === 0) worker.unref();
      if ('checked' in m) waiting.resolve({ ...m.checked, statics: waiting.statics });
      else if ('refused' in m) waiting.reject(new LeashError(m.refused.code, m.refused.message, m.refused.details));
      else waiting.reject(new Error(`the policy set could not be checked: ${m.failed}`));
    });
    worker.on('error', (err) => this.stop(worker, new Error(`the policy checker stopped: ${err.message}`)));
    worker.on('exit', (code) => this.stop(worker, new Error(`the policy checker's thread exited (code ${code})`)));
    worker.unref();
    return worker;
  }

  /** Ends the thread: checks waiting fail with `err` (or a plain one); the next check starts another. */
  end(err = new Error('the policy checker was stopped')): void {
    if (this.worker) this.stop(this.worker, err);
  }

  /** Every check waiting fails with `err`; the next one starts a new thread. */
  private stop(worker: Worker, err: Error): void {
    if (this.worker !== worker) return;
    this.worker = null;
    for (const waiting of this.pending.values()) {
      clearTimeout(waiting.timer);
      waiting.reject(err);
    }
    this.pending.clear();
    void worker.terminate();
  }
}

const checker = new Checker();

/** The last sets checked, by their text's digest: a node folding the set it has just published checks it once. */
const recent = new Map<string, Promise<CheckedPolicySet>>();
const RECENT = 2;

/**
 * The set parsed and strictly validated off this thread; rejects with POLICY_INVALID and
 * Cedar's diagnostics as `checkPolicySet` would. Should the thread itself fail (not the set),
 * the set is checked on this thread instead: slower, never lost.
 */
export function checkOffThread(source: PolicySetSource): Promise<CheckedPolicySet> {
  const key = policySetDigest(source);
  const known = recent.get(key);
  if (known) {
    recent.delete(key);
    recent.set(key, known);
    return known;
  }
  const plain = { schema: source.schema, policies: source.policies, ...(source.aliases ? { aliases: source.aliases } : {}) };
  const checked = checker.check(plain).catch((err: unknown) => {
    if (err instanceof LeashError) throw err;
    return checkPolicySet(plain);
  });
  recent.set(key, checked);
  if (recent.size > RECENT) recent.delete(recent.keys().next().value!);
  return checked;
}

/** Ends the checking thread (tests: a thread that dies mid-check); the next check starts another. */
export const stopChecker = (): void => checker.end();
