import { LeashError } from '../errors.ts';
import { assertNever, type CommandMetadata } from '../registry/agent.ts';
import type { Aggregate } from '../registry/streams.ts';
import type { StoredEvent } from '../store/event-store.ts';

// An event stream to one receiver of security events (Shared Signals Framework): which events
// it wants, how they reach it (pushed to its URL, or polled from ours), and whether it is
// flowing. One log stream per event stream (`ssf-stream/<id>`), so every node knows every
// stream, and its history (who created, paused or deleted it) is in the audit trail. The push
// receiver's Authorization header is a secret: the configuration names it by a random id, and
// the header itself waits in its own table (delivery-store.ts).

export const SSF_STREAM_TYPE = 'ssf-stream';

export const PUSH = 'urn:ietf:rfc:8935';
export const POLL = 'urn:ietf:rfc:8936';

/** `authorization`: the id the receiver's Authorization header is kept under (delivery-store.ts), never the header; null: none. */
export type Delivery = { method: typeof PUSH; endpoint_url: string; authorization: string | null } | { method: typeof POLL };
export type StreamStatus = 'enabled' | 'paused' | 'disabled';

export interface StreamConfig {
  aud: string;
  delivery: Delivery;
  /** The event types asked for; null: not said, so every type Leash sends. */
  events_requested: string[] | null;
  description: string | null;
}

export interface StreamState {
  id: string;
  config: StreamConfig | null;
  status: StreamStatus;
  reason: string | null;
  deleted: boolean;
  /** The log position of the stream's creation: delivery starts after it. */
  createdAt: number;
  /** When the receiver last asked for a verification event (ms), to space them out. */
  verifiedAt: number;
}

export type StreamEvent =
  | { type: 'StreamCreated'; data: { id: string; config: StreamConfig } }
  | { type: 'StreamConfigured'; data: { config: StreamConfig } }
  | { type: 'StreamStatusChanged'; data: { status: StreamStatus; reason: string | null } }
  | { type: 'VerificationRequested'; data: { state: string | null } }
  | { type: 'StreamDeleted'; data: Record<string, never> };

export type StreamCommand =
  | { type: 'CreateStream'; data: { id: string; config: StreamConfig }; metadata: CommandMetadata }
  | { type: 'ConfigureStream'; data: { config: StreamConfig }; metadata: CommandMetadata }
  | { type: 'ChangeStreamStatus'; data: { status: StreamStatus; reason: string | null }; metadata: CommandMetadata }
  | { type: 'RequestVerification'; data: { state: string | null }; metadata: CommandMetadata }
  | { type: 'DeleteStream'; data: Record<string, never>; metadata: CommandMetadata };

/**
 * A receiver may ask for a verification event this often (seconds); sooner is a 429 (SSF
 * `min_verification_interval`). Each one is an event in the shared log, read again by every
 * scan of its stream: a receiver checking its stream needs one now and then, not a flood.
 */
export const MIN_VERIFICATION_INTERVAL_SECONDS = 30;

export const initialStreamState = (): StreamState => ({ id: '', config: null, status: 'enabled', reason: null, deleted: false, createdAt: 0, verifiedAt: 0 });

const notFound = () => new LeashError('STREAM_NOT_FOUND', 'no event stream with this stream_id');

export function decideStream(command: StreamCommand, state: StreamState): StreamEvent[] {
  if (command.type === 'CreateStream') {
    if (state.config || state.deleted) throw new LeashError('ALREADY_EXISTS', 'an event stream with this stream_id exists');
    return [{ type: 'StreamCreated', data: command.data }];
  }
  if (!state.config || state.deleted) throw notFound();
  switch (command.type) {
    case 'ConfigureStream':
      return [{ type: 'StreamConfigured', data: command.data }];
    case 'ChangeStreamStatus':
      if (command.data.status === state.status && command.data.reason === state.reason) return [];
      return [{ type: 'StreamStatusChanged', data: command.data }];
    case 'RequestVerification':
      const wait = state.verifiedAt + MIN_VERIFICATION_INTERVAL_SECONDS * 1000 - command.metadata.now.getTime();
      if (wait > 0) {
        throw new LeashError('RATE_LIMITED', `a verification event may be asked for once every ${MIN_VERIFICATION_INTERVAL_SECONDS} s`, { retryAfterSeconds: Math.ceil(wait / 1000) });
      }
      return [{ type: 'VerificationRequested', data: command.data }];
    case 'DeleteStream':
      return [{ type: 'StreamDeleted', data: {} }];
    default:
      return assertNever(command);
  }
}

export function evolveStream(state: StreamState, event: StreamEvent, at: Date, position = 0): StreamState {
  switch (event.type) {
    case 'StreamCreated':
      return { ...state, id: event.data.id, config: event.data.config, createdAt: position };
    case 'StreamConfigured':
      return { ...state, config: event.data.config };
    case 'StreamStatusChanged':
      return { ...state, status: event.data.status, reason: event.data.reason };
    case 'VerificationRequested':
      return { ...state, verifiedAt: at.getTime() };
    case 'StreamDeleted':
      return { ...state, deleted: true };
    default:
      return assertNever(event);
  }
}

export const streamAggregate: Aggregate<StreamCommand, StreamEvent, StreamState> = {
  streamType: SSF_STREAM_TYPE,
  initialState: initialStreamState,
  decide: decideStream,
  evolve: evolveStream,
};

/** Streams a deployment may have at once: each is a delivery loop on some node. */
export const MAX_STREAMS = 32;

export interface StreamEntry {
  state: StreamState;
  version: number;
}

/** Every node's view of the event streams, folded from the log (deleted ones leave it). */
export class StreamsView {
  readonly streams = new Map<string, StreamEntry>();
  /** Told when a stream's configuration or status changes (the transmitter restarts its delivery). */
  onChange: ((id: string) => void) | null = null;

  apply(e: StoredEvent): void {
    if (e.streamType !== SSF_STREAM_TYPE) return;
    const id = e.streamId.slice(SSF_STREAM_TYPE.length + 1);
    const known = this.streams.get(id);
    const state = evolveStream(known?.state ?? initialStreamState(), { type: e.type, data: e.data } as StreamEvent, e.at, e.position);
    if (state.deleted) this.streams.delete(id);
    else this.streams.set(id, { state, version: e.version });
    if (e.type !== 'VerificationRequested') this.onChange?.(id);
  }

  get(id: string): StreamEntry | undefined {
    return this.streams.get(id);
  }
}
