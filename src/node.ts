import type { FastifyServerOptions } from 'fastify';
import { RegistryView } from './registry/registry-view.ts';
import { CommandHandler } from './service/command-handler.ts';
import { connect, type Backend, type Connection } from './store/connect.ts';
import { EventStore } from './store/event-store.ts';
import { Follower } from './store/follower.ts';
import { listenForCommits } from './store/commit-listener.ts';
import { migrateToLatest } from './store/migrate.ts';
import { buildServer, type App } from './http/server.ts';

export interface NodeOptions {
  backend: Backend;
  adminToken: string;
  nodeId: string;
  logger?: FastifyServerOptions['logger'];
  pollMs?: number;
}

export interface LeashNode {
  app: App;
  connection: Connection;
  store: EventStore;
  view: RegistryView;
  follower: Follower;
  close(): Promise<void>;
}

/** One decision node: its own view of the registry, caught up before it serves. */
export async function startNode(options: NodeOptions): Promise<LeashNode> {
  const connection = await connect(options.backend);
  try {
    await migrateToLatest(connection.db);
    const store = new EventStore(connection.db);
    const view = new RegistryView();
    const follower = new Follower(store, view, options.pollMs === undefined ? {} : { pollMs: options.pollMs });
    await follower.start();
    // Other nodes' commits arrive by NOTIFY on a shared Postgres; PGlite has one node only.
    const listener = options.backend.kind === 'postgres' ? listenForCommits(options.backend.url, () => void follower.sync().catch(() => {})) : null;
    const commands = new CommandHandler(store, follower);
    const app = await buildServer({ store, view, follower, commands, adminToken: options.adminToken, nodeId: options.nodeId, logger: options.logger });
    return {
      app,
      connection,
      store,
      view,
      follower,
      async close() {
        follower.stop();
        await listener?.close();
        await app.close();
        await connection.db.destroy();
      },
    };
  } catch (err) {
    await connection.db.destroy().catch(() => {});
    throw err;
  }
}
