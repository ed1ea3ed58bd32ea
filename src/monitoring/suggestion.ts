import { setImmediate as yieldToLoop } from 'node:timers/promises';
import type { Kysely } from 'kysely';
import { grantPolicyId, grantsInUse } from '../authz/agent-decision.ts';
import { cedarType, entityKey, type EvaluationRequest } from '../authz/engine.ts';
import type { CompiledPolicySet } from '../authz/policy-set.ts';
import type { RecordedRequest, StoredDecision } from '../audit/decision-log.ts';
import { isReplayable, loadHistory, replay, SharedContexts, type History, type ReplayedRecord } from '../audit/replay.ts';
import { SubjectSource } from '../audit/source.ts';
import type { AgentRecord, TemplateLink } from '../registry/agent.ts';
import type { EntityUid } from '../registry/cedar-entities.ts';
import type { Database } from '../store/events.table.ts';
import { changeFor, linkKey, MAX_LINKS, proposalOf, Sightings, type GrantChange } from './least-privilege.ts';

// SPEC §9 least privilege: read an agent's recorded decisions in a window (through the
// decision log's per-agent index), see which of its grants each allowed request used and on
// what, propose the narrowest links that cover all of it (least-privilege.ts), and decide the
// whole window again with the proposal in place of the grants (the replay's what-if).

/** Most decisions one suggestion reads; past it the window is cut short and the answer says so. */
export const MAX_SUGGESTION_DECISIONS = 100_000;

export interface SuggestionRequest {
  agent: { record: AgentRecord; version: number };
  /** The policy set in force: the templates the current grants and the proposal link. */
  policies: CompiledPolicySet;
  days: number;
  collapse: boolean;
  now: Date;
  /** Tests: a lower cap. */
  maxDecisions?: number;
}

export interface Flip {
  id: string;
  seq: number;
  at: string;
  action: string;
  resource: EntityUid;
  change: string;
}

export interface Suggestion {
  agent: string;
  /** The agent's version the proposal was made from (`If-Match` when applying it). */
  version: number;
  window: { since: string; until: string; days: number };
  decisions: { allowed: number; denied: number };
  current: TemplateLink[];
  proposed: TemplateLink[];
  changes: GrantChange[];
  whatIf: { decisions: number; allowToDeny: number; denyToAllow: number; undecidable: number; flips: Flip[] };
  capped: boolean;
  note?: string;
}

/** What one pass over the window saw: counts, the hierarchy, and each current grant's resources. */
interface Observed {
  allowed: number;
  denied: number;
  lastSeq: number;
  capped: boolean;
  seen: Sightings;
  used: Map<string, EntityUid>[];
}

const uidOf = (x: unknown, aliases: Record<string, string>): EntityUid | null => {
  const u = x as { type?: unknown; id?: unknown } | null;
  return u && typeof u.type === 'string' && typeof u.id === 'string' ? { type: cedarType(u.type, aliases), id: u.id } : null;
};

/** The entities a recorded request names (its resource, and its context's entities, each with its parents). */
function sighted(request: EvaluationRequest, context: unknown, aliases: Record<string, string>, seen: Sightings): EntityUid | null {
  const entities = (context as { entities?: unknown } | undefined)?.entities;
  const resource = uidOf(request.resource, aliases);
  if (resource) seen.saw(resource, []);
  if (!Array.isArray(entities)) return resource;
  for (const e of entities as { uid?: unknown; parents?: unknown }[]) {
    const uid = uidOf(e?.uid, aliases);
    if (!uid) continue;
    const parents = Array.isArray(e.parents) ? e.parents.map((p) => uidOf(p, aliases)).filter((p): p is EntityUid => p !== null) : [];
    seen.saw(uid, parents);
  }
  return resource;
}

