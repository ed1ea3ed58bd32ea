import { readHead, type EventStore, type StoredEvent } from './event-store.ts';

export interface Fold {
  position: number;
  apply(event: StoredEvent): void;
}

export interface FollowerStatus {
  caughtUp: boolean;
  position: number;
  lastError: string | null;
  lastSyncAt: Date | null;
}

/**
 * Keeps an in-memory fold caught up with the log: at start, after every local commit, and
 * on a poll for other nodes' appends. Reads are serialised and coalesced: however many
 * callers ask, at most one read runs and one more waits behind it.
 */
export class Follower {
  private inflight: Promise<void> | null = null;
  private queued: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private unsubscribe: (() => void) | null = null;
  readonly status: FollowerStatus = { caughtUp: false, position: 0, lastError: null, lastSyncAt: null };

  constructor(
    private readonly store: EventStore,
    private readonly fold: Fold,
    private readonly options: { pageSize?: number; pollMs?: number } = {},
  ) {}

  /** Catches up from the fold's position, then keeps following. */
  async start(): Promise<void> {
    await this.sync();
    // This process's own commits are applied as they are (no read back), unless they do not
    // continue the fold; then the log is read.
    this.unsubscribe = this.store.onCommit((_, events) => {
      if (!this.offer(events)) void this.sync().catch(() => {});
    });
    this.timer = setInterval(() => void this.sync().catch(() => {}), this.options.pollMs ?? 250);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.unsubscribe?.();
    this.timer = null;
    this.unsubscribe = null;
  }

  sync(): Promise<void> {
    if (this.queued) return this.queued;
    if (!this.inflight) return (this.inflight = this.read());
    this.queued = this.inflight
      .catch(() => {})
      .then(() => {
        this.queued = null;
        return (this.inflight = this.read());
      });
    return this.queued;
  }

  get position(): number {
    return this.fold.position;
  }

  /**
   * Events from the broadcast: applied at once when they continue the fold exactly (ones
   * already folded are skipped). False on a gap; the caller then reads the log (`sync`).
   */
  offer(events: StoredEvent[]): boolean {
    for (const event of events) {
      if (event.position <= this.fold.position) continue;
      if (event.position !== this.fold.position + 1) return false;
      this.fold.apply(event);
    }
    this.store.observe(events);
    this.status.position = this.fold.position;
    return true;
  }

  /** Resolves once the fold has applied `position` (read-your-writes after an append). */
  async waitFor(position: number, timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.fold.position < position) {
      if (Date.now() > deadline) throw new Error(`projection did not reach position ${position} within ${timeoutMs} ms`);
      const before = this.fold.position;
      await this.sync();
      // No progress: an older transaction is still open ahead of us. Back off a little.
      if (this.fold.position === before) await new Promise((r) => setTimeout(r, 5));
    }
  }

  /**
   * Reads until the fold holds everything committed by now: for a commit another node
   * announced (NOTIFY). A read holds back events that a transaction still open elsewhere on the
   * server could precede; this one is then tried again, backing off up to 100 ms, for up to
   * `timeoutMs`, rather than waiting for the next poll.
   */
  async catchUp(timeoutMs = 5000): Promise<void> {
    const { position } = await readHead(this.store.db);
    const deadline = Date.now() + timeoutMs;
    for (let pause = 5; ; pause = Math.min(pause * 2, 100)) {
      await this.sync();
      if (this.fold.position >= position || Date.now() > deadline) return;
      await new Promise((r) => setTimeout(r, pause));
    }
  }

  private async read(): Promise<void> {
    const pageSize = this.options.pageSize ?? 5000;
    try {
      let next = this.store.readAll(this.fold.position, pageSize);
      for (;;) {
        const page = await next;
        const full = page.length === pageSize;
        // Fetch the next page while this one is folded: the database works meanwhile.
        if (full) next = this.store.readAll(page[page.length - 1]!.position, pageSize);
        // The broadcast may have applied some of these meanwhile (see `offer`).
        for (const event of page) if (event.position > this.fold.position) this.fold.apply(event);
        if (!full) break;
      }
      Object.assign(this.status, { caughtUp: true, lastError: null, lastSyncAt: new Date(), position: this.fold.position });
    } catch (err) {
      this.status.lastError = (err as Error).message;
      throw err;
    } finally {
      this.inflight = null;
    }
  }
}
