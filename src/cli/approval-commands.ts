import { Option } from 'commander';
import { call, client } from './client.ts';
import { program } from './program.ts';

// Approvals over the admin API: the requests an `@approval` permit holds back until a
// designated person answers. With a person's token (--token) they answer for themselves; with
// the operator token, --approver names the person answered for (recorded as break-glass).

const approvals = program.command('approvals').description('requests waiting for a person\'s approval');
const id = (s: string) => encodeURIComponent(s);

client(approvals.command('list').description('newest first; a person sees those addressed to them and to their agents')
  .addOption(new Option('--status <status>', 'only these').choices(['pending', 'approved', 'denied', 'used', 'expired']))
  .option('--agent <id>', 'only this agent\'s')
  .option('--limit <n>', '1..500, default 100'))
  .action((flags) => {
    const query = new URLSearchParams(Object.entries({ status: flags.status, agent: flags.agent, limit: flags.limit }).filter((e): e is [string, string] => e[1] !== undefined));
    return call(flags, 'GET', `/v1/approvals${query.size ? `?${query}` : ''}`);
  });

client(approvals.command('show <approvalId>').description('one approval: the request it is bound to, who may answer, and its state')
  .option('--wait <seconds>', 'while it is pending, wait up to this long (0..60) for the answer'))
  .action((approvalId, flags) => call(flags, 'GET', `/v1/approvals/${id(approvalId)}${flags.wait ? `?wait=${encodeURIComponent(flags.wait)}` : ''}`));

for (const verb of ['approve', 'deny'] as const) {
  client(approvals.command(`${verb} <approvalId>`)
    .description(verb === 'approve' ? 'let the request it is bound to go through, once' : 'refuse the request it is bound to')
    .requiredOption('--reason <text>', 'why, for the record')
    .option('--approver <human>', 'with the operator token: the approver answered for'))
    .action((approvalId, flags) => call(flags, 'POST', `/v1/approvals/${id(approvalId)}/${verb}`, { reason: flags.reason, ...(flags.approver ? { approver: flags.approver } : {}) }));
}
