// One in-process monitoring measurement in its own process (see monitoring.ts and run.ts):
//   memory N      a Monitor over N agents beside the stand-in registry (needs --expose-gc)
//   decisions N   N agent decisions with the detectors and N without, alternating
// Prints one JSON line at the end: `RESULT {…}`.
import { benchMonitorDecisions, benchMonitorMemory } from './monitoring.ts';

const [mode, n] = process.argv.slice(2) as [string, string];
const result = mode === 'memory' ? await benchMonitorMemory(Number(n)) : mode === 'decisions' ? await benchMonitorDecisions(Number(n)) : null;
if (result === null) throw new Error(`unknown mode ${mode}: memory or decisions`);
process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
