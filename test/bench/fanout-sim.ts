// Simulated nodes for the fan-out benchmark (fanout.ts): SIM_COUNT lightweight nodes in this
// process, each with a NATS connection of its own, that take part in the broadcast as a real
// node does (src/cluster/cluster.ts): they apply each committed batch that continues their
// fold (a gap is read from the log), confirm it to the committing node, and send heartbeats.
// They decide nothing and hold only each agent's last event. Prints READY once all are
// connected; on SIGTERM each says it is leaving, then the process exits.
import { connect as dial, JSONCodec, type NatsConnection } from 'nats';
import { sql } from 'kysely';
import { readEvents } from '../../src/audit/source.ts';
import { subjectsOf, type EventsMessage, type NodeMessage } from '../../src/cluster/messages.ts';
import { connect } from '../../src/store/connect.ts';

const env = (name: string) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const codec = JSONCodec();
const count = Number(env('SIM_COUNT'));
const prefix = env('SIM_PREFIX');
const heartbeatMs = Number(process.env.SIM_HEARTBEAT_MS ?? 1000);
const stalenessMs = Number(process.env.SIM_STALENESS_MS ?? 3000);
const connection = await connect({ kind: 'postgres', url: env('DATABASE_URL'), poolSize: 2 });
const { id: deployment } = await connection.db.selectFrom('deployment').select('id').executeTakeFirstOrThrow();
const subjects = subjectsOf(deployment);
const head = Number((await sql<{ head: string | null }>`select max(position) as head from events`.execute(connection.db)).rows[0]?.head ?? 0);

/**
 * Each simulated node gets its own copy of every batch, as a real one does; the ones in this
 * process share its parsing (a real node parses its copy once, on a machine of its own; here
 * hundreds share one core, and parsing the same text hundreds of times would measure the
 * simulation, not the fence). A batch is known by its opening bytes, which name its committing
 * node and its positions, and its length.
 */
const parsed = new Map<string, EventsMessage>();
function decoded(data: Uint8Array): EventsMessage {
  const key = `${data.length}:${Buffer.from(data.buffer, data.byteOffset, Math.min(data.length, 160)).toString('latin1')}`;
  let message = parsed.get(key);
  if (!message) {
    message = codec.decode(data) as EventsMessage;
    parsed.set(key, message);
    if (parsed.size > 64) parsed.delete(parsed.keys().next().value!);
  }
  return message;
}

class SimNode {
  position = head;
  /** Each agent's last event: the fold, as small as it can be. */
  readonly agents = new Map<string, string>();
  private catching: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;

  constructor(readonly id: string, private readonly nc: NatsConnection) {
    nc.subscribe(subjects.events, { callback: (err, msg) => !err && void this.onEvents(decoded(msg.data)) });
    this.timer = setInterval(() => this.send(subjects.nodes, { kind: 'heartbeat', node: this.id, position: this.position, stalenessMs }), heartbeatMs);
    this.send(subjects.nodes, { kind: 'heartbeat', node: this.id, position: this.position, stalenessMs });
  }

  private send(subject: string, message: NodeMessage): void {
    if (!this.nc.isClosed()) this.nc.publish(subject, codec.encode(message));
  }

  private apply(events: { position: number; streamId: string; type: string }[]): void {
    for (const e of events) {
      if (e.position !== this.position + 1) continue;
      if (e.streamId.startsWith('agent/')) this.agents.set(e.streamId, e.type);
      this.position = e.position;
    }
  }

  private async onEvents(message: EventsMessage): Promise<void> {
    if (message.events && message.first === this.position + 1) this.apply(message.events);
    else if (message.last > this.position) {
      // A gap (or events too large to send): read them from the log, as a node does.
      this.catching ??= (async () => {
        for (;;) {
          const page = await readEvents(connection.db, this.position, 1000);
          this.apply(page);
          if (page.length < 1000) break;
        }
      })().finally(() => (this.catching = null));
      await this.catching;
    }
    if (message.replyTo && message.node !== this.id && this.position >= message.last) this.send(message.replyTo, { kind: 'applied', node: this.id, position: this.position });
  }

  async leave(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.send(subjects.nodes, { kind: 'leaving', node: this.id, position: this.position });
    await this.nc.drain();
  }
}

const nodes: SimNode[] = [];
for (let i = 0; i < count; i++) {
  const id = `${prefix}-${i}`;
  nodes.push(new SimNode(id, await dial({ servers: env('NATS_URL'), name: `sim ${id}` })));
}
console.log('READY');
process.on('SIGTERM', () => {
  void Promise.all(nodes.map((n) => n.leave())).finally(async () => {
    await connection.db.destroy();
    process.exit(0);
  });
});
