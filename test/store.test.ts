import { sql } from 'kysely';
import pg from 'pg';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { isLeashError } from '../src/errors.ts';
import { claimAssertionJti } from '../src/store/assertion-jtis.ts';
import { connect, type Backend, type Connection } from '../src/store/connect.ts';
import { EventStore, insertEvents, readHead, type AppendRequest, type StoredEvent } from '../src/store/event-store.ts';
import { eventHash, verifyChain } from '../src/store/hash-chain.ts';
import { migrateToLatest } from '../src/store/migrate.ts';
import { backends } from './support/backends.ts';

const at = new Date('2026-11-23T10:00:00.000Z');

const request = (streamId: string, expectedVersion: AppendRequest['expectedVersion'], n = 1, extra: Partial<AppendRequest> = {}): AppendRequest => ({
  streamId,
  streamType: 'agent',
  expectedVersion,
  events: Array.from({ length: n }, (_, i) => ({ type: 'Tested', data: { i, note: 'ünïcødé "quoted" \\ text' } })),
  at,
  metadata: { actor: 'test' },
  ...extra,
});

/**
 * Every committed event. readAll shows only what no older open transaction could still precede,
 * and PostgreSQL reckons that over the whole server, so another test file's open transaction may
 * hold the newest back for a moment: read until the committed head is in.
 */
async function allEvents(store: EventStore): Promise<StoredEvent[]> {
  const head = (await readHead(store.db)).position;
  return vi.waitFor(async () => {
    const all = await store.readAll(0, 1_000_000);
    if ((all.at(-1)?.position ?? 0) < head) throw new Error(`read up to ${all.at(-1)?.position ?? 0} of ${head}`);
    return all;
  }, { timeout: 15_000, interval: 50 });
}

