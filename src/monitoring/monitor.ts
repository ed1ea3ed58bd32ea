import type { Decision } from '../authz/engine.ts';
import type { Bus } from '../bus/bus.ts';
import type { Cluster } from '../cluster/cluster.ts';
import { LeashError } from '../errors.ts';
import type { Finding } from '../registry/agent.ts';
import type { RegistryView } from '../registry/registry-view.ts';
import { agentAggregate } from '../registry/streams.ts';
import type { CommandHandler } from '../service/command-handler.ts';
import type { MonitoringConfig } from './monitoring-config.ts';

// Detectors on the decision stream. Every node counts, per agent, the decisions that matter to a
// detector (denies; tokens refused as beyond the ceiling) in one-second buckets over the
// detector's window, and shares what it counted with the other nodes of its deployment over
// NATS (`leash.<deployment>.monitor`, a message at most every 20 ms carrying the counts since the
// last one): an agent whose traffic is spread over several nodes is counted whole on each, within
// a few tens of milliseconds, without a write per decision. The node that sees a count cross its
// threshold records the finding (`AnomalyDetected` on the agent's stream; the stream's version
// makes it one finding per window however many nodes saw it) and applies the configured
// response as actor `monitor`: `suspend` fenced like any suspension, so every node refuses the
// agent before the call returns, or `alert` (the finding alone).

export { DEFAULT_MONITORING, type MonitoringConfig } from './monitoring-config.ts';

type Detector = keyof MonitoringConfig['detectors'];
const DETECTORS: Detector[] = ['deny_burst', 'ceiling_probe'];

/**
 * Which detectors a decision counts for. Only what the agent did counts: a request whose token
 * did not verify (or was refused for the agent's state) could come from anyone holding a PEP's
 * caller token, and must not be a way to get an agent suspended; and a request waiting for an
 * approval is no refusal (a busy payments agent asks for many).
 */
function countsFor(d: Decision): Detector[] {
  if (d.decision || d.layer === 'token' || d.layer === 'policy-set' || d.code === 'POLICY_EVALUATION_ERROR') return [];
  // Held back for a person's approval: the policies allow it, once approved. Not a refusal.
  if (d.code === 'APPROVAL_REQUIRED') return [];
  const out: Detector[] = ['deny_burst'];
  if (d.code === 'DETAILS_BEYOND_CEILING') out.push('ceiling_probe');
  return out;
}

/** Counts per one-second bucket (epoch seconds), kept for the longest window. */
class Window {
  private readonly buckets = new Map<number, number>();

  add(second: number, n: number, keep: number): void {
    this.buckets.set(second, (this.buckets.get(second) ?? 0) + n);
    for (const s of this.buckets.keys()) if (s <= second - keep) this.buckets.delete(s);
  }

  sum(second: number, windowSeconds: number): number {
    let n = 0;
    for (const [s, c] of this.buckets) if (s > second - windowSeconds) n += c;
    return n;
  }

  empty(): boolean {
    return this.buckets.size === 0;
  }
}

interface CountsMessage {
  node: string;
  /** agent → detector → second → count */
  counts: Record<string, Partial<Record<Detector, Record<string, number>>>>;
}

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
}

/** Agents whose counts one node keeps at most (those seen longest ago go first). */
const MAX_AGENTS = 100_000;
/** Agents one message from another node may carry counts for (more than a node counts in 20 ms). */
const MAX_AGENTS_PER_MESSAGE = 10_000;
/** How far ahead of this node's clock another node's seconds may be. */
const CLOCK_SKEW_SECONDS = 5;

export class Monitor {
  private readonly configNow: (() => MonitoringConfig) | null;
  private readonly windows = new Map<string, Map<Detector, Window>>();
  /** Counted here since the last message: agent → detector → second → count (Maps: an agent id is no object key). */
  private pending = new Map<string, Map<Detector, Map<number, number>>>();
  private flushTimer: NodeJS.Timeout | null = null;
  private readonly subject: string;
  private readonly off: () => void;
  private readonly acting = new Set<string>();

  constructor(private readonly options: MonitorOptions) {
    this.configNow = options.config;
    this.subject = `leash.${options.deployment}.monitor`;
    const offCounts = options.bus.subscribe(this.subject, (m) => this.onCounts(m as CountsMessage));
    // A contained agent's counts go: re-authorized, it starts afresh, and its retries meanwhile count for nothing.
    const offAgents = options.view.onAgentChange((id) => {
      if (options.view.agents.get(id)?.record.status !== 'active') this.windows.delete(id);
    });
    this.off = () => {
      offCounts();
      offAgents();
    };
  }

  stop(): void {
    this.off();
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = null;
  }

  /**
   * One decision this node made. Null when no detector counts it (every allow: nothing to wait
   * for on the decision path); else resolves once any response it triggered is in force on every node.
   */
  observe(agent: string, d: Decision, at: Date): Promise<void> | null {
    if (!this.configNow) return null;
    const detectors = countsFor(d);
    // Only an active agent's own requests: one already contained is not found again and again.
    if (detectors.length === 0 || this.options.view.agents.get(agent)?.record.status !== 'active') return null;
    const second = Math.floor(at.getTime() / 1000);
    for (const detector of detectors) {
      this.count(agent, detector, second, 1);
      let byDetector = this.pending.get(agent);
      if (!byDetector) this.pending.set(agent, (byDetector = new Map()));
      let bySecond = byDetector.get(detector);
      if (!bySecond) byDetector.set(detector, (bySecond = new Map()));
      bySecond.set(second, (bySecond.get(second) ?? 0) + 1);
    }
    this.scheduleFlush();
    return this.check(agent, detectors, at);
  }

