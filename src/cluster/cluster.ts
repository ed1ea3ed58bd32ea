import type { Bus } from '../bus/bus.ts';
import { LeashError } from '../errors.ts';
import type { StoredEvent } from '../store/event-store.ts';
import type { Follower } from '../store/follower.ts';
import { MAX_INLINE_BYTES, subjectsOf, type EventsMessage, type NodeMessage } from './messages.ts';

export { SUBJECTS, subjectsOf } from './messages.ts';

// SPEC §6. Every commit is broadcast with its log positions; every node applies it (or, on a
// gap, catches up from the log) and confirms to the committing node which position it has applied. A containment call
// returns once every live node has said so: the fence. Live nodes are known from heartbeats,
// which carry positions too, so a lost message is noticed within one heartbeat.

export interface ClusterOptions {
  nodeId: string;
  /** The deployment's id (its database's): the broadcast's subjects are its own. */
  deployment?: string;
  bus: Bus;
  follower: Follower;
  /** Heartbeat period (default 100 ms). */
  heartbeatMs?: number;
  /** How long without any broadcast before this node stops trusting what it holds (default 1 s). */
  stalenessMs?: number;
  /** How long a fence waits for the slowest live node (default: staleness bound + two heartbeats). */
  fenceTimeoutMs?: number;
  /**
   * How long a node must have heard the broadcast, after starting or after a silence, before
   * it trusts its caches: long enough for the others to hear its heartbeats and count it in
   * their fences (default three heartbeats; 0 for a single node).
   */
  joinMs?: number;
  log?: (fields: Record<string, unknown>, message: string) => void;
  /**
   * The policy version this node decides with (its compiled set in force). A new set is
   * compiled off the event loop, so it comes into force a little after its event is applied;
   * the node says in its heartbeats which version it decides with, for `awaitPolicy`.
   */
  policyVersion?: () => number;
}

export interface FenceResult {
  position: number;
  nodesConfirmed: number;
  nodesExpected: number;
  /** Live nodes that did not confirm in time; each fails closed on its own (see `admit`). */
  nodesMissing: string[];
}

export interface BroadcastHealth {
  ok: boolean;
  detail: string;
}

interface Peer {
  position: number;
  /** The policy version it decides with (0 when it has not said). */
  policyVersion: number;
  seenAt: number;
  stalenessMs: number;
}

/**
 * One node's part in the broadcast. `admit`/`release` bracket every decision: a node that
 * is behind (a gap) or has not heard the broadcast within its staleness bound reads the log
 * before it decides, and a node's confirmation of position P waits until no decision that
 * began before P is still on its way out, so no allow made on older state can leave after a
 * fence that counted this node.
 */
export class Cluster {
  readonly nodeId: string;
  private readonly subjects: ReturnType<typeof subjectsOf>;
  private readonly bus: Bus;
  private readonly follower: Follower;
  private readonly heartbeatMs: number;
  readonly stalenessMs: number;
  readonly fenceTimeoutMs: number;
  /** Heard for this long after a silence before this node trusts what it holds again. */
  private readonly joinMs: number;
  private readonly log: NonNullable<ClusterOptions['log']>;

  private readonly peers = new Map<string, Peer>();
  private lastHeard = 0;
  /** Since when this node has heard the broadcast without a silence past the bound. */
  private hearingSince = 0;
  private highestSeen = 0;
  private readonly startedAt = Date.now();
  private timer: NodeJS.Timeout | null = null;
  private readonly unsubscribe: (() => void)[] = [];
  /** Fences waiting, woken with the node a message came from (null: look at every node again). */
  private readonly waiters = new Set<(node: string | null) => void>();
  /** Decisions on their way, by ticket: the position and policy version each was decided at. */
  private readonly inflight = new Map<number, { at: number; policy: number }>();
  private tickets = 0;
  private readonly policyVersion: () => number;
  private reportedPolicy = 0;
  private acked = 0;
  /** Confirmations this node owes, by subject: the highest position asked for at each. */
  private readonly owed = new Map<string, number>();
  /** Told how long each fence took, and how old each event was when its broadcast arrived (the metrics). */
  timed: { fence: (seconds: number) => void; lag: (seconds: number) => void } | null = null;

