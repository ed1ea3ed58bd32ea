import { Option } from 'commander';
import { call, client } from './client.ts';
import { program } from './program.ts';

// The decision log over the admin API: find a decision (its id) to trace.

const decisions = program.command('decisions').description('the decision log, newest first');
client(decisions.command('list')
  .option('--agent <id>', "only this agent's decisions")
  .addOption(new Option('--decision <outcome>', 'only allows or only denies').choices(['allow', 'deny']))
  .option('--since <instant>', 'recorded at or after (ISO 8601)')
  .option('--until <instant>', 'recorded before (ISO 8601)')
  .option('--limit <n>', '1..1000 (default 100)')
  .option('--after <cursor>', "the previous page's next"))
  .action((flags) => {
    const query = new URLSearchParams();
    for (const k of ['agent', 'since', 'until', 'limit', 'after'] as const) if (flags[k] !== undefined) query.set(k, flags[k]);
    if (flags.decision) query.set('decision', String(flags.decision === 'allow'));
    return call(flags, 'GET', `/v1/decisions${query.size ? `?${query}` : ''}`);
  });