  private count(agent: string, detector: Detector, second: number, n: number): void {
    let byDetector = this.windows.get(agent);
    if (!byDetector) {
      if (this.windows.size >= MAX_AGENTS) this.windows.delete(this.windows.keys().next().value!);
      this.windows.set(agent, (byDetector = new Map()));
    }
    let w = byDetector.get(detector);
    if (!w) byDetector.set(detector, (w = new Window()));
    w.add(second, n, this.configNow!().detectors[detector].windowSeconds);
  }

  private scheduleFlush(): void {
    if (this.flushTimer) return;
    this.flushTimer = setTimeout(() => {
      this.flushTimer = null;
      const counts: CountsMessage['counts'] = Object.create(null);
      for (const [agent, byDetector] of this.pending) {
        const out: Partial<Record<Detector, Record<string, number>>> = Object.create(null);
        for (const [detector, bySecond] of byDetector) out[detector] = Object.fromEntries(bySecond);
        counts[agent] = out;
      }
      this.pending = new Map();
      this.options.bus.publish(this.subject, { node: this.options.nodeId, counts } satisfies CountsMessage);
    }, 20);
    this.flushTimer.unref();
  }

  /**
   * Another node's counts. What a message can make this node hold and do is bounded: known active
   * agents only, seconds within the window (not the future: a bucket from next year would count
   * for ever), sane counts, and at most so many agents and seconds per message.
   */
  private onCounts(m: CountsMessage): void {
    const config = this.configNow?.();
    if (!config || !m || m.node === this.options.nodeId || typeof m.counts !== 'object' || m.counts === null || Array.isArray(m.counts)) return;
    const now = new Date();
    const nowSecond = Math.floor(now.getTime() / 1000);
    let agents = 0;
    for (const [agent, byDetector] of Object.entries(m.counts)) {
      if (++agents > MAX_AGENTS_PER_MESSAGE) break;
      if (this.options.view.agents.get(agent)?.record.status !== 'active' || typeof byDetector !== 'object' || byDetector === null) continue;
      const seen: Detector[] = [];
      for (const detector of DETECTORS) {
        const bySecond = Object.hasOwn(byDetector, detector) ? byDetector[detector] : undefined;
        if (typeof bySecond !== 'object' || bySecond === null) continue;
        const { windowSeconds } = config.detectors[detector];
        let entries = 0;
        for (const [text, n] of Object.entries(bySecond)) {
          if (++entries > windowSeconds + CLOCK_SKEW_SECONDS) break;
          const second = Number(text);
          if (!Number.isSafeInteger(second) || second <= nowSecond - windowSeconds || second > nowSecond + CLOCK_SKEW_SECONDS) continue;
          if (Number.isSafeInteger(n) && n > 0 && n < 1e6) this.count(agent, detector, second, n);
        }
        seen.push(detector);
      }
      void this.check(agent, seen, now).catch(() => {});
    }
  }

  /** A count over its threshold: the finding, and the response, once. */
  private async check(agent: string, detectors: Detector[], at: Date): Promise<void> {
    const second = Math.floor(at.getTime() / 1000);
    const config = this.configNow!();
    for (const detector of detectors) {
      const { threshold, windowSeconds, severity } = config.detectors[detector];
      const n = this.windows.get(agent)?.get(detector)?.sum(second, windowSeconds) ?? 0;
      if (n < threshold) continue;
      const key = `${agent}\n${detector}`;
      const last = this.options.view.agents.get(agent)?.record.findings?.[detector];
      if (this.acting.has(key) || (last && at.getTime() - Date.parse(last.at) < windowSeconds * 1000)) continue;
      this.acting.add(key);
      try {
        await this.respond(agent, { detector, severity, evidence: { count: n, threshold, windowSeconds }, response: config.responses[severity] }, windowSeconds, at);
      } finally {
        this.acting.delete(key);
      }
    }
  }

  private async respond(agent: string, finding: Finding, windowSeconds: number, at: Date): Promise<void> {
    const { commands, cluster, log } = this.options;
    const now = new Date(Math.max(at.getTime(), Date.now()));
    try {
      await commands.handle(agentAggregate, agent, { type: 'RecordFinding', data: { ...finding, windowSeconds }, metadata: { now } }, { now, actor: 'monitor' });
    } catch (err) {
      // Found already (on another node, within the window), or the agent is past being found: nothing more to do here.
      if (err instanceof LeashError && (err.code === 'ALREADY_EXISTS' || err.code === 'INVALID_TRANSITION' || err.code === 'AGENT_NOT_FOUND')) return;
      log({ err: (err as Error).message, agent }, 'recording a finding failed');
      return;
    }
    log({ agent, detector: finding.detector, severity: finding.severity, response: finding.response, evidence: finding.evidence }, 'anomaly detected');
    if (finding.response === 'alert') return;
    try {
      const reason = `${finding.detector}: ${finding.evidence.count} in ${windowSeconds} s (threshold ${finding.evidence.threshold})`;
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
