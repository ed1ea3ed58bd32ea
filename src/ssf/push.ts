import { setTimeout as sleep } from 'node:timers/promises';
import type { Kysely } from 'kysely';
import type { Database } from '../store/events.table.ts';
import type { NodeSigner } from '../tokens/node-signer.ts';
import { OutboundFailure, outboundPost } from '../tokens/outbound-fetch.ts';
import { advancePushed, credentialOf, releaseLease, takeLease } from './delivery-store.ts';
import { StreamScan, type ScanDeps, type Scanned } from './scan.ts';
import { setClaims } from './sets.ts';
import { PUSH, type StreamsView } from './stream.ts';

// Push delivery (RFC 8935) of one stream, on the node that holds its lease: each SET POSTed
// on its own, in log order, the next only once the receiver took this one (2xx), retried with
// backoff while it does not answer. A 400 is the receiver refusing that SET for good (RFC
// 8935 §2.4: it names why); it is logged and the stream moves on, unless what it names is not
// the SET but the stream or the key it was signed with (see `notTheSet`): then it is retried
// like a receiver that is down. None of it is on the path of a decision or a revocation: a
// dead receiver only makes this loop wait.

export const SET_TYP = 'secevent+jwt';
const PAGE = 200;
export const LEASE_MS = 10_000;
/** How long an idle loop waits for a commit before renewing its lease (and looking again). */
const IDLE_MS = 2_000;

export interface PushDeps extends ScanDeps {
  db: Kysely<Database>;
  streams: StreamsView;
  signer: NodeSigner;
  nodeId: string;
  allowPrivateUrls: boolean;
  log: (fields: Record<string, unknown>, message: string) => void;
  /** Delay before retry n (1-based). */
  backoffMs: (attempt: number) => number;
  timeoutMs: number;
  /** Resolves at the next commit this node hears of (or after `ms`). */
  nextCommit: (ms: number) => Promise<void>;
  /** Told of each SET the receiver took: the stream and the log position it came from. */
  delivered?: (stream: string, position: number) => void;
}

/**
 * RFC 8935 §2.4 codes that fault the stream, not the SET: a key the receiver has not fetched yet
 * (each node signs with its own, and rotates it), or an issuer, audience or Authorization header
 * the receiver does not accept (yet). Every SET would be refused the same way until that is put
 * right, so dropping it would lose the stream's events meanwhile; the SET waits instead.
 */
const notTheSet = new Set(['invalid_key', 'invalid_issuer', 'invalid_audience', 'authentication_failed', 'access_denied']);

/** Why a receiver refused a SET: its `err` code only (bounded), never what else it sent. */
function refusal(body: Buffer): string {
  try {
    const err = (JSON.parse(body.toString('utf8')) as { err?: unknown }).err;
    return typeof err === 'string' && /^[\w-]{1,64}$/.test(err) ? err : 'unnamed';
  } catch {
    return 'unnamed';
  }
}

export class PushDelivery {
  private readonly stopping = new AbortController();
  private leaseUntil = 0;
  readonly done: Promise<void>;

  constructor(private readonly deps: PushDeps, readonly stream: string) {
    this.done = this.run().catch((err: Error) => deps.log({ stream, err: err.message }, 'security event delivery stopped on an error'));
  }

  async stop(): Promise<void> {
    this.stopping.abort();
    await this.done;
    await releaseLease(this.deps.db, this.stream, this.deps.nodeId).catch(() => {});
  }

  /** The stream while it is a push stream at all (else this loop ends). */
  private current() {
    const entry = this.deps.streams.get(this.stream);
    return entry && entry.state.config?.delivery.method === PUSH ? entry : undefined;
  }

  /** Keeps the lease fresh; the cursor when this node holds it, null when another node does. */
  private async lease(): Promise<number | null> {
    const entry = this.current()!;
    const asked = Date.now();
    const cursor = await takeLease(this.deps.db, this.stream, entry.state.createdAt, this.deps.nodeId, LEASE_MS);
    this.leaseUntil = cursor === null ? 0 : asked + LEASE_MS;
    return cursor;
  }