describe.each(backends)('event store on $name', ({ fresh }) => {
  let backend: Backend;
  let connection: Connection;
  let store: EventStore;

  beforeEach(async () => {
    backend = await fresh();
    connection = await connect(backend);
    await migrateToLatest(connection.db);
    store = new EventStore(connection.db);
  });
  afterEach(async () => {
    await connection.db.destroy();
  });

  it('appends events with stream versions, contiguous global positions and an intact hash chain', async () => {
    const a = await store.append(request('agent/a', 0, 2));
    const b = await store.append(request('agent/b', 0));
    const a2 = await store.append(request('agent/a', 2));
    expect(a).toMatchObject({ kind: 'appended', version: 2, position: 2 });
    expect(b).toMatchObject({ kind: 'appended', version: 1, position: 3 });
    expect(a2).toMatchObject({ kind: 'appended', version: 3, position: 4 });

    const stream = await store.readStream('agent/a');
    expect(stream.map((e) => [e.version, e.position])).toEqual([[1, 1], [2, 2], [3, 4]]);
    expect(stream[0]!.data).toEqual({ i: 0, note: 'ünïcødé "quoted" \\ text' });
    expect(stream[0]!.at.toISOString()).toBe(at.toISOString());

    const all = await allEvents(store);
    expect(all.map((e) => e.position)).toEqual([1, 2, 3, 4]);
    expect(verifyChain(all)).toEqual({ ok: true, lastPosition: 4, lastHash: all[3]!.hash });
  });

  it('refuses a stale expected version with VERSION_MISMATCH and appends nothing', async () => {
    await store.append(request('agent/a', 0));
    const stale = await store.append(request('agent/a', 0)).catch((e) => e);
    expect(isLeashError(stale) && stale.code).toBe('VERSION_MISMATCH');
    expect(stale.details).toEqual({ expectedVersion: 0, currentVersion: 1 });
    const ahead = await store.append(request('agent/a', 5)).catch((e) => e);
    expect(ahead.code).toBe('VERSION_MISMATCH');
    expect((await allEvents(store)).length).toBe(1);
  });

  it('a version ahead of the stream is refused too, although nothing else conflicts (the one-statement append checks it)', async () => {
    await store.append(request('agent/a', 0)); // this store now knows the head: the next append takes one statement
    await expect(store.append(request('agent/a', 5))).rejects.toMatchObject({ code: 'VERSION_MISMATCH' });
    await expect(store.append(request('agent/b', 1))).rejects.toMatchObject({ code: 'VERSION_MISMATCH' });
    expect((await allEvents(store)).map((e) => [e.streamId, e.version])).toEqual([['agent/a', 1]]);
  });

  it('two stores (two nodes) taking turns, each with an outdated idea of the head: one gap-free chain, versions checked', async () => {
    const other = new EventStore(connection.db);
    await store.append(request('agent/a', 0));
    await other.append(request('agent/b', 0)); // `store` has not seen this one
    await store.append(request('agent/a', 1)); // its head is stale: refused in one statement, done the locked way
    await other.append(request('agent/b', 1));
    // Both at once, several rounds, on distinct and on shared streams.
    for (let round = 0; round < 5; round++) {
      const results = await Promise.allSettled([
        store.append(request(`agent/s${round}`, 0)),
        other.append(request(`agent/o${round}`, 0)),
        store.append(request('agent/shared', 'any')),
        other.append(request('agent/shared', 'any')),
      ]);
      expect(results.every((r) => r.status === 'fulfilled')).toBe(true);
    }
    await expect(store.append(request('agent/a', 1))).rejects.toMatchObject({ code: 'VERSION_MISMATCH' });
    const all = await allEvents(store);
    expect(all.map((e) => e.position)).toEqual(Array.from({ length: 24 }, (_, i) => i + 1));
    expect(verifyChain(all).ok).toBe(true);
    const shared = all.filter((e) => e.streamId === 'agent/shared').map((e) => e.version);
    expect(shared).toEqual(Array.from({ length: 10 }, (_, i) => i + 1));
  });

  it('treats a repeated idempotency key as the same append: no second event', async () => {
    const first = await store.append(request('agent/a', 0, 1, { idempotencyKey: 'k-1', metadata: { requestHash: 'h1' } }));
    const again = await store.append(request('agent/a', 0, 1, { idempotencyKey: 'k-1', metadata: { requestHash: 'h1' } }));
    expect(first.kind).toBe('appended');
    expect(again).toEqual({ kind: 'duplicate', streamId: 'agent/a', version: 1, position: 1, requestHash: 'h1' });
    expect((await allEvents(store)).length).toBe(1);
  });

  it('50 concurrent writers with the same expected version: exactly one wins, 49 get VERSION_MISMATCH', async () => {
    await store.append(request('agent/hot', 0));
    const results = await Promise.allSettled(Array.from({ length: 50 }, (_, i) => store.append({ ...request('agent/hot', 1), events: [{ type: 'Tested', data: { writer: i } }] })));
    const won = results.filter((r) => r.status === 'fulfilled');
    const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(won).toHaveLength(1);
    expect(lost).toHaveLength(49);
    expect(lost.every((r) => isLeashError(r.reason) && r.reason.code === 'VERSION_MISMATCH')).toBe(true);

    const stream = await store.readStream('agent/hot');
    expect(stream.map((e) => e.version)).toEqual([1, 2]);
    const winner = (won[0] as PromiseFulfilledResult<{ events: StoredEvent[] }>).value.events[0]!;
    expect(stream[1]!.data).toEqual(winner.data);
    expect(verifyChain(await allEvents(store)).ok).toBe(true);
  });

  it('50 concurrent writers to separate streams all commit, with gap-free positions and one chain', async () => {
    const results = await Promise.all(Array.from({ length: 50 }, (_, i) => store.append(request(`agent/w${i}`, 0, 2))));
    expect(results.every((r) => r.kind === 'appended')).toBe(true);
    const all = await allEvents(store);
    expect(all.map((e) => e.position)).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
    expect(verifyChain(all).ok).toBe(true);
  });

  it('a request Postgres cannot store fails alone; the rest of its batch commits', async () => {
    const good = Array.from({ length: 5 }, (_, i) => store.append(request(`agent/g${i}`, 0)));
    const poisoned = store.append({ ...request('agent/bad', 0), events: [{ type: 'Tested', data: { text: 'nul \u0000 inside' } }] });
    const outcomes = await Promise.allSettled([...good, poisoned]);
    expect(outcomes.slice(0, 5).every((o) => o.status === 'fulfilled')).toBe(true);
    expect(outcomes[5]!.status).toBe('rejected');
    const all = await allEvents(store);
    expect(all.map((e) => e.streamId).sort()).toEqual(['agent/g0', 'agent/g1', 'agent/g2', 'agent/g3', 'agent/g4']);
    expect(verifyChain(all).ok).toBe(true);
  });

  it('is append-only in the database: UPDATE, DELETE and TRUNCATE issued over SQL fail', async () => {
    await store.append(request('agent/a', 0, 3));
    const before = await allEvents(store);
    await expect(sql`update events set data = '{"i":99}' where position = 2`.execute(connection.db)).rejects.toThrow(/append-only/);
    await expect(sql`delete from events where position = 3`.execute(connection.db)).rejects.toThrow(/append-only/);
    await expect(sql`delete from events`.execute(connection.db)).rejects.toThrow(/append-only/);
    await expect(sql`truncate events`.execute(connection.db)).rejects.toThrow(/append-only/);
    expect(await allEvents(store)).toEqual(before);
  });

  it('keeps everything across a restart', async () => {
    await store.append(request('agent/a', 0, 2));
    await store.append(request('agent/b', 0));
    const before = await allEvents(store);
    await connection.db.destroy();

    connection = await connect(backend);
    await migrateToLatest(connection.db); // a second run is a no-op
    store = new EventStore(connection.db);
    expect(await allEvents(store)).toEqual(before);
    expect(await store.append(request('agent/a', 2))).toMatchObject({ version: 3, position: 4 });
    expect(verifyChain(await allEvents(store)).ok).toBe(true);
  });

  it('verifyChain detects an edited, a deleted and a reordered event', async () => {
    await store.append(request('agent/a', 0, 4));
    const all = await allEvents(store);
    const edited = all.map((e, i) => (i === 1 ? { ...e, data: { i: 1, note: 'forged' } } : e));
    expect(verifyChain(edited)).toMatchObject({ ok: false, position: 2, reason: 'hash_mismatch' });
    expect(verifyChain([all[0]!, all[2]!, all[3]!])).toMatchObject({ ok: false, position: 3, reason: 'position_gap' });
    const swapped = [all[0]!, { ...all[2]!, position: 2 }, { ...all[1]!, position: 3 }, all[3]!];
    expect(verifyChain(swapped).ok).toBe(false);
    // A forger who also recomputes the edited event's hash still breaks the next link.
    const rehashed = all.map((e, i) => (i === 1 ? { ...e, data: { forged: true }, hash: eventHash(e.prevHash, { ...e, data: { forged: true } }) } : e));
    expect(verifyChain(rehashed)).toMatchObject({ ok: false, position: 3, reason: 'broken_link' });
  });
});

