import { Worker } from 'node:worker_threads';
import type { PGlite, Results } from '@electric-sql/pglite';

// The embedded database (PGlite, PostgreSQL compiled to WASM) runs on a thread of its own, so
// the time it spends executing statements is not taken from the thread that answers HTTP.
// The same migrations and SQL run on it as on a PostgreSQL server; this module only carries
// each statement to that thread and its answer back.

export type ToThread =
  | { kind: 'query'; id: number; sql: string; params: unknown[] }
  | { kind: 'close' };

type ErrorFields = { message: string; [field: string]: string };

export type FromThread =
  | { kind: 'ready' }
  | { kind: 'failed'; error: ErrorFields }
  | { kind: 'result'; id: number; rows: unknown[]; affectedRows?: number }
  | { kind: 'error'; id: number; error: ErrorFields }
  | { kind: 'closed' };

/** The database's error with its fields (`code`, the SQLSTATE; `detail`; `constraint` …) as PGlite gave them. */
const asError = (fields: ErrorFields) => Object.assign(new Error(fields.message), fields);

/**
 * PGlite on its own thread, answering the two calls kysely's PGlite dialect makes: `query`
 * and `close`. Statements run one at a time in the order they are sent (the dialect holds
 * its one connection for a transaction's statements). If the thread stops, every statement
 * waiting and every later one fails with an error that says so; none is silently dropped.
 */
export class PGliteThread implements Pick<PGlite, 'query' | 'close'> {
  private readonly pending = new Map<number, { resolve: (r: Results<never>) => void; reject: (e: Error) => void }>();
  private nextId = 1;
  private stopped: Error | null = null;
  private closing: Promise<void> | null = null;

  private constructor(private readonly worker: Worker) {}

  /** Opens the database in `dataDir` (null: in memory) on a new thread; resolves once it is ready. */
  static start(dataDir: string | null): Promise<PGliteThread> {
    const worker = new Worker(new URL('./pglite-worker.js', import.meta.url), { workerData: { dataDir } });
    const thread = new PGliteThread(worker);
    return new Promise((resolve, reject) => {
      worker.on('message', (m: FromThread) => {
        if (m.kind === 'ready') {
          // An idle database keeps no process alive (as PGlite in the process would not); a
          // statement in flight does. (After the listeners: adding one refs the port again.)
          worker.unref();
          resolve(thread);
        }
        else if (m.kind === 'failed') reject(asError({ ...m.error, message: `the embedded database could not start in ${dataDir ?? 'memory'}: ${m.error.message}` }));
        else thread.answer(m);
      });
      worker.on('error', (err) => {
        reject(err);
        thread.stop(new Error(`the embedded database stopped: ${err.message}`));
      });
      worker.on('exit', (code) => {
        reject(new Error(`the embedded database's thread exited (code ${code}) before it was ready`));
        thread.stop(new Error(`the embedded database's thread exited (code ${code})`));
      });
    });
  }

  query<T>(sql: string, params: unknown[] = []): Promise<Results<T>> {
    if (this.stopped) return Promise.reject(this.stopped);
    const id = this.nextId++;
    return new Promise<Results<T>>((resolve, reject) => {
      if (this.pending.size === 0) this.worker.ref();
      this.pending.set(id, { resolve: resolve as (r: Results<never>) => void, reject });
      this.worker.postMessage({ kind: 'query', id, sql, params } satisfies ToThread);
    });
  }

  /** Closes the database (its files are left consistent), then ends the thread. */
  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      if (this.stopped) return resolve();
      this.worker.ref();
      this.worker.once('exit', () => resolve());
      this.worker.on('message', (m: FromThread) => (m.kind === 'closed' || m.kind === 'failed') && void this.worker.terminate());
      this.worker.postMessage({ kind: 'close' } satisfies ToThread);
    });
    return this.closing;
  }

  private answer(m: FromThread): void {
    if (m.kind !== 'result' && m.kind !== 'error') return;
    const waiting = this.pending.get(m.id);
    if (!waiting) return;
    this.pending.delete(m.id);
    if (this.pending.size === 0 && !this.closing) this.worker.unref();
    if (m.kind === 'error') waiting.reject(asError(m.error));
    else waiting.resolve({ rows: m.rows as never[], affectedRows: m.affectedRows, fields: [] });
  }

  private stop(err: Error): void {
    this.stopped ??= err;
    for (const waiting of this.pending.values()) waiting.reject(this.stopped);
    this.pending.clear();
    this.worker.unref();
  }
}
