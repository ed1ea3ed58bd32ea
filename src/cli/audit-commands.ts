import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import type { ReplayReport } from '../audit/replay.ts';
import type { SourceSpec } from '../audit/replay-parallel.ts';
import type { Trace } from '../audit/trace.ts';
import type { Anchor, ChainHead, Finding, VerifyResult } from '../audit/verify.ts';
import { readPolicyFiles } from '../authz/policy-files.ts';
import { backendOf, loadConfig } from '../config.ts';
import { configureTokens } from '../tokens/settings.ts';
import { lockEmbeddedDataDir } from './embedded-lock.ts';
import { program } from './program.ts';
import { configFrom, withServerFlags } from './server-flags.ts';

// The audit commands: the event and decision logs' hash chains, replay, trace, archive.

const audit = program.command('audit').description('check and work with the audit trail');
withServerFlags(audit.command('verify'))
  .description('walk the event and decision hash chains; name the first record edited, deleted, inserted or reordered (exit 1), or print a summary (exit 0)')
  .option('--anchor <file>', 'heads seen by an earlier verify (JSON): the chains must still reach them unchanged; rewritten with the new heads when intact. Keep it where the database\'s admins cannot write.')
  .option('--archive <dir>', 'an archive directory (leash audit archive): its segments are walked first, then the database after them')
  .option('--archive-only', 'walk the archive alone, without a database (offline)')
  .action(async (flags: Record<string, string | undefined> & { anchor?: string; archiveOnly?: boolean }) => {
    const config = loadConfig(configFrom(flags));
    const anchor = flags.anchor ? readAnchor(flags.anchor) : null;
    if (flags.archiveOnly && !flags.archive) throw new Error('--archive-only needs --archive <dir>');
    const backend = flags.archiveOnly ? null : backendOf(config);
    const unlock = lockEmbeddedDataDir(backend, 'leash audit verify', { endOnSignal: true });
    const [{ connect }, { verifyAudit }, { progress }] = await Promise.all([import('../store/connect.ts'), import('../audit/verify.ts'), import('./progress.ts')]);
    const connection = backend ? await connect(backend) : null;
    const bar = progress();
    try {
      const result = await verifyAudit(connection?.db ?? null, { anchor, ...(flags.archive ? { archive: flags.archive } : {}), progress: (chain, done, total) => bar.update(chain, done, total) });
      bar.stop();
      for (const f of result.findings) process.stdout.write(`${findingLine(f)}\n`);
      if (!result.ok) {
        process.exitCode = 1;
        return;
      }
      process.stdout.write(summary(result));
      if (flags.anchor) {
        writeFileSync(`${flags.anchor}.tmp`, `${JSON.stringify(result.heads, null, 2)}\n`);
        renameSync(`${flags.anchor}.tmp`, flags.anchor);
        process.stdout.write(`anchor ${anchor ? 'checked and ' : ''}written: ${flags.anchor}\n`);
      }
    } finally {
      bar.stop();
      await connection?.db.destroy();
      unlock();
    }
  });

const seqOption = (name: string) => (value: string) => {
  if (!/^[1-9][0-9]*$/.test(value)) throw new Error(`--${name} takes a decision sequence number (1, 2, …)`);
  return Number(value);
};
const timeOption = (name: string) => (value: string) => {
  const t = new Date(value);
  if (Number.isNaN(t.getTime())) throw new Error(`--${name} takes a time (ISO 8601, e.g. 2026-11-23T02:14:00Z)`);
  return t;
};

