import { Bloom, BLOOM_WORDS } from './counts.ts';
import type { MonitoringConfig } from './monitoring-config.ts';

// An agent's behaviour baseline, learned from its own decisions: how many it asks for in a
// minute when it works, at which hours of the day (UTC) it works, and which actions and
// resources (with their parent folders) it has been allowed. Memory is fixed per agent: 24
// counters, a Bloom filter of 512 bytes for resources, at most 64 action names.

/** Action names an agent's baseline remembers; an agent using more is not judged on new ones. */
export const MAX_ACTIONS = 64;

export class Baseline {
  /** The first second of the agent's traffic this baseline knows (seen here, counted by another node, or read from the log). */
  since: number;
  decisions = 0;
  private activeMinutes = 0;
  private lastMinute = -1;
  /** The last minute of past traffic learned (the log's, oldest first, before anything seen live). */
  private lastPastMinute = -1;
  /** Decisions per hour of the day, then the resources' Bloom filter: one buffer. */
  private readonly hours: Uint32Array;
  readonly actions = new Set<string>();
  readonly resources: Bloom;

  constructor(second: number, seed: number) {
    this.since = second;
    const cells = new Uint32Array(24 + BLOOM_WORDS);
    this.hours = cells.subarray(0, 24);
    this.resources = new Bloom(seed, cells.subarray(24));
  }

  /** Decisions the agent asked for in this second (on this node or another). */
  traffic(second: number, n: number): void {
    this.decisions += n;
    this.hours[hourOf(second)]! += n;
    const minute = Math.floor(second / 60);
    if (minute > this.lastMinute) {
      this.activeMinutes++;
      this.lastMinute = minute;
    }
  }

  /** A decision from before this node saw the agent (the decision log's), learned in time order. */
  past(second: number): void {
    this.decisions++;
    this.hours[hourOf(second)]!++;
    this.since = Math.min(this.since, second);
    const minute = Math.floor(second / 60);
    if (minute > this.lastPastMinute) {
      this.activeMinutes++;
      this.lastPastMinute = minute;
    }
  }

  warm(second: number, warmup: MonitoringConfig['warmup']): boolean {
    return second - this.since >= warmup.hours * 3600 && this.decisions >= warmup.decisions;
  }

  /** Decisions in a minute in which the agent works at all (so idle nights do not lower it). */
  perMinute(): number {
    return this.activeMinutes === 0 ? 0 : this.decisions / this.activeMinutes;
  }

  /** Of all its decisions, the share made in this second's hour of the day. */
  shareOfHour(second: number): number {
    return this.decisions === 0 ? 0 : this.hours[hourOf(second)]! / this.decisions;
  }

  /** Learns an action; true when it is new to the baseline (false once the baseline is full). */
  learnAction(name: string): boolean {
    if (this.actions.has(name) || this.actions.size >= MAX_ACTIONS) return false;
    this.actions.add(name);
    return true;
  }
}

const hourOf = (second: number): number => Math.floor(second / 3600) % 24;
