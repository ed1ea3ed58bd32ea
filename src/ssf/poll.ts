import type { Kysely } from 'kysely';
import { LeashError } from '../errors.ts';
import type { Database } from '../store/events.table.ts';
import type { NodeSigner } from '../tokens/node-signer.ts';
import { acksOf, advancePolled, cursorOf, recordAcks } from './delivery-store.ts';
import { SET_TYP } from './push.ts';
import { StreamScan, type ScanDeps } from './scan.ts';
import { positionOfJti, setClaims } from './sets.ts';
import { POLL, type StreamsView } from './stream.ts';

// Poll delivery (RFC 8936): the receiver asks for SETs, acknowledges the ones it has taken (or
// reports them unusable, `setErrs`), and may wait for new ones. The cursor moves over every SET
// acknowledged in a row; what the receiver has not acknowledged comes again on its next poll,
// with the same `jti`. Any node answers: the cursor and the acknowledgements are in Postgres.

export interface PollRequest {
  maxEvents?: number;
  returnImmediately?: boolean;
  ack?: string[];
  setErrs?: Record<string, { err: string; description?: string }>;
}

export interface PollDeps extends ScanDeps {
  db: Kysely<Database>;
  streams: StreamsView;
  signer: NodeSigner;
  /** The log position this node has applied: nothing past it can have been handed out. */
  head: () => number;
  nextCommit: (ms: number) => Promise<void>;
  log: (fields: Record<string, unknown>, message: string) => void;
  longPollMs: number;
  /** True once the transmitter is stopping: a waiting poll answers at once instead of waiting on. */
  stopped: () => boolean;
}

export const DEFAULT_MAX_EVENTS = 100;
/** Log events one poll looks at, at most: a receiver far behind gets `moreAvailable` and polls again. */
const SCAN_BOUND = 10_000;
const PAGE = 500;

export async function pollStream(deps: PollDeps, stream: string, request: PollRequest): Promise<{ sets: Record<string, string>; moreAvailable: boolean }> {
  const entry = deps.streams.get(stream);
  if (!entry) throw new LeashError('STREAM_NOT_FOUND', 'no event stream with this stream_id');
  if (entry.state.config!.delivery.method !== POLL) throw new LeashError('VALIDATION_FAILED', 'this stream is pushed to its receiver, not polled');
  let cursor = await cursorOf(deps.db, stream, entry.state.createdAt);

  const errs = Object.entries(request.setErrs ?? {});
  for (const [jti, { err }] of errs.slice(0, 10)) deps.log({ stream, jti, err }, 'the poll receiver reports a security event it could not use');
  const taken = [...(request.ack ?? []), ...errs.map(([jti]) => jti)].map((jti) => positionOfJti(stream, jti)).filter((p): p is number => p !== null);
  // A SET handed out lies within SCAN_BOUND positions of the cursor (the log has no gaps, and a
  // poll looks no further; the cursor only moves on): an id past that was never handed out, and
  // kept, it would only make every later poll read it (a receiver could fill the table up to the log's length).
  await recordAcks(deps.db, stream, taken, cursor, Math.min(deps.head(), cursor + SCAN_BOUND));

  const maxEvents = request.maxEvents ?? DEFAULT_MAX_EVENTS;
  const deadline = Date.now() + (request.returnImmediately === false || request.returnImmediately === undefined ? deps.longPollMs : 0);
  for (;;) {
    const found = await pending(deps, stream, cursor, maxEvents);
    cursor = found.cursor;
    // More to read already (the scan reached its bound) is an answer now: the receiver polls
    // again at once, rather than after a wait for a commit. A stream deleted, or made a push
    // stream, while the poll waited has nothing more for it. (Once the node is closing,
    // nextCommit no longer waits: looking again would spin until the deadline.)
    if (Object.keys(found.sets).length > 0 || found.more || found.ended || maxEvents === 0 || Date.now() >= deadline || deps.stopped()) return { sets: found.sets, moreAvailable: found.more };
    await deps.nextCommit(Math.max(0, deadline - Date.now()));
  }
}

/** Up to `maxEvents` SETs not acknowledged yet, signed; the cursor moved over the acknowledged ones in front. */
async function pending(deps: PollDeps, stream: string, from: number, maxEvents: number): Promise<{ sets: Record<string, string>; more: boolean; cursor: number; ended?: true }> {
  const entry = deps.streams.get(stream);
  if (!entry || entry.state.config!.delivery.method !== POLL) return { sets: {}, more: false, cursor: from, ended: true };
  if (entry.state.status !== 'enabled') return { sets: {}, more: false, cursor: from };
  const scan = await StreamScan.at(deps, stream, from);
  // (What the scan can reach: no acknowledgement past it is read.)
  const acked = await acksOf(deps.db, stream, from, from + SCAN_BOUND);
  const sets: Record<string, string> = {};
  let count = 0;
  let cursor = from;
  let leading = true;
  let more = false;
  const now = new Date();
  scanning: for (let scanned = 0; scanned < SCAN_BOUND; ) {
    const page = await scan.next(PAGE);
    if (page.length === 0) break;
    scanned += page.length;
    for (const item of page) {
      if (!item.event || acked.has(item.position)) {
        if (leading) cursor = item.position;
        continue;
      }
      leading = false;
      if (count === maxEvents) {
        more = true;
        break scanning;
      }
      const claims = setClaims(stream, deps.issuer, entry.state.config!.aud, item.position, item.at, item.event);
      const set = await deps.signer.sign(claims, now, SET_TYP);
      if (!set) throw new LeashError('NOT_READY', 'this node has no signing key it may use; try another node');
      sets[claims.jti as string] = set;
      count++;
    }
    if (scanned >= SCAN_BOUND && !scan.ended) more = true;
  }
  if (cursor > from) await advancePolled(deps.db, stream, cursor);
  return { sets, more, cursor };
}
