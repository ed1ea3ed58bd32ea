import type { Backend } from '../store/connect.ts';
import { acquireDataDirLock } from '../store/data-dir-lock.ts';

/**
 * Before the CLI opens the embedded database: its data directory's lock, held until this
 * process ends. PGlite serves one process, so a second one on the same directory must not
 * start at all (both would acknowledge writes, and one side's would be lost). Nothing to do
 * for PostgreSQL (`DATABASE_URL`), which serves any number of nodes, or without a database.
 *
 * The lock is released by the returned function and, failing that, on the way out: exit
 * handlers run on process.exit and after an uncaught error. A signal's default action ends
 * the process without them, so `endOnSignal` turns SIGINT/SIGTERM into an exit (130/143) for
 * commands with no shutdown of their own; `leash serve` has one, and releases it there.
 */
export function lockEmbeddedDataDir(backend: Backend | null, command: string, options: { endOnSignal?: boolean } = {}): () => void {
  if (backend?.kind !== 'pglite' || backend.dataDir === null) return () => {};
  const release = acquireDataDirLock(backend.dataDir, command);
  process.once('exit', release);
  if (options.endOnSignal) {
    process.once('SIGINT', () => process.exit(130));
    process.once('SIGTERM', () => process.exit(143));
  }
  return release;
}