  private async run(): Promise<void> {
    let scan: StreamScan | null = null;
    while (!this.stopping.signal.aborted && this.current()) {
      const entry = this.current()!;
      if (entry.state.status !== 'enabled') {
        scan = null; // what waits is read again when it is enabled
        await this.deps.nextCommit(IDLE_MS);
        continue;
      }
      try {
        // The lease is renewed once half of it has run (not on every commit); while another node
        // holds it, this one looks again every IDLE_MS, not on every commit either.
        const cursor = scan && Date.now() < this.leaseUntil - LEASE_MS / 2 ? scan.position : await this.lease();
        if (cursor === null) {
          scan = null;
          await this.pause(IDLE_MS);
          continue;
        }
        if (!scan || scan.position !== cursor) scan = await StreamScan.at(this.deps, this.stream, cursor);
        const page = await scan.next(PAGE);
        if (page.length === 0 || scan.ended) {
          if (scan.ended) return;
          await this.deps.nextCommit(IDLE_MS);
          continue;
        }
        if (!(await this.deliverPage(page))) scan = null;
      } catch (err) {
        // The database is away: the cursor stays where it is, and the loop comes back.
        this.deps.log({ stream: this.stream, err: (err as Error).message }, 'security event delivery could not read or move its cursor; retrying');
        scan = null;
        await this.pause(this.deps.backoffMs(1));
      }
    }
  }

  /** Sends a page's SETs in order, moving the cursor after each; false when interrupted (the scan starts again from the cursor). */
  private async deliverPage(page: Scanned[]): Promise<boolean> {
    let done: number | null = null;
    for (const item of page) {
      if (item.event) {
        if (!(await this.send(item))) return false;
        if (!(await advancePushed(this.deps.db, this.stream, this.deps.nodeId, item.position))) return false;
        this.deps.delivered?.(this.stream, item.position);
        done = null;
      } else {
        done = item.position;
      }
    }
    return done === null || (await advancePushed(this.deps.db, this.stream, this.deps.nodeId, done));
  }

  /** One SET until the receiver takes it (true) or this loop must stop or start over (false). */
  private async send(item: Scanned): Promise<boolean> {
    for (let attempt = 1; ; attempt++) {
      const entry = this.current();
      if (this.stopping.signal.aborted || !entry || entry.state.status !== 'enabled') return false;
      if (Date.now() > this.leaseUntil - LEASE_MS / 2 && (await this.lease()) === null) return false;
      const config = entry.state.config!;
      const delivery = config.delivery as Extract<typeof config.delivery, { method: typeof PUSH }>;
      const now = new Date();
      const set = await this.deps.signer.sign(setClaims(this.stream, this.deps.issuer, config.aud, item.position, item.at, item.event!), now, SET_TYP);
      if (!set) {
        // Holding on would starve the stream: this node renews the lease while every other node
        // stands by. It lets go, and waits long enough for one that can sign to take it (an
        // idle loop looks every IDLE_MS).
        this.deps.log({ stream: this.stream, position: item.position }, 'this node has no signing key it may use; it leaves the stream\'s security events to another node');
        await releaseLease(this.deps.db, this.stream, this.deps.nodeId);
        this.leaseUntil = 0;
        await this.pause(2 * IDLE_MS);
        return false;
      }
      let failure: string;
      const headers: Record<string, string> = { 'content-type': 'application/secevent+jwt', accept: 'application/json' };
      const authorization = delivery.authorization ? await credentialOf(this.deps.db, delivery.authorization) : null;
      if (authorization) headers.authorization = authorization;
      try {
        const answer = await outboundPost(delivery.endpoint_url, { headers, body: set, signal: this.stopping.signal }, { allowPrivateUrls: this.deps.allowPrivateUrls, timeoutMs: this.deps.timeoutMs, maxBytes: 4096 });
        if (answer.status >= 200 && answer.status < 300) return true;
        const err = answer.status === 400 ? refusal(answer.body) : null;
        if (err !== null && !notTheSet.has(err)) {
          this.deps.log({ stream: this.stream, position: item.position, err }, 'the push receiver refused a security event; it is not sent again');
          return true;
        }
        failure = err === null ? `HTTP ${answer.status}` : `HTTP 400 ${err}`;
      } catch (err) {
        // The reason is ours (outbound-fetch.ts words it without the URL's secrets); anything else reads the same.
        failure = err instanceof OutboundFailure ? err.message : 'the request failed';
      }
      this.deps.log({ stream: this.stream, position: item.position, attempt, failure }, 'security event push failed; retrying');
      await this.pause(this.deps.backoffMs(attempt));
    }
  }

  /** Waits `ms`, or less if the loop is stopped meanwhile. */
  private pause(ms: number): Promise<void> {
    return sleep(ms, undefined, { signal: this.stopping.signal, ref: false }).catch(() => {});
  }
}
