// One policy count per process (see run.ts): prints the rows as one JSON line at the end.
import { benchDecisions } from './decisions.ts';

const counts = (process.env.BENCH_POLICY_COUNTS ?? '10,10000').split(',').map(Number);
const rows = await benchDecisions(Number(process.env.BENCH_DECISIONS ?? 3000), { counts });
process.stdout.write(`ROWS ${JSON.stringify(rows)}\n`);
