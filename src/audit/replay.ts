import { canonicalJson } from '../canonical-json.ts';
import { decide } from '../authz/agent-decision.ts';
import { DecisionCaches } from '../authz/decision-caches.ts';
import { Lru } from '../authz/preparsed-slots.ts';
import type { Decision, EvaluationRequest } from '../authz/engine.ts';
import { checkOffThread } from '../authz/policy-compiler.ts';
import { compilePolicySet, prepareCompiled, type CompiledPolicySet, type PolicySetSource } from '../authz/policy-set.ts';
import { PolicyHistory } from '../authz/policy-view.ts';
import type { AgentRecord, TemplateLink } from '../registry/agent.ts';
import { agentEntity } from '../registry/cedar-entities.ts';
import { RegistryHistory, Versioned, type Lookup, type RegistryState } from '../registry/registry-view.ts';
import { ADMIN_RECORD_KIND } from '../humans/admin.ts';
import { EXCHANGE_RECORD_KIND } from '../tokens/token-exchange.ts';
import { recordedTokenVerifier } from '../tokens/verify.ts';
import type { RecordedRequest, StoredDecision } from './decision-log.ts';
import type { AuditSource } from './source.ts';
import { Turns } from '../turns.ts';

// SPEC §8 replay and what-if. The registry and the policy sets are rebuilt from the event log
// as of each decision's log position, and the recorded request is decided again at the
// recorded instant, through the same code a node runs. Replay expects every outcome to come out
// the same; what-if decides against a candidate policy set and reports what would flip.

export interface ReplayRange {
  /** First and last sequence numbers (inclusive). */
  from?: number;
  to?: number;
  /** Recorded at or after / before. */
  since?: Date;
  until?: Date;
}

export interface ReplayOptions extends ReplayRange {
  /** What-if: decide against this set instead of the recorded versions. */
  candidate?: PolicySetSource;
  /** What-if: decide with this agent's grants replaced by these at every position (see `withGrants`). */
  grants?: AsIfGrants;
  /** Stop after this many decisions (the report says where to continue). */
  maxDecisions?: number;
  /** How many differing records the report lists (all are counted). Default 1,000. */
  keep?: number;
  progress?: (stage: 'events' | 'decisions', done: number, total: number) => void;
  /** Give other callers turns (every 2 ms, turns.ts) while it runs: a server keeps serving. */
  takeTurns?: boolean;
}

export interface Outcome {
  decision: boolean;
  layer: string;
  code: string | null;
  reasons: string[];
  policyVersion: number;
  shadow?: StoredDecision['shadow'];
}

export interface ReplayedRecord {
  seq: number;
  id: string;
  at: string;
  logPosition: number;
  subject: { type: string; id: string };
  action: string;
  resource: { type: string; id: string };
  recorded: Outcome;
  /** What the replay (or the candidate set) decided; null when it could not decide. */
  replayed: Outcome | null;
  /** what-if: 'allow→deny' or 'deny→allow'; replay: what differs. */
  change: string;
}

export interface ReplayReport {
  mode: 'replay' | 'what-if';
  /** Decisions in the range, all decided again. */
  decisions: number;
  /** Of those, how many had their token refused before its claims were trusted: that refusal is taken from the record. */
  tokenFromRecord: number;
  /** Replay: records that came out differently. What-if: decisions that would flip. */
  differing: number;
  allowToDeny: number;
  denyToAllow: number;
  /** The first `keep` of them, in sequence order. */
  records: ReplayedRecord[];
  range: { from: number | null; to: number | null };
  /** Where to continue when `maxDecisions` stopped the run early; null when the range is done. */
  next: number | null;
  /** Combined Cedar calls the decisions needed, and how many were answered from memory (identical inputs). */
  memory: { asked: number; remembered: number };
}

/** The registry and the policy versions at every position, folded once from the source's events. */
export interface History {
  registry: Pick<RegistryHistory, 'position' | 'at'>;
  policies: PolicyHistory;
}

/** One agent's grants as if it had been authorized with these instead (a proposal to try out). */
export interface AsIfGrants {
  agent: string;
  links: TemplateLink[];
}

/**
 * The history with one agent's grants replaced at every position, everything else as it was:
 * the what-if of a grant change. The agent's states keep their versions (a token checked
 * against one still matches it); the combined Cedar sets are keyed by the grants too.
 */
export function withGrants(history: History, asIf: AsIfGrants): History {
  const replaced = new WeakMap<Versioned<AgentRecord>, Versioned<AgentRecord>>();
  const agentsAt = (agents: Lookup<AgentRecord>): Lookup<AgentRecord> => ({
    get(id) {
      const found = agents.get(id);
      if (!found || id !== asIf.agent) return found;
      let hit = replaced.get(found);
      if (!hit) replaced.set(found, (hit = new Versioned({ ...found.record, grants: asIf.links }, found.version, agentEntity)));
      return hit;
    },
    has: (id) => agents.has(id),
  });
  const { registry } = history;
  return {
    policies: history.policies,
    registry: {
      get position() {
        return registry.position;
      },
      at(position: number): RegistryState {
        const state = registry.at(position);
        return { ...state, agents: agentsAt(state.agents) };
      },
    },
  };
}

