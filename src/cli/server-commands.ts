import { backendOf, loadConfig, resolveAdminToken } from '../config.ts';
import { lockEmbeddedDataDir } from './embedded-lock.ts';
import { program } from './program.ts';
import { configFrom, withServerFlags } from './server-flags.ts';

// Running a node, and bringing its database up to date.

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
    humanPins: config.humanPins,
    approvalTtlSeconds: config.approvalTtlSeconds,
    approvalWebhook: config.approvalWebhook,
    monitoring: config.monitoring ? 'log' : null,
    metricsToken: config.metricsToken,
    metrics: config.metrics,
    // JSON lines for a log collector; on a terminal, pino-pretty makes them readable (same fields, same redaction).
    logger: {
      level: config.logLevel, redact: ['req.headers.authorization', 'req.headers["idempotency-key"]'],
      ...(process.stdout.isTTY ? { transport: { target: 'pino-pretty', options: { translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } } } : {}),
    },
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