  constructor(options: ClusterOptions) {
    this.nodeId = options.nodeId;
    this.subjects = subjectsOf(options.deployment);
    this.bus = options.bus;
    this.follower = options.follower;
    this.heartbeatMs = options.heartbeatMs ?? 100;
    this.stalenessMs = options.stalenessMs ?? 1000;
    this.fenceTimeoutMs = options.fenceTimeoutMs ?? this.stalenessMs + 2 * this.heartbeatMs;
    this.joinMs = options.joinMs ?? 3 * this.heartbeatMs;
    this.log = options.log ?? (() => {});
    this.policyVersion = options.policyVersion ?? (() => 0);
  }

  get description(): string {
    return this.bus.description;
  }

  start(): void {
    this.unsubscribe.push(
      this.bus.subscribe(this.subjects.events, (m) => this.onEvents(m as EventsMessage)),
      this.bus.subscribe(this.subjects.nodes, (m) => this.onNode(m as NodeMessage)),
      this.bus.subscribe(this.subjects.acks(this.nodeId), (m) => this.onNode(m as NodeMessage)),
    );
    this.heartbeat();
    this.timer = setInterval(() => this.heartbeat(), this.heartbeatMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.bus.publish(this.subjects.nodes, { kind: 'leaving', node: this.nodeId, position: this.acked } satisfies NodeMessage);
    for (const off of this.unsubscribe.splice(0)) off();
    for (const wake of [...this.waiters]) wake(null);
  }

  /** Tells every node about events this node has just committed. */
  broadcast(events: StoredEvent[]): void {
    if (events.length === 0) return;
    const message: EventsMessage = { node: this.nodeId, first: events[0]!.position, last: events[events.length - 1]!.position, replyTo: this.subjects.acks(this.nodeId) };
    const inline = events.map((e) => ({ ...e, at: e.at.toISOString() }));
    const size = Buffer.byteLength(JSON.stringify(inline));
    this.bus.publish(this.subjects.events, size <= MAX_INLINE_BYTES ? { ...message, events: inline } : message);
  }

  /**
   * Waits until every live node has applied `position`, or the fence timeout. A node that
   * does not answer in time is named; by then it has gone past its own staleness bound and
   * reads the log before every decision (or refuses, if it cannot).
   */
  async fence(position: number): Promise<FenceResult> {
    const started = performance.now();
    try {
      return await this.awaitConfirmations(position);
    } finally {
      this.timed?.fence((performance.now() - started) / 1000);
    }
  }

  private awaitConfirmations(position: number): Promise<FenceResult> {
    return this.awaitNodes(position, (id) => (id === this.nodeId ? this.confirmed() : this.peers.get(id)?.position ?? 0) >= position, 0, 'fence: nodes did not confirm in time');
  }

  /**
   * Waits until every live node decides with policy version `version` or a later one (no
   * decision made with an earlier one still on its way out), for as long as a fence would
   * plus `extraMs`: a node compiles a new set before it switches, which takes time.
   */
  awaitPolicy(position: number, version: number, extraMs: number): Promise<FenceResult> {
    const reached = (id: string) => (id === this.nodeId ? this.policyReported() : this.peers.get(id)?.policyVersion ?? 0) >= version;
    return this.awaitNodes(position, reached, extraMs, 'policy fence: nodes did not switch to the new policy set in time');
  }

  /** Tells the others at once that this node decides with another policy version now. */
  policySwitched(): void {
    this.heartbeat();
    for (const wake of [...this.waiters]) wake(this.nodeId);
  }

  private async awaitNodes(position: number, reached: (id: string) => boolean, extraMs: number, late: string): Promise<FenceResult> {
    const expected = this.liveNodes();
    // Long enough for every node that stays silent to have passed its own staleness bound.
    const slowest = Math.max(0, ...expected.map((id) => (this.peers.get(id)?.stalenessMs ?? 0) + 2 * this.heartbeatMs));
    const deadline = Date.now() + Math.max(this.fenceTimeoutMs, slowest) + extraMs;
    // Each message looks at the node it came from only: a fence over many nodes costs one
    // check per confirmation, not one per node for each. The fence hears every message while
    // it waits (several can arrive in one turn), and looks at every node again at the end.
    const left = new Set(expected.filter((id) => !reached(id)));
    const woken: (string | null)[] = [];
    let signal: (() => void) | null = null;
    const wake = (node: string | null) => {
      woken.push(node);
      signal?.();
    };
    this.waiters.add(wake);
    try {
      for (;;) {
        for (const node of woken.splice(0)) {
          if (node === null) {
            for (const id of left) if (reached(id)) left.delete(id);
          } else if (left.has(node) && reached(node)) left.delete(node);
        }
        const wait = deadline - Date.now();
        if (left.size === 0 || wait <= 0) {
          for (const id of left) if (reached(id)) left.delete(id);
          const missing = [...left];
          if (missing.length > 0) this.log({ position, nodes: missing.slice(0, 100), missing: missing.length }, late);
          return { position, nodesConfirmed: expected.length - missing.length, nodesExpected: expected.length, nodesMissing: missing };
        }
        if (woken.length === 0) {
          await new Promise<void>((resolve) => {
            const timer = setTimeout(() => signal?.(), wait);
            signal = () => {
              clearTimeout(timer);
              signal = null;
              resolve();
            };
          });
        }
      }
    } finally {
      this.waiters.delete(wake);
    }
  }

  /**
   * This node and every node heard from within its staleness bound: one silent for longer
   * has stopped trusting its caches by now, so nobody needs to wait for it.
   */
  liveNodes(): string[] {
    const now = Date.now();
    const live = [...this.peers].filter(([id, p]) => id !== this.nodeId && p.seenAt >= now - p.stalenessMs - 2 * this.heartbeatMs).map(([id]) => id);
    return [this.nodeId, ...live.sort()];
  }

  health(now = Date.now()): BroadcastHealth {
    const doubt = this.doubt(now);
    return doubt ? { ok: false, detail: doubt } : { ok: true, detail: `${this.liveNodes().length} live node(s) on ${this.bus.description}` };
  }

  /** Why this node must not trust its caches right now, or null when it may (cheap: every decision asks). */
  private doubt(now = Date.now()): string | null {
    const silentFor = now - (this.lastHeard || this.startedAt);
    if (silentFor > this.stalenessMs) return `no broadcast heard for ${silentFor} ms (bound ${this.stalenessMs} ms); decisions re-read the event log first`;
    // Joining (or back after a silence): the others count this node in their fences only
    // once they have heard its heartbeats, so until then it keeps re-reading the log.
    if (now - this.hearingSince < this.joinMs) return 'joining the broadcast; decisions re-read the event log first';
    if (this.highestSeen > this.follower.position) return `catching up from position ${this.follower.position} to ${this.highestSeen}`;
    return null;
  }

  /**
   * Before a decision: catch up first when this node knows it is behind or has not heard
   * the broadcast within its bound. If the log cannot be read either, nothing is decided.
   * Returns the ticket `release` takes once the answer has left.
   */
  async admit(): Promise<number> {
    if (this.doubt() !== null) {
      try {
        await this.follower.sync();
      } catch {
        throw new LeashError('NOT_READY', 'this node has lost the revocation broadcast and cannot read the event log, so it decides nothing');
      }
    }
    const ticket = ++this.tickets;
    this.inflight.set(ticket, { at: this.follower.position, policy: this.policyVersion() });
    return ticket;
  }

  release(ticket: number): void {
    this.inflight.delete(ticket);
    this.confirm();
    // The last decision made with a superseded policy version has left: say so now.
    if (this.reportedPolicy !== this.policyReported()) this.policySwitched();
  }

  private heartbeat(): void {
    this.reportedPolicy = this.policyReported();
    this.bus.publish(this.subjects.nodes, { kind: 'heartbeat', node: this.nodeId, position: this.confirmed(), stalenessMs: this.stalenessMs, policyVersion: this.reportedPolicy } satisfies NodeMessage);
  }

  private heard(position: number): void {
    const now = Date.now();
    if (now - this.lastHeard > this.stalenessMs) this.hearingSince = now;
    this.lastHeard = now;
    if (position > this.highestSeen) this.highestSeen = position;
  }

  private onEvents(message: EventsMessage): void {
    if (typeof message?.last !== 'number' || typeof message.first !== 'number') return;
    this.heard(message.last);
    if (typeof message.replyTo === 'string' && message.node !== this.nodeId) this.owed.set(message.replyTo, Math.max(message.last, this.owed.get(message.replyTo) ?? 0));
    const events = message.events?.map((e) => ({ ...e, at: new Date(e.at) }));
    if (events && this.timed && message.node !== this.nodeId) for (const e of events) this.timed.lag(Math.max(0, Date.now() - e.at.getTime()) / 1000);
    // Applied at once when the events continue this node's fold; anything else is a gap.
    if (!events || !this.follower.offer(events)) this.catchUp();
    this.confirm();
  }

  private onNode(message: NodeMessage): void {
    if (typeof message?.node !== 'string' || typeof message.position !== 'number') return;
    this.heard(message.position);
    if (message.kind === 'leaving') this.peers.delete(message.node);
    else {
      const known = this.peers.get(message.node);
      const stalenessMs = typeof message.stalenessMs === 'number' && message.stalenessMs > 0 ? message.stalenessMs : known?.stalenessMs ?? this.stalenessMs;
      const policyVersion = typeof message.policyVersion === 'number' ? message.policyVersion : known?.policyVersion ?? 0;
      this.peers.set(message.node, { position: Math.max(message.position, known?.position ?? 0), seenAt: Date.now(), stalenessMs, policyVersion });
    }
    if (message.position > this.follower.position) this.catchUp();
    for (const wake of [...this.waiters]) wake(message.node);
  }

  private catchUp(): void {
    this.follower.sync().then(
      () => this.confirm(),
      (err: Error) => this.log({ err: err.message }, 'catching up from the event log failed; will retry'),
    );
  }

  /**
   * The position this node vouches for: applied, and no decision made before it still on
   * its way out. Heartbeats and fences use this, never the bare fold position.
   */
  private confirmed(): number {
    let safe = this.follower.position;
    for (const { at } of this.inflight.values()) if (at < safe) safe = at;
    return Math.max(safe, this.acked);
  }

  /** The policy version this node vouches for: in force, and no decision made with an earlier one still on its way out. */
  private policyReported(): number {
    let version = this.policyVersion();
    for (const { policy } of this.inflight.values()) if (policy < version) version = policy;
    return version;
  }

  /**
   * Confirms to each committing node, as soon as the position this node vouches for has
   * reached what it asked for. Everyone else learns positions from heartbeats.
   */
  private confirm(): void {
    const position = this.confirmed();
    // A fence waiting on this node itself looks again (a decision has left, events were applied).
    if (position !== this.acked) for (const wake of [...this.waiters]) wake(this.nodeId);
    this.acked = position;
    for (const [to, asked] of this.owed) {
      if (asked > position) continue;
      this.owed.delete(to);
      this.bus.publish(to, { kind: 'applied', node: this.nodeId, position } satisfies NodeMessage);
    }
  }
}
