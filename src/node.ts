import type { FastifyServerOptions } from 'fastify';
import { DecisionLog } from './audit/decision-log.ts';
import { policyAggregate } from './authz/policy-aggregate.ts';
import { readPolicyFiles } from './authz/policy-files.ts';
import { checkPolicySet } from './authz/policy-set.ts';
import { PolicyView, type Check } from './authz/policy-view.ts';
import { InProcessBus, type Bus } from './bus/bus.ts';
import { NatsBus } from './bus/nats-bus.ts';
import { Cluster } from './cluster/cluster.ts';
import { isLeashError } from './errors.ts';
import type { HumanPins } from './humans/human-tokens.ts';
import { buildServer, type App } from './http/server.ts';
import { RegistryView } from './registry/registry-view.ts';
import { agentAggregate } from './registry/streams.ts';
import { CommandHandler } from './service/command-handler.ts';
import { ApprovalService } from './approvals/approval-service.ts';
import { approvalAggregate } from './approvals/approval.ts';
import { ApprovalNotifier } from './approvals/notify.ts';
import { Metrics } from './metrics/metrics.ts';
import { recentDecisionsOf } from './audit/decision-query.ts';
import { Monitor } from './monitoring/monitor.ts';
import { approvalStatus } from './approvals/approval.ts';
import { MonitoringView, monitoringAggregate, readMonitoringFile, type MonitoringConfig } from './monitoring/monitoring-config.ts';
import { listenForCommits } from './store/commit-listener.ts';
import { connect, type Backend, type Connection } from './store/connect.ts';
import { EventStore, type StoredEvent } from './store/event-store.ts';
import { Follower } from './store/follower.ts';
import { migrateToLatest } from './store/migrate.ts';
import { LeashKeys } from './tokens/leash-keys.ts';
import { NodeSigner } from './tokens/node-signer.ts';
import { RevokedTokens } from './tokens/revoked-tokens.ts';
import { configureTokens } from './tokens/settings.ts';
import { signingKeyAggregate } from './tokens/signing-key-stream.ts';
import { StreamsView } from './ssf/stream.ts';
import { Transmitter } from './ssf/transmitter.ts';

export interface NodeOptions {
  backend: Backend;
  adminToken: string;
  /** Bearer tokens PEPs use for the AuthZEN API (`LEASH_PEP_TOKENS`). */
  pepTokens?: string[];
  nodeId: string;
  /** Where the policy set is read from when the log has none yet (`LEASH_CEDAR_DIR`). */
  cedarDir: string;
  logger?: FastifyServerOptions['logger'];
  pollMs?: number;
  /** NATS servers for the broadcast (`NATS_URL`, comma-separated); without them, an in-process bus. */
  natsUrl?: string | null;
  /** How long without the broadcast before the node stops trusting its caches (default 1000 ms). */
  stalenessMs?: number;
  heartbeatMs?: number;
  /** A bus of the caller's (tests); otherwise NATS or in-process as above. */
  bus?: Bus;
  /** `LEASH_ALLOW_PRIVATE_URLS`: JWKS URLs may reach loopback and private addresses (default false). Process-wide, see src/tokens/settings.ts. */
  allowPrivateUrls?: boolean;
  /** `LEASH_MAX_DELEGATION_DEPTH`: most agents in a token's `act` chain (default 4). Process-wide. */
  maxDelegationDepth?: number;
  /** `LEASH_PUBLIC_URL`: the base the metadata documents name endpoints under (default http://127.0.0.1:8080). */
  publicUrl?: string;
  /** `LEASH_TOKEN_AUDIENCE`: the `aud` of issued tokens whose request names no `resource` (default `leash`). */
  tokenAudience?: string;
  /** `LEASH_HUMAN_*`: the organisation's identity provider, whose tokens humans sign in with (none: the operator token only). */
  humanPins?: HumanPins | null;
  /** `LEASH_APPROVAL_TTL_SECONDS` (default 300). */
  approvalTtlSeconds?: number;
  /** `LEASH_APPROVAL_WEBHOOK`: pending approvals are POSTed there, signed (default: none). */
  approvalWebhook?: string | null;
  /**
   * The detectors' thresholds and responses: `log` (default), the configuration in the log
   * (`cedar/monitoring.json` at first start, then `PUT /v1/monitoring`; the defaults until
   * then); a configuration of the caller's (tests); null: no detector runs.
   */
  monitoring?: 'log' | MonitoringConfig | null;
  /** Tests: the webhook's retry delays. */
  approvalBackoffMs?: (attempt: number) => number;
  /** Tests: the instant decisions are made at (a week of an agent's traffic without sleeping a week); default the system clock. */
  clock?: () => Date;
  /** How the node checks a published policy set (default: on a thread of its own); tests hold it back to watch the switch. */
  policyCheck?: Check;
  /** Tests: the detectors' resource filters' seed (a Bloom filter now and then takes a new name for a known one; which names, the seed decides). */
  monitorSeed?: number;
  /** `LEASH_METRICS_TOKEN`: a token that reads `/metrics` and nothing else (default: the operator token only). */
  metricsToken?: string | null;
  /** `LEASH_METRICS`: false keeps no metrics (`GET /metrics` is a 404), to measure what they cost (default true). */
  metrics?: boolean;
  /** Tests: security event push retry delays, and how long a poll waits for an event. */
  ssf?: { backoffMs?: (attempt: number) => number; longPollMs?: number };
}