async function observe(source: SubjectSource, history: History, request: SuggestionRequest, max: number): Promise<Observed> {
  const { record } = request.agent;
  const current = record.grants.map(linkKey);
  const out: Observed = { allowed: 0, denied: 0, lastSeq: 0, capped: false, seen: new Sightings(), used: current.map(() => new Map()) };
  const contexts = new SharedContexts(source);
  let read = 0;
  outer: for await (const page of source.decisions()) {
    for (const d of page as StoredDecision[]) {
      contexts.saw(d);
      if (!isReplayable(d.request)) continue;
      await history.policies.ready(d.policyVersion);
      const set = history.policies.set(d.policyVersion);
      const recorded = d.request as RecordedRequest & EvaluationRequest;
      // The subject id is the index's key, whatever its type: a person's request under the agent's id is not the agent's.
      if (uidOf(recorded.subject, set?.source.aliases ?? {})?.type !== 'Agent') continue;
      if (read >= max) {
        out.capped = true;
        break outer;
      }
      if (++read % 500 === 0) await yieldToLoop();
      out.lastSeq = d.seq;
      if (d.decision) out.allowed++;
      else out.denied++;
      const context = typeof recorded.contextOf === 'string' ? await contexts.of(recorded.contextOf) : recorded.context;
      const resource = sighted(recorded, context, set?.source.aliases ?? {}, out.seen);
      if (!d.decision || !set || !resource) continue;
      // Which grants permitted it: the reasons name them by their place among the grants in
      // use then (the registry as of the decision's position), matched to today's by value.
      const then = history.registry.at(d.logPosition).agents.get(record.id)?.record;
      const inUse = then ? grantsInUse(set, then) : [];
      inUse.forEach((link, i) => {
        const at = d.reasons.includes(grantPolicyId(record.id, i)) ? current.indexOf(linkKey(link)) : -1;
        if (at >= 0) out.used[at]!.set(entityKey(resource), resource);
      });
    }
  }
  return out;
}

const flipOf = (r: ReplayedRecord): Flip => ({ id: r.id, seq: r.seq, at: r.at, action: r.action, resource: r.resource, change: r.change });

/** The least-privilege suggestion for one agent over the last `days` days. */
export async function suggestGrants(db: Kysely<Database>, request: SuggestionRequest): Promise<Suggestion> {
  const { record, version } = request.agent;
  const max = request.maxDecisions ?? MAX_SUGGESTION_DECISIONS;
  const since = new Date(request.now.getTime() - request.days * 86_400_000);
  const source = new SubjectSource(db, record.id, since);
  const history = await loadHistory(source);
  const seen = await observe(source, history, request, max);
  const changes = record.grants.map((link, i) =>
    changeFor({ link, template: request.policies.templateEntries[link.template], used: [...seen.used[i]!.values()] }, seen.seen, request.collapse),
  );
  const proposed = proposalOf(changes);
  const read = seen.allowed + seen.denied;
  // The same records again (up to the last one read), each decided with the proposal as its grants.
  const report = read === 0 ? null : await replay(source, { grants: { agent: record.id, links: proposed }, to: seen.lastSeq, maxDecisions: max, keep: 1_000, takeTurns: true }, history);
  const notes = [
    read === 0 ? `no decisions of ${record.id} recorded in the last ${request.days} days: nothing shows what it uses, so the proposal is empty (a longer window may show more)` : '',
    seen.capped ? `only the first ${max.toLocaleString('en')} decisions of the window were read` : '',
    seen.seen.full ? `the window's requests describe more than ${MAX_LINKS.toLocaleString('en')} entities and links to parents, more than one suggestion holds: no folder is proposed, only the resources used` : '',
  ].filter(Boolean);
  return {
    agent: record.id, version,
    window: { since: since.toISOString(), until: request.now.toISOString(), days: request.days },
    decisions: { allowed: seen.allowed, denied: seen.denied },
    current: record.grants, proposed, changes,
    whatIf: {
      decisions: report?.decisions ?? 0, allowToDeny: report?.allowToDeny ?? 0, denyToAllow: report?.denyToAllow ?? 0,
      undecidable: report ? report.differing - report.allowToDeny - report.denyToAllow : 0, flips: report?.records.map(flipOf) ?? [],
    },
    capped: seen.capped,
    ...(notes.length ? { note: notes.join('; ') } : {}),
  };
}