export async function loadHistory(source: AuditSource, progress?: ReplayOptions['progress'], turns?: Turns): Promise<History> {
  const registry = new RegistryHistory();
  const policies = new PolicyHistory();
  const total = (await source.heads()).events;
  for await (const page of source.events()) {
    for (const e of page) {
      registry.apply(e);
      policies.apply(e);
      await turns?.take();
    }
    progress?.('events', registry.position, Math.max(total, registry.position));
  }
  return { registry, policies };
}

const outcome = (d: Pick<Decision, 'decision' | 'layer' | 'code' | 'reasons' | 'policyVersion' | 'shadow'> | StoredDecision): Outcome => ({
  decision: d.decision, layer: d.layer, code: d.code ?? null, reasons: d.reasons, policyVersion: d.policyVersion, ...(d.shadow ? { shadow: d.shadow } : {}),
});

/** What differs between a recorded outcome and its replay, in words; '' when nothing does. */
function differences(recorded: Outcome, replayed: Outcome): string {
  const out: string[] = [];
  if (recorded.decision !== replayed.decision) out.push(`decision ${recorded.decision ? 'allow' : 'deny'} → ${replayed.decision ? 'allow' : 'deny'}`);
  if (recorded.layer !== replayed.layer) out.push(`layer ${recorded.layer} → ${replayed.layer}`);
  if (recorded.code !== replayed.code) out.push(`code ${recorded.code ?? 'none'} → ${replayed.code ?? 'none'}`);
  if (JSON.stringify(recorded.reasons) !== JSON.stringify(replayed.reasons)) out.push(`reasons [${recorded.reasons.join(', ')}] → [${replayed.reasons.join(', ')}]`);
  if (canonicalJson(recorded.shadow ?? null) !== canonicalJson(replayed.shadow ?? null)) out.push('quarantine shadow differs');
  return out.join('; ');
}

/** Records that are not AuthZEN requests (`isReplayable` is false): token exchanges (token-exchange.ts) and admin calls (humans/admin.ts). */
const NOT_REPLAYED: ReadonlySet<unknown> = new Set([EXCHANGE_RECORD_KIND, ADMIN_RECORD_KIND]);
export const isReplayable = (request: unknown): boolean => !NOT_REPLAYED.has((request as { kind?: unknown } | null)?.kind);

/** Is this an agent request whose token was refused before its claims could be trusted? */
function tokenFromRecord(request: EvaluationRequest): boolean {
  const token = request.subject?.properties?.token;
  return typeof token === 'object' && token !== null && !('claims' in token);
}

/**
 * One recorded decision decided again: against the registry as of its log position, at its
 * recorded instant, with the policy version it names (or the candidate set).
 */
export async function reevaluate(
  d: StoredDecision, history: History, candidate: CompiledPolicySet | null, caches: DecisionCaches, contexts?: SharedContexts,
): Promise<{ outcome: Outcome | null; problem: string | null }> {
  const resolved = await requestOf(d, contexts);
  if ('problem' in resolved) return { outcome: null, problem: resolved.problem };
  const { request } = resolved;
  const { registry, policies } = history;
  if (registry.position < d.logPosition) {
    return { outcome: null, problem: `the event log ends at position ${registry.position}, before this decision's position ${d.logPosition}` };
  }
  let set = candidate;
  if (!candidate && d.policyVersion > 0) {
    const inForce = policies.versionAt(d.logPosition);
    if (d.policyVersion > inForce) return { outcome: null, problem: `policy version ${d.policyVersion} was not yet published at position ${d.logPosition} (version ${inForce} was)` };
    set = policies.set(d.policyVersion);
    if (!set) return { outcome: null, problem: `policy version ${d.policyVersion} cannot be compiled here` };
  }
  try {
    const decided = await decide(request, set, registry.at(d.logPosition), d.at, { caches, tokens: recordedTokenVerifier(d.code) });
    return { outcome: outcome(decided), problem: null };
  } catch (err) {
    // The live service answers 400 to such a request (never recorded): the candidate set does
    // not accept it, or the record is not a request Leash would have decided.
    return { outcome: null, problem: `not decidable: ${(err as Error).message}` };
  }
}

const entity = (e: unknown) => {
  const x = (e ?? {}) as { type?: unknown; id?: unknown };
  return { type: String(x.type ?? ''), id: String(x.id ?? '') };
};

/**
 * Where the shared context of a batch's items is found: in a decision read shortly before (the
 * one holding it comes first in the log), else looked up by id in the source.
 */
export class SharedContexts {
  private readonly recent = new Lru<string, unknown>(256);
  constructor(private readonly source: AuditSource) {}

