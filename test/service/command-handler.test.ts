import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AgentCommand, AgentRecord } from '../../src/registry/agent.ts';
import { RegistryView } from '../../src/registry/registry-view.ts';
import { agentAggregate } from '../../src/registry/streams.ts';
import { CommandHandler } from '../../src/service/command-handler.ts';
import { connect, type Connection } from '../../src/store/connect.ts';
import { EventStore, type StoredEvent } from '../../src/store/event-store.ts';
import { Follower } from '../../src/store/follower.ts';
import { migrateToLatest } from '../../src/store/migrate.ts';
import { freshPostgres } from '../support/backends.ts';
import { agentBody } from '../support/node.ts';

/** A store whose next stream read first lets something else happen (a concurrent request). */
class RacingStore extends EventStore {
  before: (() => Promise<void>) | null = null;

  override async readStream(streamId: string, upToVersion?: number): Promise<StoredEvent[]> {
    const before = this.before;
    this.before = null;
    await before?.();
    return super.readStream(streamId, upToVersion);
  }
}

// Commands decide on the node's view when it holds the stream, instead of reading it. A view
// that lags (another node wrote meanwhile) must cost a retry, never a wrong answer.

describe('command handler deciding on a view that may lag', () => {
  let connection: Connection;
  let store: EventStore;
  let view: RegistryView;
  let follower: Follower;
  /** What the "view" hands the handler: the real one, or a stale copy the test pins. */
  let pinned: { state: AgentRecord; version: number } | undefined;
  let commands: CommandHandler;
  const now = () => new Date();
  const run = (id: string, command: AgentCommand, expectedVersion?: number) =>
    commands.handle(agentAggregate, id, command, { now: now(), actor: 'test', ...(expectedVersion === undefined ? {} : { expectedVersion }) });
  const cmd = (type: string, data: Record<string, unknown> = {}) => ({ type, data, metadata: { now: now() } }) as AgentCommand;

  beforeAll(async () => {
    connection = await connect(await freshPostgres());
    await migrateToLatest(connection.db);
    store = new EventStore(connection.db);
    view = new RegistryView();
    follower = new Follower(store, view, { pollMs: 60_000 });
    await follower.start();
    commands = new CommandHandler(store, follower, (type, id) => {
      if (pinned) return pinned;
      const a = type === 'agent' ? view.agents.get(id) : undefined;
      return a && { state: a.record, version: a.version };
    });
    const { id: _id, ...body } = agentBody();
    await run('bot', cmd('RegisterAgent', { id: 'bot', ...body, ceiling: null }));
    await run('bot', cmd('AuthorizeAgent', { grants: [] }));
  });
  afterAll(async () => {
    follower.stop();
    await connection.db.destroy();
  });

  it('a stale view that refuses the command (revoked there, active here) is decided again on the stream', async () => {
    const current = view.agents.get('bot')!;
    pinned = { state: { ...current.record, status: 'revoked' }, version: current.version - 1 };
    try {
      const result = await run('bot', cmd('SuspendAgent', { reason: 'x' }));
      expect(result).toMatchObject({ state: { status: 'suspended' }, version: current.version + 1 });
    } finally {
      pinned = undefined;
    }
  });

  it('a stale view that accepts the command writes nothing wrong: the append refuses its version and the stream decides', async () => {
    const current = view.agents.get('bot')!; // suspended
    pinned = { state: { ...current.record, status: 'active' }, version: current.version - 1 }; // "still active"
    try {
      // Suspending is refused for the suspended agent the stream knows: a 409, not a second suspension.
      await expect(run('bot', cmd('SuspendAgent', { reason: 'again' }))).rejects.toMatchObject({ code: 'INVALID_TRANSITION' });
      const events = await store.readStream('agent/bot');
      expect(events.map((e) => e.type)).toEqual(['AgentRegistered', 'AgentAuthorized', 'AgentSuspended']);
    } finally {
      pinned = undefined;
    }
  });

  it('If-Match: the view is used only at the version the caller names; a stale If-Match is still a 412', async () => {
    const current = view.agents.get('bot')!;
    await expect(run('bot', cmd('AuthorizeAgent', { grants: [] }), current.version - 1)).rejects.toMatchObject({ code: 'VERSION_MISMATCH' });
    pinned = { state: current.record, version: current.version - 1 }; // the view lags exactly as the caller does
    try {
      await expect(run('bot', cmd('AuthorizeAgent', { grants: [] }), current.version - 1)).rejects.toMatchObject({ code: 'VERSION_MISMATCH' });
    } finally {
      pinned = undefined;
    }
    const ok = await run('bot', cmd('AuthorizeAgent', { grants: [] }), current.version);
    expect(ok).toMatchObject({ state: { status: 'active' }, version: current.version + 1 });
  });

  it('a retry with the same Idempotency-Key whose twin commits while it reads the stream gets the twin\'s answer, not a 409', async () => {
    // The retry checked the key before its twin committed; on the stream it finds the agent
    // already authorized, which it may not authorize again. It must answer as the twin did.
    const { id: _id, ...body } = agentBody();
    await run('twin', cmd('RegisterAgent', { id: 'twin', ...body, ceiling: null }));
    const racing = new RacingStore(connection.db);
    const retry = new CommandHandler(racing, follower); // no view: reads the stream
    const options = () => ({ now: now(), actor: 'test', idempotencyKey: 'authorize-twin', requestHash: 'same-body' });
    let twin: unknown;
    racing.before = async () => {
      twin = await commands.handle(agentAggregate, 'twin', cmd('AuthorizeAgent', { grants: [] }), options());
    };
    const retried = await retry.handle(agentAggregate, 'twin', cmd('AuthorizeAgent', { grants: [] }), options());
    expect(twin).toMatchObject({ version: 2, replayed: false });
    expect(retried).toMatchObject({ version: 2, replayed: true, state: { status: 'active' } });
    expect((await store.readStream('agent/twin')).map((e) => e.type)).toEqual(['AgentRegistered', 'AgentAuthorized']);
    // Another body under the same key is still refused as a reuse.
    racing.before = null;
    await expect(retry.handle(agentAggregate, 'twin', cmd('AuthorizeAgent', { grants: [] }), { ...options(), requestHash: 'other-body' })).rejects.toMatchObject({ code: 'IDEMPOTENCY_KEY_REUSED' });
  });
});
