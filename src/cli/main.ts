import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { Command, Option } from 'commander';
import { adminTokenFile, backendOf, loadConfig, resolveAdminToken, type ConfigInput } from '../config.ts';
import type { ReplayReport } from '../audit/replay.ts';
import type { SourceSpec } from '../audit/replay-parallel.ts';
import type { Trace } from '../audit/trace.ts';
import type { Anchor, ChainHead } from '../audit/verify.ts';
import { readPolicyFiles } from '../authz/policy-files.ts';
import { lockEmbeddedDataDir } from './embedded-lock.ts';
import { configureTokens } from '../tokens/settings.ts';

/**
 * The commands; importing this module runs none of them (`runCli` does; the tests read every command's help).
 * Each command imports what it runs when it runs: a client command (a few HTTP calls) does not load the
 * server, the stores and Cedar, which through tsx cost seconds of CPU at every start.
 */
export const program = new Command('leash').description('Leash: authorization for AI agents').showHelpAfterError();

/** Each flag stands for an environment variable (the README's Configuration table); a flag wins over the variable. */
function configFrom(flags: Record<string, string | undefined>): ConfigInput {
  const env: ConfigInput = { ...process.env };
  const map: Record<string, keyof ConfigInput> = {
    port: 'PORT', host: 'HOST', databaseUrl: 'DATABASE_URL', natsUrl: 'NATS_URL', dataDir: 'LEASH_DATA_DIR',
    cedarDir: 'LEASH_CEDAR_DIR', nodeId: 'LEASH_NODE_ID', logLevel: 'LOG_LEVEL', stalenessMs: 'LEASH_STALENESS_MS', watchdogMs: 'LEASH_WATCHDOG_MS',
  };
  for (const [flag, name] of Object.entries(map)) if (flags[flag] !== undefined) env[name] = flags[flag];
  return env;
}

const withServerFlags = (cmd: Command) =>
  cmd
    .addOption(new Option('--port <port>', 'HTTP port').env('PORT'))
    .addOption(new Option('--host <host>', 'address to listen on (default 127.0.0.1)').env('HOST'))
    .addOption(new Option('--database-url <url>', 'Postgres URL; unset: embedded PGlite').env('DATABASE_URL'))
    .addOption(new Option('--nats-url <urls>', 'NATS server URL(s), comma-separated; unset: in-process bus (single node)').env('NATS_URL'))
    .addOption(new Option('--staleness-ms <ms>', 'broadcast silence after which the node stops trusting its caches (default 1000)').env('LEASH_STALENESS_MS'))
    .addOption(new Option('--watchdog-ms <ms>', 'how long the event loop may stand still before the process ends, for a supervisor to restart it (default 30000; 0: off)').env('LEASH_WATCHDOG_MS'))
    .addOption(new Option('--data-dir <dir>', 'embedded data dir (default ./.leash)').env('LEASH_DATA_DIR'))
    .addOption(new Option('--cedar-dir <dir>', 'Cedar schema and policies (default ./cedar)').env('LEASH_CEDAR_DIR'))
    .addOption(new Option('--node-id <id>', 'this node\'s id').env('LEASH_NODE_ID'))
    .addOption(new Option('--log-level <level>', 'pino log level').env('LOG_LEVEL'));

