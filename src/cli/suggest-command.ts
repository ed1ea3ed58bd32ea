import { client, print, send, type ClientFlags } from './client.ts';
import { program } from './program.ts';
import type { Suggestion } from '../monitoring/suggestion.ts';

// `leash suggest <agent>`: the least-privilege suggestion (GET /v1/agents/{id}/suggestion) as
// a table, or its JSON; with --apply, the proposal becomes the agent's grants.

const uid = (v: unknown) => {
  const u = v as { type?: string; id?: string } | undefined;
  return u ? `${u.type}::${JSON.stringify(u.id)}` : '?';
};
const linkText = (l: { template: string; values: Record<string, unknown> }) =>
  [l.template, ...Object.entries(l.values).map(([slot, v]) => `${slot}=${uid(v)}`)].join('  ');

function table(s: Suggestion): string {
  const lines = [
    `${s.agent} over the last ${s.window.days} days (${s.window.since} – ${s.window.until}): ${s.decisions.allowed} allowed, ${s.decisions.denied} denied${s.capped ? ' (capped)' : ''}`,
    ...(s.note ? [`  note: ${s.note}`] : []),
    'changes:',
    ...(s.changes.length ? s.changes.map((c) => `  ${c.kind.padEnd(8)} ${c.removes}`) : ['  (the agent has no grants)']),
    'proposed grants:',
    ...(s.proposed.length ? s.proposed.map((l) => `  ${linkText(l)}`) : ['  (none)']),
    `what-if over ${s.whatIf.decisions} decisions: ${s.whatIf.allowToDeny} allow→deny, ${s.whatIf.denyToAllow} deny→allow${s.whatIf.undecidable ? `, ${s.whatIf.undecidable} undecidable` : ''}`,
    ...s.whatIf.flips.map((f) => `  #${f.seq} ${f.at} ${f.action} ${uid(f.resource)}: ${f.change}`),
  ];
  return `${lines.join('\n')}\n`;
}

/**
 * The proposal as the agent's grants: authorize takes an agent that is not active, so an active
 * one is suspended first; both calls carry the version the proposal was made from onwards
 * (If-Match; --if-match gives another), so grants changed meanwhile refuse the apply (412)
 * instead of being overwritten.
 */
async function apply(given: ClientFlags, s: Suggestion): Promise<void> {
  // Two writes: each gets its own If-Match below, and an idempotency key would be reused by the second.
  const flags = { ...given, ifMatch: undefined, idempotencyKey: undefined };
  // A recorded deny the proposal would allow is a widening (the hierarchy the PEPs described
  // changed in the window: a folder proposed inside the grant was seen outside it too).
  if (s.whatIf.allowToDeny > 0 || s.whatIf.denyToAllow > 0 || s.whatIf.undecidable > 0) {
    throw new Error(`not applied: the proposal would deny ${s.whatIf.allowToDeny} recorded allow(s) and would allow ${s.whatIf.denyToAllow} recorded deny(s) (${s.whatIf.undecidable} undecidable); see the what-if above`);
  }
  const path = `/v1/agents/${encodeURIComponent(s.agent)}`;
  const agent = await send(flags, 'GET', path);
  if (!agent.ok) return print(agent);
  // --if-match: the caller's own expectation of the version (412 if the agent is elsewhere).
  let version = given.ifMatch ? Number(given.ifMatch) : s.version;
  if ((agent.json as { status?: string }).status === 'active') {
    const suspended = await send(flags, 'POST', `${path}/suspend`, { reason: 'applying a least-privilege suggestion (leash suggest --apply)' }, { 'if-match': `"${version}"` });
    if (!suspended.ok) return print(suspended);
    version = (suspended.json as { version: number }).version;
  }
  print(await send(flags, 'POST', `${path}/authorize`, { grants: s.proposed }, { 'if-match': `"${version}"` }));
}

client(
  program
    .command('suggest <agent>')
    .description('least privilege: the narrowest grants covering what the agent was allowed in the last days, what each change removes, and the what-if of the proposal on that window (GET /v1/agents/{id}/suggestion)')
    .option('--days <n>', 'the window, 1..90 days', '30')
    .option('--collapse', 'propose a folder for resources that share it, even when other children of it went unused')
    .option('--apply', 'make the proposal the agent\'s grants (POST /v1/agents/{id}/authorize; an active agent is suspended first, and needs new tokens after)')
    .option('--json', 'print the suggestion as JSON'),
).action(async (agent: string, flags: ClientFlags & { days: string; collapse?: boolean; apply?: boolean; json?: boolean }) => {
  const query = new URLSearchParams({ days: flags.days, ...(flags.collapse ? { collapse: 'true' } : {}) });
  const answer = await send({ ...flags, ifMatch: undefined }, 'GET', `/v1/agents/${encodeURIComponent(agent)}/suggestion?${query}`);
  if (!answer.ok) return print(answer);
  const suggestion = answer.json as Suggestion;
  if (flags.json) print(answer);
  else process.stdout.write(table(suggestion));
  if (flags.apply) await apply(flags, suggestion);
});
