import { Command, Option } from 'commander';
import type { ConfigInput } from '../config.ts';

/** Each flag stands for an environment variable (the README's Configuration table); a flag wins over the variable. */
export function configFrom(flags: Record<string, string | undefined>): ConfigInput {
  const env: ConfigInput = { ...process.env };
  const map: Record<string, keyof ConfigInput> = {
    port: 'PORT', host: 'HOST', databaseUrl: 'DATABASE_URL', natsUrl: 'NATS_URL', dataDir: 'LEASH_DATA_DIR',
    cedarDir: 'LEASH_CEDAR_DIR', nodeId: 'LEASH_NODE_ID', logLevel: 'LOG_LEVEL', stalenessMs: 'LEASH_STALENESS_MS', watchdogMs: 'LEASH_WATCHDOG_MS',
  };
  for (const [flag, name] of Object.entries(map)) if (flags[flag] !== undefined) env[name] = flags[flag];
  return env;
}

export const withServerFlags = (cmd: Command) =>
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