describe('catch-up reads on real Postgres', () => {
  it('never moves past an event whose transaction commits late', async () => {
    const { freshPostgres } = await import('./support/backends.ts');
    const backend = await freshPostgres();
    const connection = await connect(backend);
    await migrateToLatest(connection.db);
    const store = new EventStore(connection.db);
    await store.append(request('agent/a', 0));
    const head = await readHead(connection.db);

    // Two writers that bypass the append lock (as a buggy or foreign writer might):
    // the one holding the lower position commits last.
    const slow = new pg.Client({ connectionString: backend.url });
    await slow.connect();
    const row = (position: number): StoredEvent => {
      const e = { position, streamId: `agent/late${position}`, streamType: 'agent', version: 1, type: 'Tested', data: {}, metadata: {}, at, idempotencyKey: null, prevHash: head.hash };
      return { ...e, hash: eventHash(head.hash, e) };
    };
    try {
      await slow.query('begin');
      await slow.query(`insert into events (position, stream_id, stream_type, version, type, data, metadata, recorded_at, prev_hash, hash)
        values (2, 'agent/late2', 'agent', 1, 'Tested', '{}', '{}', now(), 'x', 'x')`);
      await insertEvents(connection.db, [row(3)]); // commits at once
      expect((await store.readAll(1, 100)).map((e) => e.position)).toEqual([]); // 3 is held back behind 2
      await slow.query('commit');
      // Visible once no older transaction is open anywhere on the server: PostgreSQL's snapshot
      // xmin is server-wide, so another test file's open transaction may hold it back a while.
      await vi.waitFor(async () => expect((await store.readAll(1, 100)).map((e) => e.position)).toEqual([2, 3]), { timeout: 15_000, interval: 50 });
    } finally {
      await slow.end();
      await connection.db.destroy();
    }
  });
});

describe.each(backends)('the replay table on $name, claims written together', ({ fresh }) => {
  let connection: Connection;
  beforeEach(async () => {
    connection = await connect(await fresh());
    await migrateToLatest(connection.db);
  });
  afterEach(async () => {
    await connection.db.destroy();
  });

  it('concurrent claims: each pair once (a pair twice in one batch included), every distinct pair claimed, a later one a replay', async () => {
    const { db } = connection;
    const t = Date.now();
    const at = (s: number) => new Date(t + s * 1000);
    const pairs = Array.from({ length: 40 }, (_, i) => [`c${(i % 20) % 7}`, `batch-${i % 20}`] as const); // each pair twice
    const results = await Promise.all(pairs.map(([agent, jti]) => claimAssertionJti(db, agent, jti, at(60), at(0))));
    const won = new Map<string, number>();
    pairs.forEach(([agent, jti], i) => won.set(`${agent}/${jti}`, (won.get(`${agent}/${jti}`) ?? 0) + (results[i] ? 1 : 0)));
    expect(won.size).toBe(20);
    expect([...won.values()].every((n) => n === 1)).toBe(true);
    expect(await Promise.all(pairs.slice(0, 20).map(([agent, jti]) => claimAssertionJti(db, agent, jti, at(60), at(1))))).toEqual(Array(20).fill(false));
    // Expired rows are taken over, in a batch too.
    expect(await Promise.all(pairs.slice(0, 20).map(([agent, jti]) => claimAssertionJti(db, agent, jti, at(200), at(61))))).toEqual(Array(20).fill(true));
  });
});
