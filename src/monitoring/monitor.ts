import { randomInt } from 'node:crypto';
import type { Decision, EvaluationRequest } from '../authz/engine.ts';
import type { Bus } from '../bus/bus.ts';
import type { Cluster } from '../cluster/cluster.ts';
import { LeashError } from '../errors.ts';
import type { Finding } from '../registry/agent.ts';
import type { RegistryView } from '../registry/registry-view.ts';
import { agentAggregate } from '../registry/streams.ts';
import type { CommandHandler } from '../service/command-handler.ts';
import { History, type ReadHistory } from './history.ts';
import { countsAsOwn, MAX_NAME, namesUsed } from './uses.ts';
import { Baseline } from './baseline.ts';
import { Ring } from './counts.ts';
import type { DetectorName, MonitoringConfig } from './monitoring-config.ts';
import { Sharing, type Counted } from './sharing.ts';

// Detectors on the decision stream. Every node keeps, per agent, a baseline learned from the
// agent's own decisions (baseline.ts) and counts over each counting detector's window
// (counts.ts), and shares what it counted and learned with the other nodes of its deployment
// over NATS (sharing.ts): an agent whose traffic is spread over several nodes is counted whole
// on each, within a few tens of milliseconds, without a write per decision.
//
// Counting detectors: `deny_burst` (denies in a window), `ceiling_probe` (tokens refused as
// beyond the ceiling), `rate_spike` (decisions in a window, over a floor and over a multiple of
// the agent's usual rate). Baseline detectors, once the baseline has warmed up: `new_action`
// and `new_resource` (allowed for the first time: a resource none of whose parents was used
// either), `off_hours` (an hour of the day the agent hardly ever works).
//
// The node that sees a detector fire records the finding (`AnomalyDetected` on the agent's
// stream, with the trust score change the configuration gives its severity; the stream's
// version makes it one finding per detector per window however many nodes saw it) and applies
// the configured response as actor `monitor`: `suspend` or `quarantine` fenced like any, so
// every node refuses the agent before the call returns, or `alert` (the finding alone, fenced
// when it moved the trust score, so policies that read it tighten on every node at once).

export { DEFAULT_MONITORING, type MonitoringConfig } from './monitoring-config.ts';

export interface MonitorOptions {
  nodeId: string;
  deployment: string;
  bus: Bus;
  view: RegistryView;
  commands: CommandHandler;
  cluster: Cluster;
  /** The configuration in force (read at each use: a new version applies at once); null: nothing is counted (tests of other things). */
  config: (() => MonitoringConfig) | null;
  log: (fields: Record<string, unknown>, message: string) => void;
  /** The time (tests drive a week of traffic through it); the decisions' own instants are passed in. */
  clock?: () => Date;
  /** The resource filters' hash seed; default a random one of this process's (tests fix it to get one filter's answers every run). */
  seed?: number;
  /** Told of each finding this node recorded (the metrics). */
  found?: (detector: string) => void;
  /**
   * The agent's recorded decisions in [since, until), the latest `limit`, oldest first: a node
   * that starts (or first sees an agent) learns its baseline from the log instead of from scratch.
   */
  history?: ReadHistory;
}

/** Agents whose counts and baselines one node keeps at most (those seen longest ago go first). */
const MAX_AGENTS = 100_000;

/** What one node keeps about one agent. */
interface Watched {
  baseline: Baseline;
  /** False while the agent's history is being read: its baseline judges nothing yet. */
  ready: boolean;
  /** One per counting detector that counted for the agent (the keys are the detectors' names, never a caller's). */
  rings: { deny_burst?: Ring; ceiling_probe?: Ring; rate_spike?: Ring };
}

interface Found {
  detector: DetectorName;
  evidence: Record<string, number | string>;
}

export class Monitor {
  private readonly configNow: (() => MonitoringConfig) | null;
  private readonly watched = new Map<string, Watched>();
  private readonly sharing: Sharing;
  private readonly off: () => void;
  private readonly acting = new Set<string>();
  private readonly seed: number;
  private readonly clock: () => Date;
  private readonly history: History | null;

  constructor(private readonly options: MonitorOptions) {
    this.configNow = options.config;
    this.clock = options.clock ?? (() => new Date());
    this.seed = options.seed ?? randomInt(2 ** 31);
    this.history = options.history ? new History(options.history, options.log) : null;
    this.sharing = new Sharing({
      nodeId: options.nodeId, bus: options.bus, subject: `leash.${options.deployment}.monitor`,
      active: (agent) => this.active(agent), config: () => this.configNow?.() ?? null, clock: this.clock,
      counted: (agent, detector, second, n) => this.count(agent, detector, second, n),
      learned: (agent, kind, name) => this.learn(agent, kind, name),
      done: (agent, detectors) => void this.check(agent, detectors.map((d) => this.crossed(agent, d, this.clock())).filter((f) => f !== null), this.clock())?.catch(() => {}),
    });
    // A contained agent's counts go: re-authorized, it starts afresh, and its retries meanwhile count for nothing.
    const offAgents = options.view.onAgentChange((id) => {
      if (!this.active(id)) this.watched.delete(id);
    });
    this.off = () => {
      this.sharing.stop();
      offAgents();
    };
  }