  /** Every decision read, in order: those holding a context may be named by the next ones. */
  saw(d: StoredDecision): void {
    const context = (d.request as RecordedRequest | null)?.context;
    if (context !== undefined) this.recent.set(d.id, context);
  }

  async of(id: string): Promise<unknown> {
    const hit = this.recent.get(id);
    if (hit !== undefined) return hit;
    const holder = await this.source.decision(id);
    const context = (holder?.request as RecordedRequest | undefined)?.context;
    if (context !== undefined) this.recent.set(id, context);
    return context;
  }
}

/** The request a record was decided on, its shared context put back in. */
async function requestOf(d: StoredDecision, contexts?: SharedContexts): Promise<{ request: EvaluationRequest } | { problem: string }> {
  const { contextOf, ...request } = d.request as RecordedRequest & EvaluationRequest;
  if (contextOf === undefined) return { request: d.request as EvaluationRequest };
  const context = typeof contextOf === 'string' ? await contexts?.of(contextOf) : undefined;
  if (context === undefined) return { problem: `its context is recorded with decision ${String(contextOf)}, which ${contexts ? 'the source does not hold' : 'was not looked up'}` };
  return { request: { ...request, context: context as Record<string, unknown> } };
}

/** Replay (no candidate) or what-if (a candidate set) over a range of recorded decisions. */
export async function replay(source: AuditSource, options: ReplayOptions = {}, history?: History): Promise<ReplayReport> {
  // Compile the candidate before any work: an invalid set is refused with Cedar's diagnostics.
  // On a server, checked off the event loop, as a published set is.
  const turns = options.takeTurns ? new Turns() : undefined;
  const candidate = !options.candidate ? null : turns ? prepareCompiled(await checkOffThread(options.candidate), 0) : compilePolicySet(options.candidate, 0);
  const folded = history ?? (await loadHistory(source, options.progress, turns));
  const loaded = options.grants ? withGrants(folded, options.grants) : folded;
  const whatIf = candidate !== null || options.grants !== undefined;
  const keep = options.keep ?? 1_000;
  const max = options.maxDecisions ?? Infinity;
  const caches = new DecisionCaches();
  const contexts = new SharedContexts(source);
  const report: ReplayReport = {
    mode: whatIf ? 'what-if' : 'replay', decisions: 0, tokenFromRecord: 0, differing: 0, allowToDeny: 0, denyToAllow: 0, records: [],
    range: { from: null, to: null }, next: null, memory: caches.answerStats,
  };
  const total = (await source.heads()).decisions;
  const first = options.from ?? 1;
  let lastSeq = first - 1;
  outer: for await (const page of source.decisions(first - 1)) {
    for (const d of page) {
      // At the top: most decisions leave the loop early (nothing differs).
      await turns?.take();
      if (options.to !== undefined && d.seq > options.to) break outer;
      lastSeq = d.seq;
      contexts.saw(d);
      if ((options.since && d.at < options.since) || (options.until && d.at >= options.until)) continue;
      // A token exchange (layer `delegation`) is recorded without the tokens it was decided
      // on, so it cannot be decided again; an admin call (layer `admin`) is not a decision
      // request a PEP made. Replay and what-if leave both out.
      if (!isReplayable(d.request)) continue;
      if (report.decisions >= max) {
        report.next = d.seq;
        break outer;
      }
      report.decisions++;
      report.range.from ??= d.seq;
      report.range.to = d.seq;
      if (tokenFromRecord(d.request as EvaluationRequest)) report.tokenFromRecord++;
      // On a server, each version the range meets is checked off the event loop first.
      if (turns && !candidate && d.policyVersion > 0) await loaded.policies.ready(d.policyVersion);
      const { outcome: replayed, problem } = await reevaluate(d, loaded, candidate, caches, contexts);
      const recorded = outcome(d);
      let change: string;
      if (whatIf) {
        if (replayed && replayed.decision === recorded.decision) continue;
        change = !replayed ? `${recorded.decision ? 'allow' : 'deny'}→error: ${problem}` : recorded.decision ? 'allow→deny' : 'deny→allow';
        if (replayed?.decision === false) report.allowToDeny++;
        if (replayed?.decision === true) report.denyToAllow++;
      } else {
        change = replayed ? differences(recorded, replayed) : (problem ?? 'not decidable');
        if (!change) continue;
        if (replayed && recorded.decision && !replayed.decision) report.allowToDeny++;
        if (replayed && !recorded.decision && replayed.decision) report.denyToAllow++;
      }
      report.differing++;
      if (report.records.length < keep) {
        const request = d.request as EvaluationRequest;
        report.records.push({
          seq: d.seq, id: d.id, at: d.at.toISOString(), logPosition: d.logPosition,
          subject: entity(request.subject), action: String(request.action?.name ?? ''), resource: entity(request.resource),
          recorded, replayed, change,
        });
      }
    }
    options.progress?.('decisions', lastSeq, Math.max(total, lastSeq));
  }
  return report;
}
