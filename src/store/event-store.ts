import { sql, type Kysely, type Selectable, type Transaction } from 'kysely';
import { LeashError } from '../errors.ts';
import { runStatement } from './connect.ts';
import type { Database, EventsTable } from './events.table.ts';
import { GroupCommitter } from './group-commit.ts';
import { eventHash, GENESIS_HASH } from './hash-chain.ts';

export interface EventMetadata {
  /** Who caused it: `operator`, `operator:kill-switch`, `human:<id>`, `monitor`, a node id… never a token. */
  actor?: string;
  /** The operator token (break-glass) caused it, not a person whose call Cedar decided. */
  breakGlass?: boolean;
  /** sha-256 of the request that produced it, to tell a retry from a reused key. */
  requestHash?: string;
  [key: string]: unknown;
}

export interface NewEvent {
  type: string;
  data: Record<string, unknown>;
}

export interface StoredEvent<D = any> {
  position: number;
  streamId: string;
  streamType: string;
  version: number;
  type: string;
  data: D;
  metadata: EventMetadata;
  at: Date;
  idempotencyKey: string | null;
  prevHash: string;
  hash: string;
}

/** A number is the stream version the caller last saw (0: the stream must not exist yet). */
export type ExpectedVersion = number | 'any';

export interface AppendRequest {
  streamId: string;
  streamType: string;
  expectedVersion: ExpectedVersion;
  events: NewEvent[];
  /** Time comes from the caller (the command), never from inside the store. */
  at: Date;
  metadata?: EventMetadata;
  idempotencyKey?: string;
}

export type AppendOutcome =
  | { kind: 'appended'; events: StoredEvent[]; version: number; position: number }
  /** The idempotency key was already used: nothing was appended. */
  | { kind: 'duplicate'; streamId: string; version: number; position: number; requestHash: string | undefined };

type Db = Kysely<Database> | Transaction<Database>;

/** Serialises appenders across every node sharing the database; see `appendBatch`. */
const APPEND_LOCK = 0x6c65617368; // "leash"; leash_append_events (migration 0006) takes it too

export const EVENTS_CHANNEL = 'leash_events';

/**
 * The Postgres event log. Appends are group-committed (see GroupCommitter), each request
 * checked on its own (expected version, idempotency key), so one fsync serves many writers.
 */
export class EventStore {
  private readonly committer: GroupCommitter<AppendRequest, AppendOutcome>;
  private readonly listeners = new Set<(position: number, events: StoredEvent[]) => void>();
  /** The log's head as this node last saw it; null until known, or after a failed append. */
  private head: { position: number; hash: string } | null = null;
  /** Told how long each append took to be durable, or to fail (the metrics). */
  timed: ((seconds: number) => void) | null = null;

  constructor(
    readonly db: Kysely<Database>,
    maxBatch = 256,
  ) {
    this.committer = new GroupCommitter<AppendRequest, AppendOutcome>(async (batch) => {
      let outcomes: (AppendOutcome | LeashError)[] | null = null;
      try {
        outcomes = this.head ? await appendInOneStatement(this.db, batch, this.head) : null;
        if (!outcomes) outcomes = await this.db.transaction().execute((trx) => appendBatch(trx, batch));
      } catch (err) {
        this.head = null;
        throw err;
      }
      const events = outcomes.flatMap((o) => (o instanceof Error || o.kind !== 'appended' ? [] : o.events));
      this.observe(events);
      if (events.length > 0) for (const listener of this.listeners) listener(events[events.length - 1]!.position, events);
      return outcomes;
    }, maxBatch);
  }

  append(request: AppendRequest): Promise<AppendOutcome> {
    if (request.events.length === 0) return Promise.reject(new Error('append needs at least one event'));
    const timed = this.timed;
    if (!timed) return this.committer.submit(request);
    const started = performance.now();
    return this.committer.submit(request).finally(() => timed((performance.now() - started) / 1000));
  }

