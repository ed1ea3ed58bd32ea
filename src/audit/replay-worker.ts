import { parentPort, workerData } from 'node:worker_threads';
import { replay, type ReplayOptions } from './replay.ts';
import { openAuditSource, type SourceSpec } from './replay-parallel.ts';
import { configureTokens } from '../tokens/settings.ts';

// One part of a parallel replay: its own source, its own history, a range of decisions.
const { spec, options, tokens } = workerData as { spec: SourceSpec; options: Omit<ReplayOptions, 'progress'>; tokens: { maxDelegationDepth: number } };
configureTokens(tokens);
const { source, close } = await openAuditSource(spec);
try {
  const report = await replay(source, { ...options, progress: (stage, done) => stage === 'decisions' && parentPort!.postMessage({ progress: done }) });
  parentPort!.postMessage({ report });
} catch (err) {
  parentPort!.postMessage({ error: { message: (err as Error).message, code: (err as { code?: string }).code } });
} finally {
  await close();
}