withServerFlags(program.command('serve').description('run a Leash node (embedded PGlite unless DATABASE_URL is set)')).action(async (flags) => {
  const config = loadConfig(configFrom(flags));
  const backend = backendOf(config);
  const unlock = lockEmbeddedDataDir(backend, 'leash serve');
  const { token, generatedAt } = resolveAdminToken(config);
  const [{ startNode }, { startWatchdog }] = await Promise.all([import('../node.ts'), import('./watchdog.ts')]);
  if (config.watchdogMs > 0) startWatchdog({ boundMs: config.watchdogMs, nodeId: config.nodeId });
  const node = await startNode({
    backend,
    adminToken: token,
    pepTokens: config.pepTokens,
    nodeId: config.nodeId,
    cedarDir: config.cedarDir,
    natsUrl: config.natsUrl,
    stalenessMs: config.stalenessMs,
    allowPrivateUrls: config.allowPrivateUrls,
    maxDelegationDepth: config.maxDelegationDepth,
    publicUrl: config.publicUrl,
    tokenAudience: config.tokenAudience,
    logger: { level: config.logLevel, redact: ['req.headers.authorization', 'req.headers["idempotency-key"]'] },
  });
  if (generatedAt) {
    // Shown once, and only to a person at a terminal (never through the logger): piped or
    // redirected, stdout goes to a log file, which must not hold the token. It stays 0600 in
    // the data dir either way.
    if (process.stdout.isTTY) process.stdout.write(`\nLeash operator token (shown once, stored in ${generatedAt}):\n\n  ${token}\n\n`);
    else process.stderr.write(`Leash operator token generated and stored in ${generatedAt} (not printed: stdout is not a terminal)\n`);
  }
  await node.app.listen({ port: config.port, host: config.host });
  node.app.log.info({ backend: node.connection.describe, broadcast: node.cluster.description, nodeId: config.nodeId, position: node.view.position }, 'leash is serving');
  const stop = async (signal: string) => {
    node.app.log.info({ signal }, 'shutting down');
    await node.close();
    unlock();
    process.exit(0);
  };
  process.once('SIGINT', () => void stop('SIGINT'));
  process.once('SIGTERM', () => void stop('SIGTERM'));
});

withServerFlags(program.command('migrate').description('bring the database schema up to date and exit')).action(async (flags) => {
  const backend = backendOf(loadConfig(configFrom(flags)));
  const unlock = lockEmbeddedDataDir(backend, 'leash migrate', { endOnSignal: true });
  const [{ connect }, { migrateToLatest }] = await Promise.all([import('../store/connect.ts'), import('../store/migrate.ts')]);
  const connection = await connect(backend);
  try {
    const applied = await migrateToLatest(connection.db);
    console.log(applied.length ? `applied: ${applied.join(', ')}` : `${connection.describe}: already up to date`);
  } finally {
    await connection.db.destroy();
    unlock();
  }
});

// ---- audit: the event and decision logs' hash chains, replay, trace, archive --------------

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
      for (const f of result.findings) process.stdout.write(`${f.chain}: ${f.problem} at ${f.chain === 'events' ? 'position' : 'decision'} ${f.at}: ${f.detail}\n`);
      if (!result.ok) {
        process.exitCode = 1;
        return;
      }
      for (const chain of ['events', 'decisions'] as const) {
        const head = result.heads[chain];
        process.stdout.write(`${chain}: ${result.records[chain].toLocaleString('en-US')} records, chain intact, head ${head.at} ${head.hash.slice(0, 16)}…\n`);
      }
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
      for (const s of result.written) process.stdout.write(`wrote ${s.file}: ${s.chain} ${n(s.first)}–${n(s.last)}\n`);
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
  if (!head(parsed?.events) || !head(parsed?.decisions)) throw new Error(`${file} is not an anchor written by leash audit verify`);
  return parsed;
}

// ---- API client commands -------------------------------------------------------------

interface ClientFlags {
  url?: string;
  token?: string;
  dataDir?: string;
  ifMatch?: string;
  idempotencyKey?: string;
}

function operatorToken(flags: ClientFlags): string {
  if (flags.token) return flags.token;
  if (process.env.LEASH_ADMIN_TOKEN) return process.env.LEASH_ADMIN_TOKEN;
  const file = adminTokenFile(loadConfig({ LEASH_DATA_DIR: flags.dataDir ?? process.env.LEASH_DATA_DIR }).dataDir);
  try {
    return readFileSync(file, 'utf8').trim();
  } catch {
    throw new Error(`no operator token: pass --token, set LEASH_ADMIN_TOKEN, or run next to the data dir holding ${file}`);
  }
}

