// Cedar's integration tests through Leash's decision API (see harness.ts, and README.md here).
//
//   npx tsx test/cedar-corpus/run.ts [suite …] [--out FILE] [--limit N] [--every K] [--qualified-actions] [--examples N]
//
// A suite is a directory (searched for test files: JSON with `policies` and `requests`) or a
// corpus tarball (`corpus-tests.tar.gz`, unpacked into a temporary directory). Default: the
// vendored handwritten tests in test/cedar-corpus/fixtures. Prints a summary per suite and
// writes every request's outcome to FILE (default /tmp/cedar-corpus-results.json).
//   --limit N            only the first N tests of each suite
//   --every K            only every K-th test (a lean sample of a large corpus)
//   --qualified-actions  name every action as `NS::Action::"id"`, even root-namespace ones
//   --examples N         examples printed per non-matching outcome (default 5)

import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatSummary, loadTests, runTest, startHarness, summarise, type RequestResult } from './harness.ts';

const FIXTURES = fileURLToPath(new URL('./fixtures', import.meta.url));

function parseArgs(argv: string[]) {
  const suites: string[] = [];
  const o = { out: '/tmp/cedar-corpus-results.json', limit: Infinity, every: 1, qualifiedActions: false, examples: 5 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const next = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--out') o.out = next();
    else if (a === '--limit') o.limit = Number(next());
    else if (a === '--every') o.every = Number(next());
    else if (a === '--examples') o.examples = Number(next());
    else if (a === '--qualified-actions') o.qualifiedActions = true;
    else if (a === '--help' || a === '-h') {
      console.log('usage: npx tsx test/cedar-corpus/run.ts [suite …] [--out FILE] [--limit N] [--every K] [--qualified-actions] [--examples N]');
      process.exit(0);
    } else if (a.startsWith('--')) throw new Error(`unknown option ${a}`);
    else suites.push(a);
  }
  return { suites: suites.length ? suites : [FIXTURES], ...o };
}

const args = parseArgs(process.argv.slice(2));
const cleanups: (() => void)[] = [];

/** A tarball is unpacked into a temporary directory, removed at the end. */
function suiteDir(suite: string): string {
  if (!/\.(tar\.gz|tgz)$/.test(suite)) return suite;
  const dir = mkdtempSync(join(tmpdir(), 'cedar-corpus-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const r = spawnSync('tar', ['-xzf', suite, '-C', dir], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`tar -xzf ${suite} failed`);
  return dir;
}

const h = await startHarness();
const report: { suite: string; seconds: number; cpuSeconds: number; summary: unknown; results: RequestResult[] }[] = [];
try {
  for (const suite of args.suites) {
    const dir = suiteDir(suite);
    const started = Date.now();
    const cpu = process.cpuUsage();
    const results: RequestResult[] = [];
    let tests = 0;
    const select = (i: number) => i % args.every === 0 && Math.floor(i / args.every) < args.limit;
    for (const t of loadTests(dir, select)) {
      results.push(...(await runTest(h, t, { qualifiedActions: args.qualifiedActions })));
      if (++tests % 250 === 0) process.stderr.write(`${suite}: ${tests} tests, ${results.length} requests, ${((Date.now() - started) / 1000).toFixed(0)} s, rss ${(process.memoryUsage().rss / 2 ** 20).toFixed(0)} MB\n`);
    }
    const used = process.cpuUsage(cpu);
    const seconds = (Date.now() - started) / 1000;
    const cpuSeconds = (used.user + used.system) / 1e6;
    const summary = summarise(results);
    console.log(`\n${formatSummary(suite, summary)}\n\n${seconds.toFixed(1)} s wall, ${cpuSeconds.toFixed(1)} s CPU`);

    // A few examples of each outcome that is not a match.
    const byOutcome = new Map<string, RequestResult[]>();
    for (const r of results) if (r.outcome !== 'match') byOutcome.set(r.outcome, [...(byOutcome.get(r.outcome) ?? []), r]);
    for (const [outcome, rs] of byOutcome) {
      console.log(`\n### ${outcome}`);
      // Examples from different tests, and different places in the request, where there are.
      const seen = new Set<string>();
      const picked = rs.filter((r) => {
        const k = `${r.test}`;
        if (seen.has(k)) return false;
        seen.add(k);
        return true;
      });
      const places = new Map<string, RequestResult>();
      for (const r of picked) if (r.trigger && !places.has(r.trigger.where)) places.set(r.trigger.where, r);
      const examples = [...new Set([...places.values(), ...picked])].slice(0, args.examples);
      for (const r of examples) {
        const what = r.trigger ? `${r.trigger.pointer} = ${r.trigger.value}` : `expected ${JSON.stringify(r.expected)}, Leash ${JSON.stringify(r.leash)}${r.oracleSaid ? `, cedar-wasm ${JSON.stringify(r.oracleSaid)}` : ''}`;
        console.log(`- ${r.test} "${r.request}": ${what}`);
      }
    }
    report.push({ suite, seconds, cpuSeconds, summary: { ...summary, outcomes: Object.fromEntries([...summary.outcomes].map(([k, v]) => [k, { requests: v.requests, tests: v.tests.size }])), where: Object.fromEntries([...summary.where].map(([k, v]) => [k, Object.fromEntries(v)])), oracle: Object.fromEntries(summary.oracle), holds: Object.fromEntries(summary.holds), holdsOnly: Object.fromEntries(summary.holdsOnly) }, results });
  }
} finally {
  await h.close();
  for (const c of cleanups) c();
}
writeFileSync(args.out, JSON.stringify(report, null, 1));
console.log(`\nper-request details: ${args.out}`);
