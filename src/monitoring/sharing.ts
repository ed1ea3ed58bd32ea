import type { Bus } from '../bus/bus.ts';
import type { MonitoringConfig } from './monitoring-config.ts';

// What the nodes of a deployment tell each other about the agents' traffic, so each node counts
// an agent whole however its requests are spread: a message at most every 20 ms on
// `leash.<deployment>.monitor`, with the counts per detector and second since the last one, and
// the actions and resources the agents were allowed for the first time on this node. Another
// node's message can make this node hold and do only so much: known active agents only,
// seconds within the window (not the future: a bucket from next year would count for ever),
// sane counts, short names, and at most so many agents, seconds and names per message.

/** The detectors that count decisions in a window. */
export type Counted = 'deny_burst' | 'ceiling_probe' | 'rate_spike';
export const COUNTED: readonly Counted[] = ['deny_burst', 'ceiling_probe', 'rate_spike'];

type Kind = 'actions' | 'resources';

interface CountsMessage {
  node: string;
  /** agent → detector → second → count */
  counts: Record<string, Partial<Record<Counted, Record<string, number>>>>;
  /** agent → names learned here since the last message */
  learned?: Record<string, Partial<Record<Kind, string[]>>>;
}

export interface SharingOptions {
  nodeId: string;
  bus: Bus;
  subject: string;
  active: (agent: string) => boolean;
  config: () => MonitoringConfig | null;
  clock: () => Date;
  /** Another node's counts, one second of one detector at a time. */
  counted: (agent: string, detector: Counted, second: number, n: number) => void;
  learned: (agent: string, kind: Kind, name: string) => void;
  /** All of one agent's counts in a message taken: check its thresholds. */
  done: (agent: string, detectors: Counted[]) => void;
}

const FLUSH_MS = 20;
/** Agents one message may carry counts for (more than a node counts in 20 ms). */
const MAX_AGENTS_PER_MESSAGE = 10_000;
/** Names learned per agent per message, either kind. */
const MAX_NAMES = 64;
const MAX_NAME = 256;
/** How far ahead of this node's clock another node's seconds may be. */
const CLOCK_SKEW_SECONDS = 5;

const isObject = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);

export class Sharing {
  /** Counted here since the last message (Maps: an agent id is no object key). */
  private counts = new Map<string, Map<Counted, Map<number, number>>>();
  private names = new Map<string, { actions: string[]; resources: string[] }>();
  private timer: NodeJS.Timeout | null = null;
  private readonly off: () => void;

  constructor(private readonly options: SharingOptions) {
    this.off = options.bus.subscribe(options.subject, (m) => this.take(m as CountsMessage));
  }

  stop(): void {
    this.off();
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  counted(agent: string, detector: Counted, second: number): void {
    let byDetector = this.counts.get(agent);
    if (!byDetector) this.counts.set(agent, (byDetector = new Map()));
    let bySecond = byDetector.get(detector);
    if (!bySecond) byDetector.set(detector, (bySecond = new Map()));
    bySecond.set(second, (bySecond.get(second) ?? 0) + 1);
    this.schedule();
  }

  learned(agent: string, kind: Kind, name: string): void {
    let names = this.names.get(agent);
    if (!names) this.names.set(agent, (names = { actions: [], resources: [] }));
    if (names[kind].length < MAX_NAMES) names[kind].push(name);
    this.schedule();
  }

  private schedule(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => this.flush(), FLUSH_MS);
    this.timer.unref();
  }

  private flush(): void {
    this.timer = null;
    const counts: CountsMessage['counts'] = Object.create(null);
    for (const [agent, byDetector] of this.counts) {
      const out: Partial<Record<Counted, Record<string, number>>> = Object.create(null);
      for (const [detector, bySecond] of byDetector) out[detector] = Object.fromEntries(bySecond);
      counts[agent] = out;
    }
    const learned: NonNullable<CountsMessage['learned']> = Object.create(null);
    for (const [agent, names] of this.names) learned[agent] = names;
    this.counts = new Map();
    this.names = new Map();
    this.options.bus.publish(this.options.subject, { node: this.options.nodeId, counts, learned } satisfies CountsMessage);
  }

  private take(m: CountsMessage): void {
    const config = this.options.config();
    if (!config || !isObject(m) || m.node === this.options.nodeId || !isObject(m.counts)) return;
    const nowSecond = Math.floor(this.options.clock().getTime() / 1000);
    if (isObject(m.learned)) this.takeNames(m.learned);
    let agents = 0;
    for (const [agent, byDetector] of Object.entries(m.counts)) {
      if (++agents > MAX_AGENTS_PER_MESSAGE) break;
      if (!isObject(byDetector) || !this.options.active(agent)) continue;
      const seen: Counted[] = [];
      for (const detector of COUNTED) {
        const bySecond = Object.hasOwn(byDetector, detector) ? byDetector[detector] : undefined;
        if (!isObject(bySecond)) continue;
        const { windowSeconds } = config.detectors[detector];
        let entries = 0;
        for (const [text, n] of Object.entries(bySecond)) {
          if (++entries > windowSeconds + CLOCK_SKEW_SECONDS) break;
          const second = Number(text);
          if (!Number.isSafeInteger(second) || second <= nowSecond - windowSeconds || second > nowSecond + CLOCK_SKEW_SECONDS) continue;
          if (Number.isSafeInteger(n) && (n as number) > 0 && (n as number) < 1e6) this.options.counted(agent, detector, second, n as number);
        }
        seen.push(detector);
      }
      this.options.done(agent, seen);
    }
  }

  private takeNames(learned: Record<string, unknown>): void {
    let agents = 0;
    for (const [agent, names] of Object.entries(learned)) {
      if (++agents > MAX_AGENTS_PER_MESSAGE) break;
      if (!isObject(names) || !this.options.active(agent)) continue;
      for (const kind of ['actions', 'resources'] as const) {
        const list = Object.hasOwn(names, kind) ? names[kind] : undefined;
        if (!Array.isArray(list)) continue;
        for (const name of list.slice(0, MAX_NAMES)) if (typeof name === 'string' && name.length <= MAX_NAME) this.options.learned(agent, kind, name);
      }
    }
  }
}
