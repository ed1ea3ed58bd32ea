import { hash } from 'node:crypto';
import { agentAggregate } from '../registry/streams.ts';
import type { RegistryView } from '../registry/registry-view.ts';
import type { CommandHandler } from '../service/command-handler.ts';

// Shadow agents: a PEP asking about an agent the registry does not know says that agent exists
// somewhere. The first such request about an id records it as discovered (`AgentDiscovered`,
// source `decision-api`, which caller asked, a fingerprint of the token it showed), so it shows
// up in the inventory (`GET /v1/agents?status=discovered`) for someone to register or chase down.
// A caller can name any id it likes, so what it can make the log hold is bounded: ids the
// registry would take only, at most a few new ones a second per node, and at most so many in
// all. The decision itself is never held up by this: it is denied (AGENT_UNKNOWN) either way.

/** Ids the registry takes (the same as the API's `Id`). */
const ID = /^(?!(?:__proto__|constructor|prototype)$)[A-Za-z0-9._:@-]{1,128}$/;

export interface ShadowAgentOptions {
  view: RegistryView;
  commands: CommandHandler;
  log: (fields: Record<string, unknown>, message: string) => void;
  /** New discoveries a node records per second, at most (a token bucket: this many may come at once). */
  perSecond?: number;
  /** Discovered agents the registry may hold; beyond, no more are recorded. */
  maxDiscovered?: number;
}

export class ShadowAgents {
  private readonly tried = new Set<string>();
  private readonly perSecond: number;
  private readonly maxDiscovered: number;
  private allowance: number;
  private refilledAt = Date.now();
  private counted: { n: number; at: number } | null = null;
  private warnedFull = false;

  constructor(private readonly options: ShadowAgentOptions) {
    this.perSecond = options.perSecond ?? 10;
    this.maxDiscovered = options.maxDiscovered ?? 10_000;
    this.allowance = this.perSecond;
  }

  /** A decision named `id` as an agent, and the registry did not know it. */
  seen(id: string, seenBy: string, token: unknown, now: Date): void {
    const { view, commands, log } = this.options;
    if (!ID.test(id) || view.agents.has(id) || this.tried.has(id)) return;
    if (!this.take(now.getTime())) return;
    if (this.discovered(now.getTime()) >= this.maxDiscovered) {
      if (!this.warnedFull) log({ maxDiscovered: this.maxDiscovered }, 'the registry holds as many discovered agents as it may; no more are recorded');
      this.warnedFull = true;
      return;
    }
    // Remembered so that one id is tried once (bounded: forgotten all at once when full).
    if (this.tried.size >= this.maxDiscovered) this.tried.clear();
    this.tried.add(id);
    if (this.counted) this.counted.n++;
    const fingerprint = typeof token === 'string' ? `sha256:${hash('sha256', token, 'hex').slice(0, 16)}` : 'no token';
    commands
      .handle(agentAggregate, id, { type: 'DiscoverAgent', data: { id, source: 'decision-api', fingerprint, seenBy }, metadata: { now } }, { now, actor: `decision-api:${seenBy}` })
      .catch((err: Error) => {
        // Registered or discovered meanwhile (here or on another node): nothing to record.
        if ((err as { code?: string }).code !== 'INVALID_TRANSITION') log({ err: err.message, agent: id }, 'recording a discovered agent failed');
      });
  }

  private take(nowMs: number): boolean {
    this.allowance = Math.min(this.perSecond, this.allowance + ((nowMs - this.refilledAt) / 1000) * this.perSecond);
    this.refilledAt = nowMs;
    if (this.allowance < 1) return false;
    this.allowance -= 1;
    return true;
  }

  /** Discovered agents in the registry, counted again at most every 5 s (and counted up as this node records them). */
  private discovered(nowMs: number): number {
    if (!this.counted || nowMs - this.counted.at > 5_000) {
      let n = 0;
      for (const a of this.options.view.agents.values()) if (a.record.status === 'discovered') n++;
      this.counted = { n, at: nowMs };
    }
    return this.counted.n;
  }
}