export interface LeashNode {
  app: App;
  connection: Connection;
  store: EventStore;
  view: RegistryView;
  policies: PolicyView;
  follower: Follower;
  cluster: Cluster;
  /** Every node's public signing keys (the JWKS), folded from the log. */
  keys: LeashKeys;
  /** This node's own signing key (its private half never leaves this object). */
  signer: NodeSigner;
  /** The security event streams, folded from the log. */
  streams: StreamsView;
  close(): Promise<void>;
}

/** Everything a node folds from the log: the registry, the policy set in force, the signing keys, revoked tokens and event streams. */
class NodeFold {
  position = 0;
  /** Told (once per turn of the event loop) that the fold moved on: the security event transmitter looks again. */
  moved: (() => void) | null = null;
  private told = false;

  constructor(
    readonly registry: RegistryView,
    readonly policies: PolicyView,
    readonly keys: LeashKeys,
    readonly revokedTokens: RevokedTokens,
    readonly monitoring: MonitoringView,
    readonly streams: StreamsView,
  ) {}

  apply(e: StoredEvent): void {
    this.registry.apply(e);
    this.monitoring.apply(e);
    this.policies.apply(e);
    this.keys.apply(e);
    this.revokedTokens.apply(e);
    this.streams.apply(e);
    this.position = e.position;
    if (this.moved && !this.told) {
      this.told = true;
      queueMicrotask(() => {
        this.told = false;
        this.moved?.();
      });
    }
  }
}

/**
 * The first node to start on an empty log publishes the policy files as version 1; after
 * that the log is the source of truth and `PUT /v1/policy-set` publishes new versions.
 * An invalid set refuses the start with Cedar's diagnostics.
 */
async function bootstrapPolicies(options: NodeOptions, policies: PolicyView, commands: CommandHandler, follower: Follower): Promise<void> {
  if (policies.version > 0) return;
  const source = readPolicyFiles(options.cedarDir);
  let sha256: string;
  try {
    sha256 = checkPolicySet(source).sha256; // before it serves: nobody waits on this thread yet
  } catch (err) {
    const diagnostics = isLeashError(err) ? (err.details.diagnostics as string[] | undefined) ?? [] : [];
    throw new Error(`the Cedar policy set in ${options.cedarDir} is invalid: ${(err as Error).message}\n  ${diagnostics.join('\n  ')}`);
  }
  try {
    await commands.handle(policyAggregate, 'current', { type: 'PublishPolicySet', data: { ...source, sha256 }, metadata: { now: new Date() } }, {
      now: new Date(),
      actor: `node:${options.nodeId}`,
      expectedVersion: 0,
    });
  } catch (err) {
    // Another node published first: its version stands.
    if (!(isLeashError(err) && err.code === 'VERSION_MISMATCH')) throw err;
    await follower.sync();
  }
}

/** Likewise `cedar/monitoring.json`, when there is one: version 1 of the detectors' configuration. */
async function bootstrapMonitoring(options: NodeOptions, monitoring: MonitoringView, commands: CommandHandler, follower: Follower): Promise<void> {
  if (monitoring.version > 0) return;
  const config = readMonitoringFile(options.cedarDir);
  if (!config) return;
  try {
    await commands.handle(monitoringAggregate, 'current', { type: 'ConfigureMonitoring', data: { config }, metadata: { now: new Date() } }, {
      now: new Date(), actor: `node:${options.nodeId}`, expectedVersion: 0,
    });
  } catch (err) {
    if (!(isLeashError(err) && err.code === 'VERSION_MISMATCH')) throw err;
    await follower.sync();
  }
}

