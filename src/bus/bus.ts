/**
 * The broadcast between decision nodes (SPEC §6): fire-and-forget publish, at-most-once
 * delivery to every subscriber, this node's own included. Nothing relies on delivery:
 * every message carries log positions, so a lost one shows up as a gap and is repaired
 * from the event log.
 */
export interface Bus {
  publish(subject: string, message: unknown): void;
  subscribe(subject: string, handler: (message: unknown) => void): () => void;
  /** Where the broadcast goes, for logs and readiness (never credentials). */
  readonly description: string;
  close(): Promise<void>;
}

/** A single node's bus: delivery in this process, on a later tick, as over a network. */
export class InProcessBus implements Bus {
  private readonly handlers = new Map<string, Set<(message: unknown) => void>>();
  readonly description = 'in-process (single node)';

  publish(subject: string, message: unknown): void {
    const handlers = this.handlers.get(subject);
    if (!handlers) return;
    // Through JSON, as over the wire: no subscriber shares an object with the publisher,
    // and what cannot travel over NATS cannot travel here either.
    const copy = JSON.parse(JSON.stringify(message)) as unknown;
    for (const handler of handlers) queueMicrotask(() => handler(copy));
  }

  subscribe(subject: string, handler: (message: unknown) => void): () => void {
    let set = this.handlers.get(subject);
    if (!set) this.handlers.set(subject, (set = new Set()));
    set.add(handler);
    return () => set.delete(handler);
  }

  async close(): Promise<void> {
    this.handlers.clear();
  }
}
