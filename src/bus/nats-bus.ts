import { connect, JSONCodec, type NatsConnection, type Subscription } from 'nats';
import type { Bus } from './bus.ts';

const codec = JSONCodec();

interface Sub {
  subject: string;
  handler: (message: unknown) => void;
  nats: Subscription | null;
}

/**
 * The broadcast over NATS core pub/sub (`NATS_URL`, comma-separated for a cluster). A node
 * started while NATS is down serves anyway (failing closed: see Cluster) and keeps dialling;
 * once connected, the client reconnects for ever and re-makes subscriptions by itself.
 */
export class NatsBus implements Bus {
  private connection: NatsConnection | null = null;
  private readonly subs = new Set<Sub>();
  private closed = false;
  private retry: NodeJS.Timeout | null = null;
  readonly description: string;

  constructor(
    private readonly servers: string[],
    private readonly name: string,
    private readonly onError: (err: Error) => void = () => {},
  ) {
    // Host and port only: a NATS URL may carry credentials.
    this.description = `NATS ${servers.map((s) => s.replace(/^[a-z]+:\/\/(?:[^@/]*@)?/i, '')).join(',')}`;
    void this.dial();
  }

  private async dial(): Promise<void> {
    this.retry = null;
    try {
      const nc = await connect({
        // The first server listed is this node's own; the others are where it fails over to.
        servers: this.servers, noRandomize: true, name: this.name, maxReconnectAttempts: -1, reconnectTimeWait: 100, reconnectJitter: 50,
        pingInterval: 1000, maxPingOut: 2, timeout: 2000,
      });
      if (this.closed) return void (await nc.close());
      this.connection = nc;
      for (const sub of this.subs) this.attach(sub);
      void nc.closed().then((err) => err && this.onError(err));
    } catch (err) {
      if (this.closed) return;
      this.onError(err as Error);
      this.retry = setTimeout(() => void this.dial(), 250);
      this.retry.unref();
    }
  }

  publish(subject: string, message: unknown): void {
    // Before the first connection there is nobody to tell; positions in later messages,
    // and the catch-up a node does on joining, cover what is not sent.
    if (!this.connection || this.connection.isClosed()) return;
    this.connection.publish(subject, codec.encode(message));
  }

  subscribe(subject: string, handler: (message: unknown) => void): () => void {
    const sub: Sub = { subject, handler, nats: null };
    this.subs.add(sub);
    if (this.connection) this.attach(sub);
    return () => {
      this.subs.delete(sub);
      sub.nats?.unsubscribe();
    };
  }

  private attach(sub: Sub): void {
    sub.nats = this.connection!.subscribe(sub.subject, {
      callback: (err, msg) => {
        if (err) return;
        let message: unknown;
        try {
          message = codec.decode(msg.data);
        } catch {
          return; // not JSON, so not ours
        }
        sub.handler(message);
      },
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.retry) clearTimeout(this.retry);
    const nc = this.connection;
    this.connection = null;
    if (nc && !nc.isClosed()) await nc.close();
  }
}