withServerFlags(audit.command('replay'))
  .description('decide recorded decisions again, against the registry and policy version of their log position: every one must come out the same (exit 1 and each difference otherwise); with --policies, a what-if: every decision a candidate policy set would flip')
  .option('--from <seq>', 'first decision (sequence number)', seqOption('from'))
  .option('--to <seq>', 'last decision (sequence number)', seqOption('to'))
  .option('--since <time>', 'decisions recorded at or after', timeOption('since'))
  .option('--until <time>', 'decisions recorded before', timeOption('until'))
  .option('--policies <dir>', 'what-if: a candidate policy set (schema.cedarschema, policies/*.cedar, aliases.json), as LEASH_CEDAR_DIR')
  .option('--limit <n>', 'list at most this many records (all are counted)', seqOption('limit'), 1_000)
  .option('--json', 'print the report as JSON')
  .option('--archive <dir>', 'read the archive directory first, then the database after it')
  .option('--archive-only', 'read the archive alone, without a database (offline)')
  .option('--workers <n>', 'threads deciding in parallel (default: one per core; 1 on the embedded database)', seqOption('workers'))
  .action(async (flags: Record<string, string | undefined> & SourceFlags & { from?: number; to?: number; since?: Date; until?: Date; policies?: string; limit: number; json?: boolean; workers?: number }) => {
    const candidate = flags.policies ? readPolicyFiles(flags.policies) : undefined;
    // Decided again as a node with this configuration decides (the act-chain bound).
    configureTokens({ maxDelegationDepth: loadConfig(configFrom(flags)).maxDelegationDepth });
    const spec = sourceSpec(flags);
    // Embedded PGlite serves one process (one thread) only.
    const workers = spec.backend?.kind === 'pglite' ? 1 : (flags.workers ?? availableParallelism());
    const unlock = lockEmbeddedDataDir(spec.backend, 'leash audit replay', { endOnSignal: true });
    const [{ replay }, { openAuditSource, replayInParallel }, { progress }] = await Promise.all([import('../audit/replay.ts'), import('../audit/replay-parallel.ts'), import('./progress.ts')]);
    const bar = progress();
    const options = {
      ...(flags.from ? { from: flags.from } : {}), ...(flags.to ? { to: flags.to } : {}),
      ...(flags.since ? { since: flags.since } : {}), ...(flags.until ? { until: flags.until } : {}),
      ...(candidate ? { candidate } : {}), keep: flags.limit, progress: (stage: string, done: number, total: number) => bar.update(stage, done, total),
    };
    try {
      let report: ReplayReport;
      if (workers > 1) {
        report = await replayInParallel(spec, options, workers);
      } else {
        const { source, close } = await openAuditSource(spec);
        try {
          report = await replay(source, options);
        } finally {
          await close();
        }
      }
      bar.stop();
      process.stdout.write(flags.json ? `${JSON.stringify(report, null, 2)}\n` : describeReplay(report, flags.policies));
      if (report.mode === 'replay' && report.differing > 0) process.exitCode = 1;
    } finally {
      bar.stop();
      unlock();
    }
  });

withServerFlags(audit.command('trace <decision-id>'))
  .description('for one decision: who acted for whom (human → agent → sub-agent), the lifecycle events behind each agent\'s state at that moment, and the policy version')
  .option('--json', 'print the trace as JSON')
  .option('--archive <dir>', 'look in the archive directory too')
  .option('--archive-only', 'look in the archive alone, without a database (offline)')
  .action(async (id: string, flags: Record<string, string | undefined> & SourceFlags & { json?: boolean }) => {
    if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(id)) throw new Error('a decision id is a UUID (the `context.id` of a decision)');
    const spec = sourceSpec(flags);
    const unlock = lockEmbeddedDataDir(spec.backend, 'leash audit trace', { endOnSignal: true });
    const [{ openAuditSource }, { traceDecision }] = await Promise.all([import('../audit/replay-parallel.ts'), import('../audit/trace.ts')]);
    const { source, close } = await openAuditSource(spec);
    try {
      const trace = await traceDecision(source, id);
      if (!trace) throw new Error(`no decision ${id} in ${source.describe}`);
      process.stdout.write(flags.json ? `${JSON.stringify(trace, null, 2)}\n` : describeTrace(trace));
    } finally {
      await close();
      unlock();
    }
  });

