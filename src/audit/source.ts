import { sql, type Kysely } from 'kysely';
import { toStoredEvent, type StoredEvent } from '../store/event-store.ts';
import type { Database } from '../store/events.table.ts';
import { type StoredDecision } from './decision-log.ts';
import { readDecisions, readSubjectDecisions } from './decision-reads.ts';

// Where the audit trail is read from (SPEC §8): PostgreSQL, archive files, or both. Replay and
// trace read records through this and do not care which.

export interface AuditSource {
  /** For messages: where the records come from. */
  readonly describe: string;
  /** Events after position `after`, in log order, a page at a time. */
  events(after?: number): AsyncIterable<StoredEvent[]>;
  /** Decisions after sequence number `after`, in order, a page at a time. */
  decisions(after?: number): AsyncIterable<StoredDecision[]>;
  /** The last position and sequence number held (progress totals). */
  heads(): Promise<{ events: number; decisions: number }>;
  /** One decision by its id, if held. */
  decision(id: string): Promise<StoredDecision | undefined>;
}

export async function readEvents(db: Kysely<Database>, after: number, limit: number): Promise<StoredEvent[]> {
  return (await db.selectFrom('events').selectAll().where('position', '>', String(after)).orderBy('position').limit(limit).execute()).map(toStoredEvent);
}

export async function maxOf(db: Kysely<Database>, table: 'events' | 'decisions' | 'decision_anchors'): Promise<number> {
  const column = table === 'events' ? 'position' : 'seq';
  return Number((await sql<{ max: string | null }>`select max(${sql.ref(column)}) as max from ${sql.table(table)}`.execute(db)).rows[0]?.max ?? 0);
}

/** Pages from `read` until one comes back short. */
export async function* paged<R>(read: (after: number, limit: number) => Promise<R[]>, key: (r: R) => number, after: number, pageSize: number): AsyncIterable<R[]> {
  for (;;) {
    const page = await read(after, pageSize);
    if (page.length > 0) yield page;
    if (page.length < pageSize) return;
    after = key(page[page.length - 1]!);
  }
}

export class PostgresSource implements AuditSource {
  readonly describe = 'the database';

  constructor(
    private readonly db: Kysely<Database>,
    private readonly pageSize = 5_000,
  ) {}

  events(after = 0): AsyncIterable<StoredEvent[]> {
    return paged((a, n) => readEvents(this.db, a, n), (e) => e.position, after, this.pageSize);
  }

  decisions(after = 0): AsyncIterable<StoredDecision[]> {
    return paged((a, n) => readDecisions(this.db, a, n), (d) => d.seq, after, this.pageSize);
  }

  async heads(): Promise<{ events: number; decisions: number }> {
    return { events: await maxOf(this.db, 'events'), decisions: await maxOf(this.db, 'decisions') };
  }

  async decision(id: string): Promise<StoredDecision | undefined> {
    const seq = await this.db.selectFrom('decisions').select('seq').where('id', '=', id).executeTakeFirst();
    return seq ? (await readDecisions(this.db, Number(seq.seq) - 1, 1))[0] : undefined;
  }
}

/** The database, with only one subject's decisions recorded at or after `since` (an agent's window). */
export class SubjectSource implements AuditSource {
  readonly describe: string;
  private readonly all: PostgresSource;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly subject: string,
    private readonly since: Date,
    private readonly pageSize = 5_000,
  ) {
    this.all = new PostgresSource(db, pageSize);
    this.describe = `the database (decisions of ${subject})`;
  }

  events(after = 0): AsyncIterable<StoredEvent[]> {
    return this.all.events(after);
  }

  decisions(after = 0): AsyncIterable<StoredDecision[]> {
    return paged((a, n) => readSubjectDecisions(this.db, this.subject, this.since, a, n), (d) => d.seq, after, this.pageSize);
  }

  heads(): Promise<{ events: number; decisions: number }> {
    return this.all.heads();
  }

  /** Any decision: a batch item's shared context may be held by another subject's record. */
  decision(id: string): Promise<StoredDecision | undefined> {
    return this.all.decision(id);
  }
}