  stop(): void {
    this.off();
  }

  /** Agents this node keeps counts for (tests and the memory benchmark). */
  get agents(): number {
    return this.watched.size;
  }

  private active(agent: string): boolean {
    return this.options.view.agents.get(agent)?.record.status === 'active';
  }

  /**
   * One decision this node made for an agent. Null when nothing fired (nearly every decision:
   * nothing to wait for on the decision path); else resolves once the responses are in force
   * on every node.
   */
  observe(request: EvaluationRequest, d: Decision, at: Date): Promise<void> | null {
    const config = this.configNow?.();
    const agent = request.subject.id;
    // Only what the agent did counts: a request whose token did not verify (or was refused for
    // the agent's state) could come from anyone holding a PEP's caller token, and must not be a
    // way to get an agent suspended. Only an active agent's: one contained is not found again and again.
    if (!config || !countsAsOwn(d) || !this.active(agent)) return null;
    const second = Math.floor(at.getTime() / 1000);
    const counted: Counted[] = ['rate_spike'];
    // Held back for a person's approval: the policies allow it, once approved. Not a refusal.
    if (!d.decision && d.code !== 'APPROVAL_REQUIRED') counted.push('deny_burst');
    if (d.code === 'DETAILS_BEYOND_CEILING') counted.push('ceiling_probe');
    const watched = this.watch(agent, second);
    const { baseline } = watched;
    const found: Found[] = [];
    const warm = watched.ready && baseline.warm(second, config.warmup);
    // Judged against the baseline before this decision is learned into it.
    if (warm && baseline.shareOfHour(second) < config.detectors.off_hours.share) {
      found.push({ detector: 'off_hours', evidence: { hour: Math.floor(second / 3600) % 24, share: round(baseline.shareOfHour(second)) } });
    }
    for (const detector of counted) {
      this.count(agent, detector, second, 1, watched);
      this.sharing.counted(agent, detector, second);
    }
    if (d.decision) found.push(...this.learnUse(agent, watched, request, warm));
    for (const detector of counted) {
      const crossed = this.crossed(agent, detector, at);
      if (crossed) found.push(crossed);
    }
    return found.length === 0 ? null : this.check(agent, found, at);
  }

  private watch(agent: string, second: number): Watched {
    let watched = this.watched.get(agent);
    if (watched) {
      // Moved to the back: the agent seen longest ago is at the front, and goes first.
      this.watched.delete(agent);
    } else {
      if (this.watched.size >= MAX_AGENTS) this.watched.delete(this.watched.keys().next().value!);
      watched = { baseline: new Baseline(second, this.seed), ready: !this.options.history, rings: {} };
      if (!watched.ready) {
        const ready = watched;
        this.history!.learn(agent, ready.baseline, second, this.configNow?.().warmup.hours ?? 168, () => (ready.ready = true));
      }
    }
    this.watched.set(agent, watched);
    return watched;
  }

  /** An allowed decision: its action and resource learned; new ones found once the baseline is warm. */
  private learnUse(agent: string, watched: Watched, request: EvaluationRequest, warm: boolean): Found[] {
    const found: Found[] = [];
    const action = request.action.name.slice(0, MAX_NAME);
    if (watched.baseline.learnAction(action)) {
      this.sharing.learned(agent, 'actions', action);
      if (warm) found.push({ detector: 'new_action', evidence: { action } });
    }
    const names = namesUsed(request);
    const [resource, ...parents] = names;
    let known = false;
    for (const name of names) {
      if (watched.baseline.resources.add(name)) this.sharing.learned(agent, 'resources', name);
      else known = true;
    }
    if (warm && !known) found.push({ detector: 'new_resource', evidence: { resource: resource!, parents: parents.join(', ').slice(0, MAX_NAME) } });
    return found;
  }

  /** `watched`: the agent's, when the caller holds it already (a decision here); else looked up (another node's counts). */
  private count(agent: string, detector: Counted, second: number, n: number, watched = this.watch(agent, second)): void {
    const config = this.configNow?.();
    if (!config) return;
    const { windowSeconds } = config.detectors[detector];
    let ring = watched.rings[detector];
    if (!ring || ring.windowSeconds !== windowSeconds) watched.rings[detector] = ring = new Ring(windowSeconds);
    ring.add(second, n);
    if (detector === 'rate_spike') watched.baseline.traffic(second, n);
  }

