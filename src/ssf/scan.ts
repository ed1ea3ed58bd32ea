import type { EventStore, StoredEvent } from '../store/event-store.ts';
import { securityEventOf, verificationOf, eventsDelivered, type History, type SecurityEvent } from './sets.ts';
import { evolveStream, initialStreamState, SSF_STREAM_TYPE, type StreamEvent, type StreamState } from './stream.ts';

// Walks the log from a stream's cursor and says, for each event, the security event it is on
// that stream, if any. What goes out is decided by the stream as it was at that point of the
// log, not as it is now: a type asked for later is not sent for earlier events, nothing is
// sent from while the stream was disabled, and what came while it was paused waits.

export interface ScanDeps {
  store: EventStore;
  issuer: string;
  history: History;
}

export interface Scanned {
  position: number;
  at: Date;
  /** What goes out for this event on this stream; null: nothing. */
  event: SecurityEvent | null;
}

export class StreamScan {
  private constructor(
    private readonly deps: ScanDeps,
    readonly stream: string,
    private state: StreamState,
    /** The last log position scanned. */
    public position: number,
  ) {}

  /** A scan from `cursor`, with the stream as it was there. */
  static async at(deps: ScanDeps, stream: string, cursor: number): Promise<StreamScan> {
    const own = await deps.store.readStream(`${SSF_STREAM_TYPE}/${stream}`);
    let state = initialStreamState();
    for (const e of own) if (e.position <= cursor) state = evolveStream(state, { type: e.type, data: e.data } as StreamEvent, e.at, e.position);
    return new StreamScan(deps, stream, state, cursor);
  }

  /** The stream was deleted at or before the scan's position: nothing more goes out on it. */
  get ended(): boolean {
    return this.state.deleted;
  }

  /** The next events of the log (at most `limit`), each with what it is on this stream. */
  async next(limit: number): Promise<Scanned[]> {
    if (this.ended) return [];
    const page = await this.deps.store.readAll(this.position, limit);
    const out: Scanned[] = [];
    for (const e of page) {
      out.push({ position: e.position, at: e.at, event: await this.eventFor(e) });
      this.position = e.position;
      if (this.ended) break;
    }
    return out;
  }

  private async eventFor(e: StoredEvent): Promise<SecurityEvent | null> {
    const own = e.streamType === SSF_STREAM_TYPE && e.streamId === `${SSF_STREAM_TYPE}/${this.stream}`;
    if (own) this.state = evolveStream(this.state, { type: e.type, data: e.data } as StreamEvent, e.at, e.position);
    if (!this.state.config || this.state.deleted || this.state.status === 'disabled') return null;
    if (own) return verificationOf(e);
    const event = await securityEventOf(e, this.deps.issuer, this.deps.history);
    return event && eventsDelivered(this.state.config).includes(event.type) ? event : null;
  }
}