  /** Called after each commit made by this process, with its last position and its events in order. */
  onCommit(listener: (position: number, events: StoredEvent[]) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  readStream(streamId: string, upToVersion?: number): Promise<StoredEvent[]> {
    return readStream(this.db, streamId, upToVersion);
  }

  async readAll(afterPosition: number, limit: number): Promise<StoredEvent[]> {
    const events = await readAll(this.db, afterPosition, limit);
    this.observe(events);
    return events;
  }

  /**
   * Events this node has seen committed (its own, read back, or broadcast): the last one is
   * the log's head as far as this node knows, which lets the next append skip reading it.
   */
  observe(events: StoredEvent[]): void {
    const last = events[events.length - 1];
    if (last && last.position > (this.head?.position ?? 0)) this.head = { position: last.position, hash: last.hash };
  }
}

/**
 * Appends a batch in one transaction. The advisory lock makes appenders take turns, on
 * this node and every other: positions are handed out `head + 1, head + 2, …` and commit
 * in that order, so the log has no gaps and the hash chain has one well-defined head.
 */
export async function appendBatch(trx: Transaction<Database>, requests: AppendRequest[]): Promise<(AppendOutcome | LeashError)[]> {
  await sql`select pg_advisory_xact_lock(${APPEND_LOCK})`.execute(trx);
  const { head, versions } = await readHeadAndVersions(trx, [...new Set(requests.map((r) => r.streamId))]);
  const keys = requests.flatMap((r) => (r.idempotencyKey ? [r.idempotencyKey] : []));
  const used = await readIdempotencyKeys(trx, keys);

  let position = head.position;
  let prevHash = head.hash;
  const rows: StoredEvent[] = [];
  const outcomes = requests.map((req): AppendOutcome | LeashError => {
    const earlier = req.idempotencyKey ? used.get(req.idempotencyKey) : undefined;
    if (earlier) return { kind: 'duplicate', ...earlier };
    const current = versions.get(req.streamId) ?? 0;
    if (req.expectedVersion !== 'any' && req.expectedVersion !== current) {
      return new LeashError('VERSION_MISMATCH', `stream ${req.streamId} is at version ${current}, not ${req.expectedVersion}`, {
        expectedVersion: req.expectedVersion,
        currentVersion: current,
      });
    }
    const stored = chainEvents(req, current, { position, hash: prevHash });
    const tail = stored[stored.length - 1]!;
    position = tail.position;
    prevHash = tail.hash;
    rows.push(...stored);
    versions.set(req.streamId, tail.version);
    if (req.idempotencyKey) {
      used.set(req.idempotencyKey, {
        streamId: req.streamId,
        version: tail.version,
        position: tail.position,
        requestHash: req.metadata?.requestHash,
      });
    }
    return { kind: 'appended', events: stored, version: tail.version, position: tail.position };
  });

  if (rows.length > 0) await insertEvents(trx, rows); // the insert trigger NOTIFYs other nodes
  return outcomes;
}

/** A request's events chained onto `head`: the next positions and stream versions, each hash over the one before. */
function chainEvents(req: AppendRequest, currentVersion: number, head: { position: number; hash: string }): StoredEvent[] {
  let { position, hash: prevHash } = head;
  return req.events.map((e, i): StoredEvent => {
    const last = i === req.events.length - 1;
    const event: Omit<StoredEvent, 'hash'> = {
      position: ++position,
      streamId: req.streamId,
      streamType: req.streamType,
      version: currentVersion + i + 1,
      type: e.type,
      data: e.data,
      metadata: req.metadata ?? {},
      at: req.at,
      // The key marks the append as a whole, so it sits on its last event.
      idempotencyKey: last ? (req.idempotencyKey ?? null) : null,
      prevHash,
    };
    prevHash = eventHash(prevHash, event);
    return { ...event, hash: prevHash };
  });
}

const APPEND_EVENTS = { name: 'leash_append_events', text: 'select appended from leash_append_events($1, $2, $3::jsonb, $4::jsonb)' };

/**
 * The append in one round trip, when this node knows the log's head and every request
 * states the version it expects (no idempotency key, one request per stream):
 * `leash_append_events` (migration 0006) takes the append lock, so it cannot interleave with
 * a locked append, and writes nothing if the head has moved or a stream is not at its stated
 * version. Null when it does not apply or was refused: the caller then takes the locked path.
 */
async function appendInOneStatement(db: Kysely<Database>, requests: AppendRequest[], head: { position: number; hash: string }): Promise<AppendOutcome[] | null> {
  const streams = new Set(requests.map((r) => r.streamId));
  if (streams.size !== requests.length || requests.some((r) => r.idempotencyKey || typeof r.expectedVersion !== 'number')) return null;
  let tail = head;
  const outcomes = requests.map((req): AppendOutcome => {
    const stored = chainEvents(req, req.expectedVersion as number, tail);
    const last = stored[stored.length - 1]!;
    tail = last;
    return { kind: 'appended', events: stored, version: last.version, position: last.position };
  });
  const rows = outcomes.flatMap((o) => (o.kind === 'appended' ? o.events : [])).map((e) => ({
    position: e.position, stream_id: e.streamId, stream_type: e.streamType, version: e.version, type: e.type, data: e.data, metadata: e.metadata,
    recorded_at: e.at.toISOString(), idempotency_key: e.idempotencyKey, prev_hash: e.prevHash, hash: e.hash,
  }));
  const expected = requests.map((r) => ({ stream_id: r.streamId, version: r.expectedVersion }));
  const [result] = await runStatement<{ appended: boolean }>(db, APPEND_EVENTS, [String(head.position), head.hash, JSON.stringify(rows), JSON.stringify(expected)]);
  return result?.appended === true ? outcomes : null;
}

const INSERT_CHUNK = 1000; // 11 parameters a row, far below Postgres' 65535

export async function insertEvents(db: Db, events: StoredEvent[]): Promise<void> {
  for (let i = 0; i < events.length; i += INSERT_CHUNK) {
    await db
      .insertInto('events')
      .values(
        events.slice(i, i + INSERT_CHUNK).map((e) => ({
          position: e.position,
          stream_id: e.streamId,
          stream_type: e.streamType,
          version: e.version,
          type: e.type,
          data: JSON.stringify(e.data),
          metadata: JSON.stringify(e.metadata),
          recorded_at: e.at,
          idempotency_key: e.idempotencyKey,
          prev_hash: e.prevHash,
          hash: e.hash,
        })),
      )
      .execute();
  }
}

export async function readHead(db: Db): Promise<{ position: number; hash: string }> {
  const row = await db.selectFrom('events').select(['position', 'hash']).orderBy('position', 'desc').limit(1).executeTakeFirst();
  return row ? { position: Number(row.position), hash: row.hash } : { position: 0, hash: GENESIS_HASH };
}

/** The log head and the current version of each stream, in one round trip. */
export async function readHeadAndVersions(db: Db, streamIds: string[]): Promise<{ head: { position: number; hash: string }; versions: Map<string, number> }> {
  const { rows } = await sql<{ stream_id: string | null; version: number | null; position: string | null; hash: string | null }>`
    select null::text as stream_id, null::int as version, position, hash
      from (select position, hash from events order by position desc limit 1) as head
    union all
    select stream_id, max(version), null, null from events
     where stream_id = any(${streamIds}::text[]) group by stream_id`.execute(db);
  let head = { position: 0, hash: GENESIS_HASH };
  const versions = new Map<string, number>();
  for (const r of rows) {
    if (r.stream_id === null) head = { position: Number(r.position), hash: r.hash! };
    else versions.set(r.stream_id, Number(r.version));
  }
  return { head, versions };
}

type KeyUse = { streamId: string; version: number; position: number; requestHash: string | undefined };

export async function readIdempotencyKeys(db: Db, keys: string[]): Promise<Map<string, KeyUse>> {
  if (keys.length === 0) return new Map();
  const rows = await db
    .selectFrom('events')
    .select(['idempotency_key', 'stream_id', 'version', 'position', 'metadata'])
    .where('idempotency_key', 'in', keys)
    .execute();
  return new Map(
    rows.map((r) => [
      r.idempotency_key!,
      {
        streamId: r.stream_id,
        version: r.version,
        position: Number(r.position),
        requestHash: (r.metadata as EventMetadata).requestHash,
      },
    ]),
  );
}

export async function readStream(db: Db, streamId: string, upToVersion?: number): Promise<StoredEvent[]> {
  let query = db.selectFrom('events').selectAll().where('stream_id', '=', streamId);
  if (upToVersion !== undefined) query = query.where('version', '<=', upToVersion);
  return (await query.orderBy('version').execute()).map(toStoredEvent);
}

/**
 * Events after `afterPosition`, in log order, for catch-up readers. Only rows of
 * transactions older than every transaction still running are returned, so a reader can
 * never move past an event whose transaction commits late (the emmett rule). Appenders
 * also commit in position order under the append lock; this guard does not rely on it.
 */
export async function readAll(db: Db, afterPosition: number, limit: number): Promise<StoredEvent[]> {
  const rows = await db
    .selectFrom('events')
    .selectAll()
    .where('position', '>', String(afterPosition))
    .where(sql<boolean>`transaction_id < pg_snapshot_xmin(pg_current_snapshot())`)
    .orderBy('position')
    .limit(limit)
    .execute();
  return rows.map(toStoredEvent);
}

export function toStoredEvent(r: Selectable<EventsTable>): StoredEvent {
  return {
    position: Number(r.position),
    streamId: r.stream_id,
    streamType: r.stream_type,
    version: r.version,
    type: r.type,
    data: r.data,
    metadata: r.metadata as EventMetadata,
    at: r.recorded_at instanceof Date ? r.recorded_at : new Date(r.recorded_at),
    idempotencyKey: r.idempotency_key,
    prevHash: r.prev_hash,
    hash: r.hash,
  };
}
