import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { Command, Option } from 'commander';
import { adminTokenFile, backendOf, loadConfig, resolveAdminToken, type ConfigInput } from '../config.ts';
import { verifyAudit, type Anchor, type ChainHead } from '../audit/verify.ts';
import { startNode } from '../node.ts';
import { progress } from './progress.ts';
import { connect } from '../store/connect.ts';
import { migrateToLatest } from '../store/migrate.ts';
import { generateAgentKey, mintAgentToken } from '../tokens/mint.ts';

const program = new Command('leash').description('Leash: authorization for AI agents').showHelpAfterError();

/** Flags mirror the env vars of SPEC §1; a flag wins over the variable. */
function configFrom(flags: Record<string, string | undefined>): ConfigInput {
  const env: ConfigInput = { ...process.env };
  const map: Record<string, keyof ConfigInput> = {
    port: 'PORT', host: 'HOST', databaseUrl: 'DATABASE_URL', natsUrl: 'NATS_URL', dataDir: 'LEASH_DATA_DIR',
    cedarDir: 'LEASH_CEDAR_DIR', nodeId: 'LEASH_NODE_ID', logLevel: 'LOG_LEVEL', stalenessMs: 'LEASH_STALENESS_MS',
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
    .addOption(new Option('--data-dir <dir>', 'embedded data dir (default ./.leash)').env('LEASH_DATA_DIR'))
    .addOption(new Option('--cedar-dir <dir>', 'Cedar schema and policies (default ./cedar)').env('LEASH_CEDAR_DIR'))
    .addOption(new Option('--node-id <id>', 'this node\'s id').env('LEASH_NODE_ID'))
    .addOption(new Option('--log-level <level>', 'pino log level').env('LOG_LEVEL'));

withServerFlags(program.command('serve').description('run a Leash node (embedded PGlite unless DATABASE_URL is set)')).action(async (flags) => {
  const config = loadConfig(configFrom(flags));
  const { token, generatedAt } = resolveAdminToken(config);
  const node = await startNode({
    backend: backendOf(config),
    adminToken: token,
    pepTokens: config.pepTokens,
    nodeId: config.nodeId,
    cedarDir: config.cedarDir,
    natsUrl: config.natsUrl,
    stalenessMs: config.stalenessMs,
    logger: { level: config.logLevel, redact: ['req.headers.authorization', 'req.headers["idempotency-key"]'] },
  });
  if (generatedAt) {
    // Printed once, on the terminal only (never through the logger), then kept 0600.
    process.stdout.write(`\nLeash operator token (shown once, stored in ${generatedAt}):\n\n  ${token}\n\n`);
  }
  await node.app.listen({ port: config.port, host: config.host });
  node.app.log.info({ backend: node.connection.describe, broadcast: node.cluster.description, nodeId: config.nodeId, position: node.view.position }, 'leash is serving');
  const stop = async (signal: string) => {
    node.app.log.info({ signal }, 'shutting down');
    await node.close();
    process.exit(0);
  };
  process.once('SIGINT', () => void stop('SIGINT'));
  process.once('SIGTERM', () => void stop('SIGTERM'));
});

withServerFlags(program.command('migrate').description('bring the database schema up to date and exit')).action(async (flags) => {
  const config = loadConfig(configFrom(flags));
  const connection = await connect(backendOf(config));
  try {
    const applied = await migrateToLatest(connection.db);
    console.log(applied.length ? `applied: ${applied.join(', ')}` : `${connection.describe}: already up to date`);
  } finally {
    await connection.db.destroy();
  }
});

// ---- audit (SPEC §8) -------------------------------------------------------------------

const audit = program.command('audit').description('check and work with the audit trail');
withServerFlags(audit.command('verify'))
  .description('walk the event and decision hash chains; name the first record edited, deleted, inserted or reordered (exit 1), or print a summary (exit 0)')
  .option('--anchor <file>', 'heads seen by an earlier verify (JSON): the chains must still reach them unchanged; rewritten with the new heads when intact. Keep it where the database\'s admins cannot write.')
  .action(async (flags: Record<string, string | undefined> & { anchor?: string }) => {
    const config = loadConfig(configFrom(flags));
    const anchor = flags.anchor ? readAnchor(flags.anchor) : null;
    const connection = await connect(backendOf(config));
    const bar = progress();
    try {
      const result = await verifyAudit(connection.db, { anchor, progress: (chain, done, total) => bar.update(chain, done, total) });
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
      await connection.db.destroy();
    }
  });

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
  const response = await fetch(new URL(path, base), { method, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  const text = await response.text();
  const out = response.ok ? process.stdout : process.stderr;
  try {
    out.write(`${JSON.stringify(JSON.parse(text), null, 2)}\n`);
  } catch {
    out.write(`${text}\n`);
  }
  if (!response.ok) process.exitCode = 1;
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
client(agents.command('register').description('register an agent (body as in SPEC §7)').option('--data <json>').option('--file <path>'))
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
    const { privateJwk, publicJwk } = await generateAgentKey(flags.kid);
    writeFileSync(file, `${JSON.stringify(privateJwk)}\n`, { mode: 0o600, flag: 'wx' });
    process.stdout.write(`${JSON.stringify(publicJwk)}\n`);
  });

program
  .command('token')
  .description('mint a short-lived agent token signed with a local private JWK')
  .requiredOption('--key <file>', 'private JWK file (from `leash keys generate`)')
  .requiredOption('--agent <id>', 'the agent')
  .requiredOption('--details <json>', 'authorization_details (RFC 9396), a JSON array')
  .option('--on-behalf-of <human>', 'delegating human: the token gets sub=<human>, act.sub=<agent>')
  .option('--issuer <iss>', 'issuer pinned for the agent', 'https://idp.example')
  .option('--audience <aud>', 'audience pinned for the agent', 'leash')
  .option('--lifetime <seconds>', 'token lifetime', '120')
  .action(async (flags: { key: string; agent: string; details: string; onBehalfOf?: string; issuer: string; audience: string; lifetime: string }) => {
    const details = JSON.parse(flags.details) as unknown;
    if (!Array.isArray(details)) throw new Error('--details must be a JSON array');
    const token = await mintAgentToken({
      privateJwk: JSON.parse(readFileSync(flags.key, 'utf8')),
      issuer: flags.issuer,
      audience: flags.audience,
      agent: flags.agent,
      ...(flags.onBehalfOf ? { onBehalfOf: flags.onBehalfOf } : {}),
      authorizationDetails: details,
      lifetimeSeconds: Number(flags.lifetime),
    });
    process.stdout.write(`${token}\n`);
  });

program.parseAsync(process.argv).catch((err: Error) => {
  process.stderr.write(`leash: ${err.message}\n`);
  process.exit(1);
});
