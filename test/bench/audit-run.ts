// One measured run over an archive directory, in its own process (see audit.ts and run.ts):
//   replay DIR   leash's replay of every archived decision (archive only, a worker per core)
//   raw DIR N    baseline: one raw cedar-wasm call per recorded request, first N decisions
//   verify DIR   leash's verify of the archive (offline)
//   read DIR     baseline: the same files decompressed and split into lines by the same reader, nothing checked
// Prints one JSON line: {"count": …, "seconds": …}.
import { readManifest, readSegment } from '../../src/audit/archive.ts';
import { ArchiveSource } from '../../src/audit/archive-source.ts';
import { loadHistory } from '../../src/audit/replay.ts';
import { replayInParallel } from '../../src/audit/replay-parallel.ts';
import { availableParallelism } from 'node:os';
import { verifyAudit } from '../../src/audit/verify.ts';
import * as cedar from '../../src/authz/cedar.ts';
import { wholeSet } from './whole-set.ts';
import { cedarType, entitiesFor, type EvaluationRequest } from '../../src/authz/engine.ts';

const [mode, dir, n] = process.argv.slice(2) as [string, string, string | undefined];
const t0 = performance.now();
let count = 0;
let remembered: { asked: number; remembered: number } | undefined;

switch (mode) {
  case 'replay': {
    // As `leash audit replay --archive-only` runs it: one worker thread per core.
    const report = await replayInParallel({ backend: null, archive: dir }, { keep: 10 }, availableParallelism());
    remembered = report.memory;
    if (report.differing > 0) throw new Error(`replay found ${report.differing} differences: ${JSON.stringify(report.records[0])}`);
    count = report.decisions;
    break;
  }
  case 'raw': {
    const source = new ArchiveSource(dir, null);
    const history = await loadHistory(source);
    const limit = Number(n);
    const start = performance.now();
    outer: for await (const page of source.decisions()) {
      for (const d of page) {
        if (count >= limit) break outer;
        const set = history.policies.set(d.policyVersion)!;
        const r = d.request as EvaluationRequest;
        const state = history.registry.at(d.logPosition);
        const A = { type: 'Agent', id: r.subject.id };
        const resource = { type: cedarType(r.resource.type), id: r.resource.id };
        const { entities, ...context } = r.context ?? {};
        const human = { type: 'Human', id: state.agents.get(r.subject.id)!.record.owner! };
        const answer = cedar.statefulIsAuthorized({
          principal: A, action: { type: 'Action', id: r.action.name }, resource, context: context as cedar.Context,
          entities: [...entitiesFor(state, [{ uid: A }, { uid: human }, { uid: resource, given: r.resource }], entities).values()] as cedar.Entities,
          preparsedPolicySetId: wholeSet(set), preparsedSchemaName: set.schemaName, validateRequest: false,
        });
        if (answer.type !== 'success') throw new Error('raw call failed');
        count++;
      }
    }
    // Only the calls are timed: loading the history is not part of the baseline.
    process.stdout.write(`${JSON.stringify({ count, seconds: (performance.now() - start) / 1000 })}\n`);
    process.exit(0);
  }
  case 'verify': {
    const result = await verifyAudit(null, { archive: dir });
    if (!result.ok) throw new Error(`verify failed: ${JSON.stringify(result.findings)}`);
    count = result.records.decisions + result.records.events;
    break;
  }
  case 'read': {
    // The reader verify uses, with the checks left out.
    for (const s of readManifest(dir).segments) for await (const lines of readSegment(dir, s)) count += lines.length;
    break;
  }
  default:
    throw new Error(`unknown mode ${mode}`);
}
process.stdout.write(`${JSON.stringify({ count, seconds: (performance.now() - t0) / 1000, memory: remembered })}\n`);
