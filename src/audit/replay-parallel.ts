import { Worker } from 'node:worker_threads';
import { tokenSettings } from '../tokens/settings.ts';
import { LeashError, type ErrorCode } from '../errors.ts';
import { connect, type Backend } from '../store/connect.ts';
import { ArchiveSource } from './archive-source.ts';
import type { ReplayOptions, ReplayReport } from './replay.ts';
import { PostgresSource, type AuditSource } from './source.ts';

// Replay on every core (SPEC §8): the decisions split into contiguous ranges, one worker thread
// each, every worker with its own connection and its own history of the registry; the reports
// are added up. Embedded PGlite serves one process only, so it replays in one thread.

/** Where a worker reads from: the database, an archive, or an archive before the database. */
export interface SourceSpec {
  backend: Backend | null;
  archive: string | null;
}

export async function openAuditSource(spec: SourceSpec): Promise<{ source: AuditSource; close(): Promise<void> }> {
  const connection = spec.backend ? await connect(spec.backend) : null;
  const db = connection ? new PostgresSource(connection.db) : null;
  const source = spec.archive ? new ArchiveSource(spec.archive, db) : db;
  if (!source) throw new Error('nothing to read: give a database or an archive');
  return { source, close: async () => connection?.db.destroy() };
}

/** Ranges of about equal size covering first..last. */
function split(first: number, last: number, parts: number): { from: number; to: number }[] {
  const size = Math.ceil((last - first + 1) / parts);
  const out: { from: number; to: number }[] = [];
  for (let from = first; from <= last; from += size) out.push({ from, to: Math.min(last, from + size - 1) });
  return out;
}

function runWorker(spec: SourceSpec, options: Omit<ReplayOptions, 'progress'>, onProgress: (done: number) => void): Promise<ReplayReport> {
  return new Promise((resolve, reject) => {
    // A worker has module state of its own: it verifies act chains with this process's bound.
    const tokens = { maxDelegationDepth: tokenSettings().maxDelegationDepth };
    const worker = new Worker(new URL('./replay-worker.js', import.meta.url), { workerData: { spec, options, tokens } });
    worker.on('message', (m: { progress?: number; report?: ReplayReport; error?: { message: string; code?: string } }) => {
      if (m.progress !== undefined) onProgress(m.progress);
      if (m.report) resolve(m.report);
      if (m.error) reject(m.error.code ? new LeashError(m.error.code as ErrorCode, m.error.message) : new Error(m.error.message));
    });
    worker.on('error', reject);
    worker.on('exit', (code) => code !== 0 && reject(new Error(`a replay worker stopped with exit code ${code}`)));
  });
}

/** Reports of consecutive ranges as one. */
export function mergeReports(reports: ReplayReport[], keep: number): ReplayReport {
  const froms = reports.map((r) => r.range.from).filter((x): x is number => x !== null);
  const tos = reports.map((r) => r.range.to).filter((x): x is number => x !== null);
  const sum = (k: 'decisions' | 'tokenFromRecord' | 'differing' | 'allowToDeny' | 'denyToAllow') => reports.reduce((n, r) => n + r[k], 0);
  return {
    mode: reports[0]!.mode, decisions: sum('decisions'), tokenFromRecord: sum('tokenFromRecord'), differing: sum('differing'),
    allowToDeny: sum('allowToDeny'), denyToAllow: sum('denyToAllow'),
    records: reports.flatMap((r) => r.records).sort((a, b) => a.seq - b.seq).slice(0, keep),
    range: { from: froms.length ? Math.min(...froms) : null, to: tos.length ? Math.max(...tos) : null }, next: null,
    memory: { asked: reports.reduce((n, r) => n + r.memory.asked, 0), remembered: reports.reduce((n, r) => n + r.memory.remembered, 0) },
  };
}

/**
 * Replay (or what-if) of a whole range in `workers` threads. `options.maxDecisions` is not
 * supported here (a parallel run covers the range); progress counts decisions across workers.
 */
export async function replayInParallel(spec: SourceSpec, options: Omit<ReplayOptions, 'maxDecisions'>, workers: number): Promise<ReplayReport> {
  const { source, close } = await openAuditSource(spec);
  let last: number;
  try {
    last = options.to ?? (await source.heads()).decisions;
  } finally {
    await close();
  }
  const first = options.from ?? 1;
  const ranges = last >= first ? split(first, last, workers) : [{ from: first, to: first - 1 }];
  const done = ranges.map(() => 0);
  const total = Math.max(0, last - first + 1);
  const { progress, ...rest } = options;
  const reports = await Promise.all(
    ranges.map((range, i) =>
      runWorker(spec, { ...rest, ...range }, (seq) => {
        done[i] = seq - range.from + 1;
        progress?.('decisions', done.reduce((a, b) => a + b, 0), total);
      }),
    ),
  );
  return mergeReports(reports, options.keep ?? 1_000);
}