async function call(flags: ClientFlags, method: string, path: string, body?: unknown): Promise<void> {
  const base = flags.url ?? process.env.LEASH_URL ?? `http://127.0.0.1:${process.env.PORT ?? 8080}`;
  const headers: Record<string, string> = { authorization: `Bearer ${operatorToken(flags)}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (flags.ifMatch) headers['if-match'] = `"${flags.ifMatch}"`;
  if (flags.idempotencyKey) headers['idempotency-key'] = flags.idempotencyKey;
  let url: URL;
  try {
    url = new URL(path, base);
  } catch {
    throw new Error(`${base} is not a URL (e.g. http://127.0.0.1:8080); set --url or LEASH_URL`);
  }
  let response: Response;
  try {
    response = await fetch(url, { method, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  } catch (err) {
    throw new Error(`cannot reach ${base} (${unreachable(err)}); is the server running? (set --url or LEASH_URL)`);
  }
  const text = await response.text();
  const out = response.ok ? process.stdout : process.stderr;
  try {
    out.write(`${JSON.stringify(JSON.parse(text), null, 2)}\n`);
  } catch {
    out.write(`${text}\n`);
  }
  if (!response.ok) process.exitCode = 1;
}

/** Why fetch could not get an answer, in words: it throws "fetch failed" with the reason as the cause. */
function unreachable(err: unknown): string {
  const cause = (err as { cause?: { code?: string; message?: string; errors?: { code?: string }[] } }).cause;
  const code = cause?.code ?? cause?.errors?.[0]?.code; // several addresses tried (localhost): an AggregateError
  const words: Record<string, string> = {
    ECONNREFUSED: 'connection refused',
    ECONNRESET: 'connection reset',
    ENOTFOUND: 'host not found',
    EAI_AGAIN: 'host not found',
    ETIMEDOUT: 'timed out',
    UND_ERR_CONNECT_TIMEOUT: 'timed out',
    EHOSTUNREACH: 'host unreachable',
    ENETUNREACH: 'network unreachable',
  };
  return (code && words[code]) ?? code ?? cause?.message ?? (err as Error).message;
}

const client = (cmd: Command) =>
  cmd
    .option('--url <url>', 'Leash base URL (default http://127.0.0.1:$PORT or $LEASH_URL)')
    .option('--token <token>', 'operator token (default $LEASH_ADMIN_TOKEN, else the data dir\'s admin-token)')
    .option('--data-dir <dir>', 'where to find the embedded admin-token')
    .option('--if-match <version>', 'expected version (412 if it moved)')
    .option('--idempotency-key <key>', 'retry-safe key');

/** A JSON body from --data '<json>' or --file path ('-' for stdin). */
function jsonBody(flags: { data?: string; file?: string }): unknown {
  const text = flags.data ?? (flags.file ? readFileSync(flags.file === '-' ? 0 : flags.file, 'utf8') : undefined);
  if (text === undefined) throw new Error('give the request body with --data \'<json>\' or --file <path>');
  return JSON.parse(text);
}

const list = (value: string, previous: string[] = []) => [...previous, value];

const humans = program.command('humans').description('people who own agents');
client(humans.command('create <id>').requiredOption('--email <email>').option('--group <id>', 'group (repeatable)', list))
  .action((id, flags) => call(flags, 'POST', '/v1/humans', { id, email: flags.email, groups: flags.group ?? [] }));
client(humans.command('list')).action((flags) => call(flags, 'GET', '/v1/humans'));
client(humans.command('get <id>')).action((id, flags) => call(flags, 'GET', `/v1/humans/${encodeURIComponent(id)}`));

const groups = program.command('groups').description('roles and teams');
client(groups.command('create <id>').option('--parent <id>', 'parent group (repeatable)', list))
  .action((id, flags) => call(flags, 'POST', '/v1/groups', { id, parents: flags.parent ?? [] }));
client(groups.command('list')).action((flags) => call(flags, 'GET', '/v1/groups'));

const agents = program.command('agents').description('the agent registry and lifecycle');
client(agents.command('list').option('--status <status>').option('--owner <id>').option('--tag <tag>')).action((flags) => {
  const query = new URLSearchParams();
  for (const k of ['status', 'owner', 'tag'] as const) if (flags[k]) query.set(k, flags[k]);
  return call(flags, 'GET', `/v1/agents${query.size ? `?${query}` : ''}`);
});
client(agents.command('get <id>')).action((id, flags) => call(flags, 'GET', `/v1/agents/${encodeURIComponent(id)}`));
client(agents.command('events <id>')).action((id, flags) => call(flags, 'GET', `/v1/agents/${encodeURIComponent(id)}/events`));
client(
  agents
    .command('register')
    .description('register an agent: the JSON body of POST /v1/agents, as in the README\'s agent registration example (id, owner, purpose, provenance, trustScore, credentials with the token pins, ceiling; optional groups, tags)')
    .option('--data <json>', 'the body')
    .option('--file <path>', 'a file holding the body (- for stdin)'),
)
  .action((flags) => call(flags, 'POST', '/v1/agents', jsonBody(flags)));
client(agents.command('discover <id>').requiredOption('--source <source>').requiredOption('--fingerprint <fp>'))
  .action((id, flags) => call(flags, 'POST', '/v1/agents/discover', { id, source: flags.source, fingerprint: flags.fingerprint }));
client(agents.command('authorize <id>').option('--data <json>', 'body, default {"grants":[]}').option('--file <path>'))
  .action((id, flags) => call(flags, 'POST', `/v1/agents/${encodeURIComponent(id)}/authorize`, flags.data || flags.file ? jsonBody(flags) : { grants: [] }));
client(agents.command('rotate <id>').option('--data <json>').option('--file <path>'))
  .action((id, flags) => call(flags, 'POST', `/v1/agents/${encodeURIComponent(id)}/rotate`, jsonBody(flags)));
for (const verb of ['suspend', 'retire'] as const) {
  client(agents.command(`${verb} <id>`).requiredOption('--reason <text>'))
    .action((id, flags) => call(flags, 'POST', `/v1/agents/${encodeURIComponent(id)}/${verb}`, { reason: flags.reason }));
}
const revocation = (cmd: Command) =>
  cmd
    .requiredOption('--reason <text>')
    .addOption(new Option('--mode <mode>').choices(['immediate', 'graceful', 'quarantine']).default('immediate'))
    .option('--grace <seconds>', 'grace period for --mode graceful (default 60)');
const revocationBody = (flags: { mode: string; reason: string; grace?: string }) => ({
  mode: flags.mode, reason: flags.reason, ...(flags.grace === undefined ? {} : { gracePeriodSeconds: Number(flags.grace) }),
});
client(revocation(agents.command('revoke <id>')))
  .action((id, flags) => call(flags, 'POST', `/v1/agents/${encodeURIComponent(id)}/revoke`, revocationBody(flags)));
client(revocation(program.command('kill-switch').description('revoke every live agent of an owner, with a tag, or all of them'))
  .option('--owner <id>').option('--tag <tag>').option('--all', 'every live agent'))
  .action((flags) => {
    const scopes = [flags.owner && { owner: flags.owner }, flags.tag && { tag: flags.tag }, flags.all && { all: true }].filter(Boolean);
    if (scopes.length !== 1) throw new Error('give exactly one of --owner, --tag or --all');
    return call(flags, 'POST', '/v1/kill-switch', { scope: scopes[0], ...revocationBody(flags) });
  });

const keys = program.command('keys').description('local agent keys, for trying Leash without an identity provider');
keys
  .command('generate <file>')
  .description('write an ES256 private JWK (0600) to <file> and print the public JWK to pin at registration')
  .option('--kid <kid>', 'key id', 'k1')
  .action(async (file: string, flags: { kid: string }) => {
    const { generateAgentKey } = await import('../tokens/mint.ts');
    const { privateJwk, publicJwk } = await generateAgentKey(flags.kid);
    writeFileSync(file, `${JSON.stringify(privateJwk)}\n`, { mode: 0o600, flag: 'wx' });
    process.stdout.write(`${JSON.stringify(publicJwk)}\n`);
  });

// `leash token` mints a token the agent signs itself (an agent that brings its own key);
// `leash token request` gets one from Leash's token endpoint. Options are positional, so each
// of the two reads its own --key, --agent and --details.
program.enablePositionalOptions();
const token = program
  .command('token')
  .description('mint a short-lived agent token signed with a local private JWK (or: token request)')
  .enablePositionalOptions()
  .option('--key <file>', 'private JWK file (from `leash keys generate`); required')
  .option('--agent <id>', 'the agent; required')
  .option('--details <json>', 'authorization_details (RFC 9396), a JSON array; required')
  .option('--on-behalf-of <human>', 'delegating human: the token gets sub=<human>, act.sub=<agent>')
  .option('--issuer <iss>', 'issuer pinned for the agent', 'https://idp.example')
  .option('--audience <aud>', 'audience pinned for the agent', 'leash')
  .option('--lifetime <seconds>', 'token lifetime', '120')
  .action(async (flags: { key?: string; agent?: string; details?: string; onBehalfOf?: string; issuer: string; audience: string; lifetime: string }) => {
    const { key, agent, details } = tokenFlags(flags);
    const { mintAgentToken } = await import('../tokens/mint.ts');
    const token = await mintAgentToken({
      privateJwk: key,
      issuer: flags.issuer,
      audience: flags.audience,
      agent,
      ...(flags.onBehalfOf ? { onBehalfOf: flags.onBehalfOf } : {}),
      authorizationDetails: details,
      lifetimeSeconds: Number(flags.lifetime),
    });
    process.stdout.write(`${token}\n`);
  });

/** The key, agent and details every token command needs. */
function tokenFlags(flags: { key?: string; agent?: string; details?: string }) {
  const missing = (['key', 'agent', 'details'] as const).filter((k) => flags[k] === undefined);
  if (missing.length > 0) throw new Error(`required: ${missing.map((k) => `--${k}`).join(', ')}`);
  const details = JSON.parse(flags.details!) as unknown;
  if (!Array.isArray(details)) throw new Error('--details must be a JSON array');
  return { key: JSON.parse(readFileSync(flags.key!, 'utf8')) as Record<string, unknown>, agent: flags.agent!, details };
}

token
  .command('request')
  .description('get a token from Leash (POST /oauth/token): the agent authenticates with a client assertion signed by its key')
  .option('--key <file>', 'the agent\'s private JWK file; required')
  .option('--agent <id>', 'the agent; required')
  .option('--details <json>', 'authorization_details (RFC 9396), a JSON array; required')
  .option('--resource <uri>', 'the token\'s audience (RFC 8707); default the server\'s LEASH_TOKEN_AUDIENCE')
  .option('--url <url>', 'Leash base URL (default http://127.0.0.1:$PORT or $LEASH_URL)')
  .action(async (flags: { key?: string; agent?: string; details?: string; resource?: string; url?: string }) => {
    const { key, agent, details } = tokenFlags(flags);
    const base = flags.url ?? process.env.LEASH_URL ?? `http://127.0.0.1:${process.env.PORT ?? 8080}`;
    const { requestToken } = await import('../tokens/request.ts');
    const answer = await requestToken({ base, privateJwk: key, agent, details, ...(flags.resource ? { resource: flags.resource } : {}) }).catch((err: Error) => {
      throw new Error(`cannot reach ${base} (${unreachable(err)}); is the server running? (set --url or LEASH_URL)`);
    });
    if ('error' in answer) throw new Error(`${answer.error}: ${answer.error_description ?? ''}`);
    process.stdout.write(`${answer.access_token}\n`);
  });

/** Runs the command line (`leash.js`). A failure is one line on stderr, never a stack trace. */
export function runCli(argv: string[]): void {
  program.parseAsync(argv).catch((err: Error) => {
    process.stderr.write(`leash: ${err.message}\n`);
    process.exit(1);
  });
}