  private learn(agent: string, kind: 'actions' | 'resources', name: string): void {
    const { baseline } = this.watch(agent, Math.floor(this.clock().getTime() / 1000));
    if (kind === 'actions') baseline.learnAction(name);
    else baseline.resources.add(name);
  }

  /** A counting detector over its threshold (and for a rate, over its multiple of the baseline)? */
  private crossed(agent: string, detector: Counted, at: Date): Found | null {
    const config = this.configNow!();
    const watched = this.watched.get(agent);
    const second = Math.floor(at.getTime() / 1000);
    const { threshold, windowSeconds } = config.detectors[detector];
    const count = watched?.rings[detector]?.sum(second) ?? 0;
    if (!watched || count < threshold) return null;
    if (detector !== 'rate_spike') return { detector, evidence: { count, threshold, windowSeconds } };
    if (!watched.ready || !watched.baseline.warm(second, config.warmup)) return null;
    const usual = watched.baseline.perMinute() * (windowSeconds / 60);
    const { factor } = config.detectors.rate_spike;
    return count > factor * usual ? { detector, evidence: { count, threshold, windowSeconds, usual: round(usual), factor } } : null;
  }

  /** Findings not yet recorded in their window: each recorded, and responded to, once. */
  private check(agent: string, found: Found[], at: Date): Promise<void> | null {
    const config = this.configNow!();
    const record = this.options.view.agents.get(agent)?.record;
    const todo = found.filter(({ detector }) => {
      const last = record?.findings?.[detector];
      return !this.acting.has(`${agent}\n${detector}`) && !(last && at.getTime() - Date.parse(last.at) < config.detectors[detector].windowSeconds * 1000);
    });
    if (todo.length === 0) return null;
    return Promise.all(todo.map(async ({ detector, evidence }) => {
      const key = `${agent}\n${detector}`;
      this.acting.add(key);
      try {
        const { severity, windowSeconds } = config.detectors[detector];
        await this.respond(agent, { detector, severity, evidence, response: config.responses[severity] }, windowSeconds, config.trustScore[severity], at);
      } finally {
        this.acting.delete(key);
      }
    })).then(() => {});
  }

  private async respond(agent: string, finding: Finding, windowSeconds: number, trustScoreDelta: number, at: Date): Promise<void> {
    const { commands, cluster, log } = this.options;
    const now = new Date(Math.max(at.getTime(), this.clock().getTime()));
    let recorded;
    try {
      recorded = await commands.handle(agentAggregate, agent, { type: 'RecordFinding', data: { ...finding, windowSeconds, trustScoreDelta }, metadata: { now } }, { now, actor: 'monitor' });
    } catch (err) {
      // Found already (on another node, within the window), or the agent is past being found: nothing more to do here.
      if (err instanceof LeashError && (err.code === 'ALREADY_EXISTS' || err.code === 'INVALID_TRANSITION' || err.code === 'AGENT_NOT_FOUND')) return;
      log({ err: (err as Error).message, agent }, 'recording a finding failed');
      return;
    }
    this.options.found?.(finding.detector);
    log({ agent, detector: finding.detector, severity: finding.severity, response: finding.response, evidence: finding.evidence }, 'anomaly detected');
    try {
      if (finding.response === 'alert') {
        // A lower trust score is in force on every node before the answer that caused it leaves.
        const state = recorded.state;
        if (state.status !== 'none' && (state.findings?.[finding.detector]?.trustScoreChange ?? 0) !== 0) await cluster.fence(recorded.position);
        return;
      }
      const reason = `${finding.detector}: ${describe(finding)}`;
      const command = finding.response === 'suspend'
        ? { type: 'SuspendAgent' as const, data: { reason }, metadata: { now } }
        : { type: 'RevokeAgent' as const, data: { mode: 'quarantine' as const, reason }, metadata: { now } };
      const result = await commands.handle(agentAggregate, agent, command, { now, actor: 'monitor' });
      await cluster.fence(result.position);
    } catch (err) {
      if (err instanceof LeashError && err.code === 'INVALID_TRANSITION') return; // already contained
      log({ err: (err as Error).message, agent }, 'containing an agent after a finding failed');
    }
  }
}

/** The evidence in words, for a suspension's reason. */
function describe({ evidence: e }: Finding): string {
  if (typeof e.count === 'number') return `${e.count} in ${e.windowSeconds} s (threshold ${e.threshold})`;
  return Object.entries(e).map(([k, v]) => `${k} ${v}`).join(', ');
}

const round = (n: number): number => Math.round(n * 1000) / 1000;
