import type { Kysely } from 'kysely';
import type { EventStore } from '../store/event-store.ts';
import type { Database } from '../store/events.table.ts';
import type { NodeSigner } from '../tokens/node-signer.ts';
import { pollStream, type PollRequest } from './poll.ts';
import { PushDelivery } from './push.ts';
import { PUSH, type StreamsView } from './stream.ts';

// Leash as a Shared Signals transmitter, on every node: a delivery loop for each push stream
// (only the node holding the stream's lease sends; the others stand by to take over), and the
// poll endpoint's work. Loops wake on every commit this node hears of, its own or another
// node's, so a SET leaves within milliseconds of the event it reports.

export interface TransmitterOptions {
  db: Kysely<Database>;
  store: EventStore;
  streams: StreamsView;
  signer: NodeSigner;
  issuer: string;
  nodeId: string;
  allowPrivateUrls: boolean;
  /** The log position this node has applied. */
  head: () => number;
  log: (fields: Record<string, unknown>, message: string) => void;
  /** Delay before push retry n (1-based); default 250 ms doubling to 5 s. */
  backoffMs?: (attempt: number) => number;
  /** One push attempt's deadline (default 5 s). */
  timeoutMs?: number;
  /** How long a poll without `returnImmediately` waits for a SET (default 10 s). */
  longPollMs?: number;
  delivered?: (stream: string, position: number) => void;
}

/** Polls that may wait at once on one stream, on one node (a receiver needs one; a few more cover a restart's overlap). */
export const MAX_WAITING_POLLS = 4;

export class Transmitter {
  private readonly pushes = new Map<string, PushDelivery>();
  private waiters = new Set<() => void>();
  /** Long polls waiting, by stream. */
  private readonly waitingPolls = new Map<string, number>();
  /** Set by `stop()`: no loop waits any more, and a waiting poll answers with what it has. */
  stopped = false;

  constructor(private readonly options: TransmitterOptions) {}

  start(): void {
    this.options.streams.onChange = () => this.reconcile();
    this.reconcile();
  }

  /** Something was committed: every waiting loop looks again. */
  wake(): void {
    const waiting = this.waiters;
    this.waiters = new Set();
    for (const resolve of waiting) resolve();
  }

  /**
   * A poll of `stream`. Every commit wakes every waiting poll, and each reads the log and the
   * database again: past MAX_WAITING_POLLS waiting on one stream on this node, a poll answers
   * at once (as with `returnImmediately`) rather than joining them, so no number of open polls
   * multiplies the work each commit costs.
   */
  async poll(stream: string, request: PollRequest): Promise<{ sets: Record<string, string>; moreAvailable: boolean }> {
    const waiting = this.waitingPolls.get(stream) ?? 0;
    const waits = request.returnImmediately !== true && waiting < MAX_WAITING_POLLS;
    if (waits) this.waitingPolls.set(stream, waiting + 1);
    try {
      return await pollStream({ ...this.deps(), head: this.options.head, longPollMs: this.options.longPollMs ?? 10_000, stopped: () => this.stopped }, stream, waits ? request : { ...request, returnImmediately: true });
    } finally {
      if (waits) {
        const left = this.waitingPolls.get(stream)! - 1;
        if (left === 0) this.waitingPolls.delete(stream);
        else this.waitingPolls.set(stream, left);
      }
    }
  }

  /** Ends every push loop and every waiting poll (the node is closing); a second call only waits for the first. */
  async stop(): Promise<void> {
    this.stopped = true;
    const stopping = [...this.pushes.values()].map((p) => p.stop());
    this.wake();
    await Promise.all(stopping);
    this.pushes.clear();
  }

  /** A delivery loop for every push stream, none for any other. */
  private reconcile(): void {
    if (this.stopped) return;
    for (const [id, entry] of this.options.streams.streams) {
      if (entry.state.config?.delivery.method !== PUSH || this.pushes.has(id)) continue;
      const push = new PushDelivery({
        ...this.deps(), nodeId: this.options.nodeId, allowPrivateUrls: this.options.allowPrivateUrls,
        backoffMs: this.options.backoffMs ?? ((n) => Math.min(5_000, 250 * 2 ** (n - 1))), timeoutMs: this.options.timeoutMs ?? 5_000,
        ...(this.options.delivered ? { delivered: this.options.delivered } : {}),
      }, id);
      this.pushes.set(id, push);
      void push.done.then(() => {
        if (this.pushes.get(id) === push) this.pushes.delete(id);
      });
    }
  }

  private deps() {
    const { db, store, streams, signer, issuer, log } = this.options;
    return { db, store, streams, signer, issuer, log, history: (id: string) => store.readStream(id), nextCommit: (ms: number) => this.nextCommit(ms) };
  }

  private nextCommit(ms: number): Promise<void> {
    if (this.stopped) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      timer.unref();
      this.waiters.add(done);
    });
  }
}