/** One decision node: its own view of the registry and policies, caught up before it serves. */
export async function startNode(options: NodeOptions): Promise<LeashNode> {
  // Goes to the server log once there is one.
  let warn = (_fields: Record<string, unknown>, _message: string) => {};
  configureTokens({ allowPrivateUrls: options.allowPrivateUrls, maxDelegationDepth: options.maxDelegationDepth, log: (fields, message) => warn(fields, message) });
  const connection = await connect(options.backend);
  try {
    await migrateToLatest(connection.db);
    const store = new EventStore(connection.db);
    const view = new RegistryView();
    const policies = new PolicyView(options.policyCheck);
    const keys = new LeashKeys();
    const revokedTokens = new RevokedTokens();
    const monitoringView = new MonitoringView();
    const streams = new StreamsView();
    const nodeFold = new NodeFold(view, policies, keys, revokedTokens, monitoringView, streams);
    const follower = new Follower(store, nodeFold, options.pollMs === undefined ? {} : { pollMs: options.pollMs });
    // A token naming a key not folded yet may come from a node that published it a moment ago.
    keys.onUnknownKey(() => follower.sync());
    await follower.start();
    const nats = options.natsUrl?.split(',').map((u) => u.trim()).filter(Boolean) ?? [];
    const bus: Bus =
      options.bus ??
      (nats.length > 0 ? new NatsBus(nats, `leash ${options.nodeId}`, (err) => warn({ err: err.message }, 'NATS connection failed; retrying')) : new InProcessBus());
    // Its nodes broadcast under the deployment's own subjects (a NATS server may serve several).
    const { id: deployment } = await connection.db.selectFrom('deployment').select('id').executeTakeFirstOrThrow();
    const cluster = new Cluster({
      nodeId: options.nodeId, deployment, bus, follower, log: (fields, message) => warn(fields, message),
      ...(bus instanceof InProcessBus ? { joinMs: 0 } : {}), // alone: nobody else has to hear it first
      ...(options.stalenessMs === undefined ? {} : { stalenessMs: options.stalenessMs }),
      ...(options.heartbeatMs === undefined ? {} : { heartbeatMs: options.heartbeatMs }),
      policyVersion: () => policies.versionInForce,
    });
    policies.switched = () => cluster.policySwitched();
    const offCommit = store.onCommit((_, events) => cluster.broadcast(events));
    cluster.start();
    const metrics = new Metrics(options.metrics ?? true, {
      nodesLive: () => cluster.liveNodes().length,
      approvalsPending: () => {
        const now = new Date();
        let n = 0;
        for (const { record } of view.approvals.values()) if (approvalStatus(record, now) === 'pending') n++;
        return n;
      },
    });
    if (metrics.enabled) {
      store.timed = (s) => metrics.eventAppendSeconds.observe(s);
      cluster.timed = { fence: (s) => metrics.fenceSeconds.observe(s), lag: (s) => metrics.broadcastLagSeconds.observe(s) };
    }
    // Without NATS, nodes sharing a Postgres still hear each other's commits by NOTIFY
    // (fences then count this node only); PGlite has one node only.
    const listener = options.backend.kind === 'postgres' && bus instanceof InProcessBus ? listenForCommits(options.backend.url, () => void follower.catchUp().catch(() => {})) : null;
    // Decided on the view's state where it holds the stream (the append's version check guards a lagging view).
    const commands = new CommandHandler(store, follower, (type, id) => {
      if (type === approvalAggregate.streamType) {
        // An approval id is a new random UUID when it is asked for: a stream no one has written yet.
        const approval = view.approvals.get(id);
        return approval ? { state: approval.record, version: approval.version } : { state: approvalAggregate.initialState(), version: 0 };
      }
      const agent = type === agentAggregate.streamType ? view.agents.get(id) : undefined;
      return agent && { state: agent.record, version: agent.version };
    });
    const signer = new NodeSigner({
      nodeId: options.nodeId, keys, log: (fields, message) => warn(fields, message),
      publish: async (data, now) => {
        await commands.handle(signingKeyAggregate, options.nodeId, { type: 'PublishSigningKey', data, metadata: { now } }, { now, actor: `node:${options.nodeId}` });
      },
    });
    const notifier = new ApprovalNotifier({
      bus, webhook: options.approvalWebhook ?? null, signer, issuer: options.publicUrl ?? 'http://127.0.0.1:8080', log: (fields, message) => warn(fields, message),
      ...(options.approvalBackoffMs ? { backoffMs: options.approvalBackoffMs } : {}),
    });
    const monitor = new Monitor({
      nodeId: options.nodeId, deployment, bus, view, commands, cluster, log: (fields, message) => warn(fields, message),
      ...(options.clock ? { clock: options.clock } : {}),
      ...(options.monitorSeed === undefined ? {} : { seed: options.monitorSeed }),
      found: (detector) => metrics.anomalies.inc({ detector }),
      history: (agent, since, until, limit) => recentDecisionsOf(connection.db, agent, since, until, limit),
      config: options.monitoring === null ? null : typeof options.monitoring === 'object' ? ((fixed) => () => fixed)(options.monitoring) : () => monitoringView.config,
    });
    const approvals = new ApprovalService({ view, commands, follower, ttlSeconds: options.approvalTtlSeconds ?? 300, notify: (a) => notifier.notify(a) });
    const transmitter = new Transmitter({
      db: connection.db, store, streams, signer, issuer: options.publicUrl ?? 'http://127.0.0.1:8080', nodeId: options.nodeId,
      allowPrivateUrls: options.allowPrivateUrls ?? false, head: () => nodeFold.position, log: (fields, message) => warn(fields, message),
      delivered: () => metrics.setsDelivered.inc(),
      ...(options.ssf?.backoffMs ? { backoffMs: options.ssf.backoffMs } : {}),
      ...(options.ssf?.longPollMs !== undefined ? { longPollMs: options.ssf.longPollMs } : {}),
    });
    nodeFold.moved = () => transmitter.wake();
    const shutDown = async () => {
      await transmitter.stop();
      monitor.stop();
      await notifier.stop();
      signer.stop();
      follower.stop();
      offCommit();
      await cluster.stop();
      await bus.close();
      await listener?.close();
    };
    try {
      await bootstrapPolicies(options, policies, commands, follower);
      await bootstrapMonitoring(options, monitoringView, commands, follower);
      // The policy set in force before the first decision; from now on new ones are checked off the event loop.
      await policies.settled();
      policies.serving = true;
      // A key of its own before it serves: other nodes learn it from the log (and the broadcast).
      await signer.rotate();
    } catch (err) {
      await shutDown();
      throw err;
    }
    const decisions = new DecisionLog(connection.db);
    if (metrics.enabled) decisions.timed = (s) => metrics.decisionLogCommitSeconds.observe(s);
    decisions.anchorFailed = (err) => warn({ err: { name: (err as Error)?.name, code: (err as { code?: unknown })?.code } }, 'the decision chain head could not be anchored; trying again at the next interval');
    let app: App;
    try {
      app = await buildServer({
        store, view, policies, follower, commands, decisions, cluster,
        adminToken: options.adminToken, pepTokens: options.pepTokens ?? [], nodeId: options.nodeId, logger: options.logger,
        publicUrl: options.publicUrl ?? 'http://127.0.0.1:8080', keys, revokedTokens, signer, tokenAudience: options.tokenAudience ?? 'leash',
        humanPins: options.humanPins ?? null, approvals, monitor, monitoring: monitoringView, metrics, metricsToken: options.metricsToken ?? null, streams, transmitter,
        ...(options.clock ? { clock: options.clock } : {}),
      });
    } catch (err) {
      await shutDown();
      throw err;
    }
    warn = (fields, message) => app.log.warn(fields, message);
    transmitter.start();
    return {
      app,
      connection,
      store,
      view,
      policies,
      follower,
      cluster,
      keys,
      signer,
      streams,
      async close() {
        // Stop answering first (in-flight requests finish), then leave the broadcast: a node
        // that others no longer wait for must not be deciding any more. A poll waiting for a
        // security event is in flight too, for up to its long-poll wait: the transmitter stops
        // first, so it answers now with what it has rather than holding the close up.
        await transmitter.stop();
        await app.close();
        // Its last decisions' head into the anchor chain, so verify can show none were cut off.
        await decisions.close().catch((err: unknown) => warn({ err: { name: (err as Error)?.name } }, 'the decision chain head could not be anchored at close'));
        await shutDown();
        await connection.db.destroy();
      },
    };
  } catch (err) {
    await connection.db.destroy().catch(() => {});
    throw err;
  }
}
