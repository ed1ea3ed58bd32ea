import { LeashError } from '../errors.ts';
import { fold, streamId, type Aggregate } from '../registry/streams.ts';
import { readIdempotencyKeys, type EventStore } from '../store/event-store.ts';
import type { Follower } from '../store/follower.ts';

export interface CommandOptions {
  now: Date;
  /** Who asked; recorded in the event metadata. */
  actor: string;
  /** Asked with the operator token (not a person's, decided by Cedar): recorded in the metadata. */
  breakGlass?: boolean;
  /** From `If-Match`: the stream version the caller last saw. */
  expectedVersion?: number;
  idempotencyKey?: string;
  /** Fingerprint of the request, to refuse a reused idempotency key with another body. */
  requestHash?: string;
}

export interface CommandResult<S> {
  state: S;
  version: number;
  position: number;
  /** True when this was a retry with a known idempotency key: nothing was appended. */
  replayed: boolean;
}

const RACE_RETRIES = 5;

/**
 * A stream's state as this node's view holds it, if it holds it: deciding on it saves reading
 * the stream. The append's version check still guards it, so a view that lags costs a retry,
 * never a wrong write.
 */
export type StatePeek = (streamType: string, id: string) => { state: unknown; version: number } | undefined;

/**
 * The shell around a decider: take the stream's state (from the view via `peek`, else by
 * reading and folding the stream), decide, append with that version, and return only once
 * this node's registry view has applied the result.
 */
export class CommandHandler {
  constructor(
    private readonly store: EventStore,
    private readonly follower: Follower,
    private readonly peek: StatePeek = () => undefined,
  ) {}

  async handle<C, E extends { type: string; data: unknown }, S>(
    aggregate: Aggregate<C, E, S>,
    id: string,
    command: C,
    options: CommandOptions,
  ): Promise<CommandResult<S>> {
    const stream = streamId(aggregate.streamType, id);
    if (options.idempotencyKey) {
      const replay = await this.replay(aggregate, stream, options);
      if (replay) return replay;
    }

    for (let attempt = 0; ; attempt++) {
      // First try: the view's state, when it is at the version the caller names (if any).
      // Anything surprising on it (a refusal, a lost race) is decided again on the stream.
      const peeked = attempt === 0 ? this.peek(aggregate.streamType, id) : undefined;
      const known = peeked && (options.expectedVersion === undefined || options.expectedVersion === peeked.version) ? peeked : undefined;
      let version: number;
      let state: S;
      let events: E[];
      if (known) {
        version = known.version;
        state = known.state as S;
        try {
          events = aggregate.decide(command, state);
        } catch {
          continue;
        }
      } else {
        const history = await this.store.readStream(stream);
        version = history.length;
        if (options.expectedVersion !== undefined && options.expectedVersion !== version) {
          throw new LeashError('VERSION_MISMATCH', `${aggregate.streamType} ${id} is at version ${version}, not ${options.expectedVersion}`, {
            expectedVersion: options.expectedVersion,
            currentVersion: version,
          });
        }
        state = fold(aggregate, history);
        try {
          events = aggregate.decide(command, state);
        } catch (err) {
          // A request with the same Idempotency-Key may have committed since the check above
          // (concurrent retries): then this is its retry, answered as it was, not refused.
          const replay = options.idempotencyKey ? await this.replay(aggregate, stream, options) : null;
          if (replay) return replay;
          throw err;
        }
      }

      let outcome;
      try {
        outcome = await this.store.append({
          streamId: stream,
          streamType: aggregate.streamType,
          expectedVersion: version,
          events: events.map((e) => ({ type: e.type, data: e.data as Record<string, unknown> })),
          at: options.now,
          metadata: { actor: options.actor, ...(options.breakGlass ? { breakGlass: true } : {}), ...(options.requestHash ? { requestHash: options.requestHash } : {}) },
          ...(options.idempotencyKey ? { idempotencyKey: options.idempotencyKey } : {}),
        });
      } catch (err) {
        // Someone else wrote in between. Without If-Match the caller asked for no
        // precondition, so decide again on the fresh state; with it, report the conflict.
        const raced = err instanceof LeashError && err.code === 'VERSION_MISMATCH';
        if (raced && options.expectedVersion === undefined && attempt < RACE_RETRIES) continue;
        throw err;
      }
      if (outcome.kind === 'duplicate') {
        const replay = await this.replay(aggregate, stream, options);
        if (replay) return replay;
        throw new Error('idempotency key vanished'); // unreachable: keys are never deleted
      }
      await this.follower.waitFor(outcome.position).catch(() => {
        // Committed, but this node's view lags: say so plainly. A retry with the same
        // Idempotency-Key returns the committed result without appending again.
        throw new LeashError('NOT_READY', `the change is committed at position ${outcome.position}, but this node has not caught up yet`, {
          position: outcome.position,
        });
      });
      const next = events.reduce((s, e) => aggregate.evolve(s, e, options.now), state);
      return { state: next, version: outcome.version, position: outcome.position, replayed: false };
    }
  }

  /** The same answer as the first time, rebuilt from the stream as it was then. */
  private async replay<E, S>(aggregate: Pick<Aggregate<never, E, S>, 'initialState' | 'evolve'>, stream: string, options: CommandOptions): Promise<CommandResult<S> | null> {
    const key = options.idempotencyKey!;
    const earlier = (await readIdempotencyKeys(this.store.db, [key])).get(key);
    if (!earlier) return null;
    if (earlier.streamId !== stream || earlier.requestHash !== options.requestHash) {
      throw new LeashError('IDEMPOTENCY_KEY_REUSED', 'this Idempotency-Key was already used for a different request');
    }
    const history = await this.store.readStream(stream, earlier.version);
    return { state: fold(aggregate, history), version: earlier.version, position: earlier.position, replayed: true };
  }
}
