import { Option, type Command } from 'commander';
import { call, client, jsonBody, list } from './client.ts';
import { program } from './program.ts';

// The registry and lifecycle over the admin API: humans, groups, agents, the kill switch.

const humans = program.command('humans').description('people who own agents');
client(humans.command('create <id>').requiredOption('--email <email>').option('--group <id>', 'group (repeatable)', list))
  .action((id, flags) => call(flags, 'POST', '/v1/humans', { id, email: flags.email, groups: flags.group ?? [] }));
client(humans.command('list')).action((flags) => call(flags, 'GET', '/v1/humans'));
client(humans.command('get <id>')).action((id, flags) => call(flags, 'GET', `/v1/humans/${encodeURIComponent(id)}`));
client(
  humans
    .command('grant <human>')
    .description('the human lets an agent act for them within --details until --expires (POST /v1/humans/{id}/grants); with a person\'s token (--token) it is their own consent, with the operator token it is given for them')
    .requiredOption('--agent <id>')
    .requiredOption('--details <json>', 'authorization_details (RFC 9396), a JSON array of leash:cedar entries')
    .requiredOption('--expires <time>', 'when the grant ends (ISO 8601, at most 366 days ahead)')
    .requiredOption('--purpose <text>'),
).action((human, flags) => {
  let details: unknown;
  try {
    details = JSON.parse(flags.details);
  } catch {
    throw new Error('--details must be a JSON array (it is not JSON)');
  }
  return call(flags, 'POST', `/v1/humans/${encodeURIComponent(human)}/grants`, { agent: flags.agent, authorization_details: details, expiresAt: flags.expires, purpose: flags.purpose });
});
client(humans.command('grants <human>').description('the human\'s grants, each active, expired or revoked')).action((human, flags) => call(flags, 'GET', `/v1/humans/${encodeURIComponent(human)}/grants`));
client(humans.command('revoke-grant <human> <grantId>').description('withdraw a grant: every token under it stops on every node before this returns').requiredOption('--reason <text>'))
  .action((human, grantId, flags) => call(flags, 'POST', `/v1/humans/${encodeURIComponent(human)}/grants/${encodeURIComponent(grantId)}/revoke`, { reason: flags.reason }));

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
client(agents.command('clear-finding <id>').description('clear a monitoring finding (after looking into it): the trust score it took comes back; a contained agent still needs authorize')
  .addOption(new Option('--detector <name>').choices(['rate_spike', 'deny_burst', 'new_resource', 'new_action', 'off_hours', 'ceiling_probe']).makeOptionMandatory())
  .requiredOption('--reason <text>'))
  .action((id, flags) => call(flags, 'POST', `/v1/agents/${encodeURIComponent(id)}/clear-finding`, { detector: flags.detector, reason: flags.reason }));
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