withServerFlags(audit.command('archive'))
  .description('move decisions recorded before --before (and copy events) into compressed, hash-chained NDJSON segments with a manifest; rows leave the database only after their file is written, synced and read back')
  .requiredOption('--before <time>', 'archive what was recorded before this time (ISO 8601)', timeOption('before'))
  .requiredOption('--dir <dir>', 'the archive directory (created if missing; keep it on durable storage)')
  .option('--segment-size <n>', 'records per segment file', seqOption('segment-size'), 100_000)
  .action(async (flags: Record<string, string | undefined> & { before: Date; dir: string; segmentSize: number }) => {
    if (flags.before.getTime() > Date.now()) throw new Error('--before is in the future: only closed ranges are archived');
    const backend = backendOf(loadConfig(configFrom(flags)));
    const unlock = lockEmbeddedDataDir(backend, 'leash audit archive', { endOnSignal: true });
    const [{ connect }, { migrateToLatest }, { archiveAudit }, { progress }] = await Promise.all([
      import('../store/connect.ts'), import('../store/migrate.ts'), import('../audit/archive.ts'), import('./progress.ts'),
    ]);
    const connection = await connect(backend);
    const bar = progress();
    // Fault injection for the crash tests: LEASH_ARCHIVE_FAILPOINT=<step>[:<chain>] kills the process there.
    const [failStep, failChain] = (process.env.LEASH_ARCHIVE_FAILPOINT ?? '').split(':');
    try {
      await migrateToLatest(connection.db);
      const result = await archiveAudit(connection.db, {
        dir: flags.dir, before: flags.before, segmentSize: flags.segmentSize, progress: (chain, done, total) => bar.update(chain, done, total),
        failpoint: (step, chain) => {
          if (step === failStep && (!failChain || chain === failChain)) process.kill(process.pid, 'SIGKILL');
        },
      });
      bar.stop();
      for (const s of result.finished) process.stdout.write(`finished an interrupted run: ${s.file} (${n(s.records)} ${s.chain})\n`);
      for (const s of result.written) process.stdout.write(`wrote ${s.file}: ${s.chain} ${n(s.first)}–${n(s.last)}${s.node === undefined ? '' : ` of node ${JSON.stringify(s.node)}'s chain`}\n`);
      process.stdout.write(`archived ${n(result.records.decisions)} decisions (moved) and ${n(result.records.events)} events (copied) to ${flags.dir}\n`);
    } finally {
      bar.stop();
      await connection.db.destroy();
      unlock();
    }
  });

interface SourceFlags {
  archive?: string;
  archiveOnly?: boolean;
}

/** The database, an archive directory, or an archive before the database. */
function sourceSpec(flags: Record<string, string | undefined> & SourceFlags): SourceSpec {
  if (flags.archiveOnly && !flags.archive) throw new Error('--archive-only needs --archive <dir>');
  return { backend: flags.archiveOnly ? null : backendOf(loadConfig(configFrom(flags))), archive: flags.archive ?? null };
}

function describeTrace(t: Trace): string {
  const d = t.decision;
  const lines = [
    `decision ${d.id} (#${d.seq}) at ${d.at} on ${d.nodeId}: ${d.decision ? 'allow' : 'deny'} (${d.layer}${d.code ? ` ${d.code}` : ''})${d.reasons.length ? ` by ${d.reasons.join(', ')}` : ''}`,
    `  policy set version ${d.policyVersion}${t.policy ? ` (published at position ${t.policy.position}, sha256 ${t.policy.sha256.slice(0, 16)}…)` : ''}; registry as of position ${d.logPosition}`,
    `  who for whom: ${t.chain.map((l) => `${l.type}::"${l.id}" (${l.role}${l.from === 'token' ? '' : `, from the ${l.from}`})`).join(' → ')}`,
  ];
  if (t.tokenUnverified) lines.push('  (the token was refused before its claims could be trusted: the chain is what the registry says)');
  if (t.grant) {
    const g = t.grant;
    lines.push(`  under ${g.human}'s grant ${g.id} to ${g.agent}, consented by ${g.consentedBy} at ${g.grantedAt} for "${g.purpose}", until ${g.expiresAt}: ${JSON.stringify(g.authorization_details)}`);
  }
  if (t.approval) {
    const a = t.approval;
    const answered = a.answeredBy ? `; ${a.status === 'denied' ? 'denied' : 'approved'} by ${a.answeredBy} at ${a.answeredAt} ("${a.reason}")` : `; ${a.status} then`;
    lines.push(`  approval ${a.id} of ${a.action} on ${a.resource.type}::"${a.resource.id}" for ${a.human}, asked of ${a.approvers.join(', ')} at ${a.requestedAt} by ${a.policies.join(', ')}${answered}`);
  }
  for (const a of t.agents) {
    lines.push(`  agent ${a.id}: ${a.status ?? 'not registered'} at that moment (version ${a.version}, owner ${a.owner ?? 'none'})`);
    for (const e of a.events) lines.push(`    ${String(e.position).padStart(6)} ${e.at} ${e.type}${e.actor ? ` by ${e.actor}` : ''}${Object.keys(e.detail).length ? ` ${JSON.stringify(e.detail)}` : ''}`);
  }
  return `${lines.join('\n')}\n`;
}

const n = (x: number) => x.toLocaleString('en-US');

/** The report in lines a person reads: the totals, then each record that differs. */
function describeReplay(r: ReplayReport, policiesDir?: string): string {
  const range = r.range.from === null ? 'no decisions in the range' : `${n(r.decisions)} decisions (seq ${n(r.range.from)}–${n(r.range.to!)})`;
  const lines = [r.mode === 'replay' ? `replayed ${range}, each against the registry and policy version of its log position` : `what-if: ${range} decided against the candidate policies in ${policiesDir}`];
  if (r.tokenFromRecord > 0) lines.push(`  ${n(r.tokenFromRecord)} token refusals taken from the record (the log never holds a token, so its signature cannot be checked again)`);
  if (r.mode === 'replay') lines.push(r.differing === 0 ? `  all ${n(r.decisions)} came out the same` : `  ${n(r.differing)} came out differently:`);
  else lines.push(r.differing === 0 ? '  no decision would change' : `  ${n(r.differing)} would change: ${n(r.allowToDeny)} allow→deny, ${n(r.denyToAllow)} deny→allow`);
  for (const x of r.records) {
    const was = `${x.recorded.decision ? 'allow' : 'deny'} (${x.recorded.layer}${x.recorded.code ? ` ${x.recorded.code}` : ''}${x.recorded.reasons.length ? `: ${x.recorded.reasons.join(', ')}` : ''})`;
    const now = x.replayed ? `${x.replayed.decision ? 'allow' : 'deny'} (${x.replayed.layer}${x.replayed.code ? ` ${x.replayed.code}` : ''}${x.replayed.reasons.length ? `: ${x.replayed.reasons.join(', ')}` : ''})` : 'no decision';
    lines.push(`  #${x.seq} ${x.at} ${x.subject.type}::"${x.subject.id}" ${x.action} ${x.resource.type}::"${x.resource.id}": ${x.change}`);
    lines.push(`      recorded ${was}; ${r.mode === 'replay' ? 'replayed' : 'candidate'} ${now}`);
  }
  if (r.differing > r.records.length) lines.push(`  … and ${n(r.differing - r.records.length)} more (--limit, or --json)`);
  return `${lines.join('\n')}\n`;
}

/** A finding as verify prints it: the chain (and node), the problem, the record, and where. */
function findingLine(f: Finding): string {
  const chain = f.node === undefined ? f.chain : `${f.chain} (node ${JSON.stringify(f.node)})`;
  const record = f.node !== undefined ? 'record' : { events: 'position', decisions: 'decision', anchors: 'anchor' }[f.chain];
  return `${chain}: ${f.problem} at ${record} ${f.at}: ${f.detail}`;
}

/** An intact audit trail: each chain's records and head (a node's chain on a line of its own). */
function summary(result: VerifyResult): string {
  const n = (x: number) => x.toLocaleString('en-US');
  const head = (h: ChainHead) => `head ${h.at} ${h.hash.slice(0, 16)}…`;
  const nodes = Object.entries(result.heads.chains);
  const lines = [`events: ${n(result.records.events)} records, chain intact, ${head(result.heads.events)}`];
  lines.push(`decisions: ${n(result.records.decisions)} records in ${n(nodes.length)} node chain${nodes.length === 1 ? '' : 's'}${result.heads.decisions.at > 0 ? ' and the shared chain from before them' : ''}, intact`);
  if (result.heads.decisions.at > 0) lines.push(`  shared chain: ${head(result.heads.decisions)}`);
  for (const [node, h] of nodes) lines.push(`  node ${JSON.stringify(node)}: ${head(h)}`);
  lines.push(result.anchorsChecked ? `anchors: ${n(result.records.anchors)} records, chain intact, ${head(result.heads.anchors)}` : 'anchors: not checked offline (they are kept in the database)');
  return `${lines.join('\n')}\n`;
}

/** An anchor file from an earlier verify; a missing file starts one (trust on first use). */
function readAnchor(file: string): Anchor | null {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  const head = (h: unknown) => typeof h === 'object' && h !== null && Number.isInteger((h as ChainHead).at) && typeof (h as ChainHead).hash === 'string';
  const parsed = JSON.parse(text) as Anchor;
  const chains = parsed?.chains;
  const chainsOk = chains === undefined || (typeof chains === 'object' && chains !== null && !Array.isArray(chains) && Object.values(chains).every(head));
  if (!head(parsed?.events) || !head(parsed?.decisions) || !chainsOk || (parsed.anchors !== undefined && !head(parsed.anchors))) {
    throw new Error(`${file} is not an anchor written by leash audit verify`);
  }
  return parsed;
}
