import { randomUUID } from 'node:crypto';
import swagger from '@fastify/swagger';
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { LeashError } from '../errors.ts';
import { escapeValues } from '../exact-json.ts';
import { findUnsafeValue, pointer } from '../json-limits.ts';
import type { DecisionLog } from '../audit/decision-log.ts';
import type { PolicyView } from '../authz/policy-view.ts';
import type { Cluster } from '../cluster/cluster.ts';
import type { RegistryView } from '../registry/registry-view.ts';
import type { CommandHandler } from '../service/command-handler.ts';
import type { EventStore } from '../store/event-store.ts';
import type { Follower } from '../store/follower.ts';
import type { LeashKeys } from '../tokens/leash-keys.ts';
import type { NodeSigner } from '../tokens/node-signer.ts';
import type { RevokedTokens } from '../tokens/revoked-tokens.ts';
import { authorizeAdmin } from '../humans/admin.ts';
import { humanTokenVerifier, type HumanPins } from '../humans/human-tokens.ts';
import { accessControl, type RouteAccess } from './access.ts';
import { errorHandler, problem } from './problem.ts';
import { agentRoutes } from './routes/agents.ts';
import { auditRoutes } from './routes/audit.ts';
import { decisionRoutes } from './routes/decisions.ts';
import { metricsRoutes } from './routes/metrics.ts';
import { authzenRoutes } from './routes/authzen.ts';
import { policyRoutes } from './routes/policy-set.ts';
import { healthRoutes } from './routes/health.ts';
import { oauthRoutes } from './routes/oauth.ts';
import { grantRoutes } from './routes/grants.ts';
import { principalRoutes } from './routes/principals.ts';
import { approvalRoutes } from './routes/approvals.ts';
import { searchRoutes } from './routes/search.ts';
import type { ApprovalService } from '../approvals/approval-service.ts';
import type { Metrics } from '../metrics/metrics.ts';
import type { Monitor } from '../monitoring/monitor.ts';
import type { MonitoringView } from '../monitoring/monitoring-config.ts';
import { monitoringRoutes } from './routes/monitoring.ts';
import { suggestionRoutes } from './routes/suggestion.ts';
import { ssfRoutes } from './routes/ssf.ts';
import { consoleRoutes } from './routes/console.ts';
import type { StreamsView } from '../ssf/stream.ts';
import type { Transmitter } from '../ssf/transmitter.ts';

export interface ServerDeps {
  store: EventStore;
  view: RegistryView;
  follower: Follower;
  commands: CommandHandler;
  policies: PolicyView;
  decisions: DecisionLog;
  cluster: Cluster;
  adminToken: string;
  pepTokens: string[];
  nodeId: string;
  /** Where callers reach the service; metadata documents name their endpoints under it. */
  publicUrl: string;
  /** Every node's public signing keys: the JWKS, and how Leash's own tokens are verified. */
  keys: LeashKeys;
  /** The jtis of revoked Leash tokens, until they expire. */
  revokedTokens: RevokedTokens;
  /** This node's signing key, for the token endpoint. */
  signer: NodeSigner;
  /** The `aud` of issued tokens whose request names no `resource`. */
  tokenAudience: string;
  /** The identity provider humans sign in with; null: admin calls take the operator token only. */
  humanPins?: HumanPins | null;
  /** Records the approvals decisions ask for and spends the ones they use (approvals/). */
  approvals: ApprovalService;
  /** The detectors on this node's decisions (monitoring/monitor.ts). */
  monitor: Monitor;
  /** Tests: the instant decisions are made at (default the system clock). */
  clock?: () => Date;
  /** What `GET /metrics` shows (metrics/metrics.ts). */
  metrics: Metrics;
  /** `LEASH_METRICS_TOKEN`: a token that reads `/metrics` and nothing else; null: the operator token only. */
  metricsToken?: string | null;
  /** The detectors' configuration in force, folded from the log. */
  monitoring: MonitoringView;
  /** The security event streams (Shared Signals), folded from the log. */
  streams: StreamsView;
  /** Delivers them: push loops, and the poll endpoint's work. */
  transmitter: Transmitter;
  logger?: FastifyServerOptions['logger'];
}

export type App = FastifyInstance<any, any, any, any, TypeBoxTypeProvider>;

declare module 'fastify' {
  interface FastifyInstance {
    /** Every registered route with its access, from the router's own registrations. */
    routeAccess: RouteAccess[];
  }
  interface FastifyContextConfig {
    /** The decision API: NUL and big integers are kept, escaped (exact-json.ts), not refused. */
    exactValues?: boolean;
  }
}

export const BODY_LIMIT = 64 * 1024;

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

export async function buildServer(deps: ServerDeps): Promise<App> {
  const app = Fastify({
    logger: deps.logger ?? false,
    bodyLimit: BODY_LIMIT,
    // An X-Request-ID from the caller is kept (and echoed) when it is sane; else we mint one.
    genReqId: (req) => {
      const given = req.headers['x-request-id'];
      return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
    },
    ajv: {
      // Reject, never repair: no dropped unknown fields, no "60" accepted as 60.
      customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: false, allErrors: false },
    },
    routerOptions: { maxParamLength: 512 },
  }).withTypeProvider<TypeBoxTypeProvider>();

  app.setErrorHandler(errorHandler);
  app.setNotFoundHandler((request, reply) => {
    void reply.status(404).type('application/problem+json').send(problem('NOT_FOUND', `no route for ${request.method} ${request.url.split('?')[0]}`));
  });

  app.addHook('onSend', async (request, reply) => {
    reply.header('x-request-id', request.id);
  });

  // Values that cannot travel intact, and nesting past the bound, are refused up front (see
  // json-limits.ts), so a bad body is a 400, never a failed write, a silently different value
  // or a recursion without end.
  app.addHook('preValidation', async (request) => {
    if (request.routeOptions.config?.exactValues) return;
    const bad = findUnsafeValue(request.body);
    if (bad !== null) throw new LeashError('VALIDATION_FAILED', `${pointer(bad.path)} ${bad.why}`);
  });
  // The decision API's values are Cedar's to judge: they are put in their escaped form once
  // validated (so a big integer where a string belongs is still a wrong type).
  app.addHook('preHandler', async (request) => {
    if (!request.routeOptions.config?.exactValues) return;
    const escaped = escapeValues(request.body);
    if ('problem' in escaped) throw new LeashError('VALIDATION_FAILED', `${pointer(escaped.problem.path)} ${escaped.problem.why}`);
    request.body = escaped.value;
  });

  // Who may call what: each route declares it, the matched route decides (access.ts).
  const humans = deps.humanPins ? { verify: humanTokenVerifier(deps.humanPins), registry: deps.view } : null;
  const access = accessControl({ operator: deps.adminToken, deciders: deps.pepTokens, humans, metrics: deps.metricsToken ?? null });
  app.addHook('onRoute', (route) => access.declare(route));
  app.addHook('onRequest', async (request) => access.check(request));
  // A human's admin call is a Cedar decision, recorded, once the body is validated (humans/admin.ts).
  const admin = { registry: deps.view, sync: () => deps.follower.sync(), policies: () => deps.policies.current(), decisions: deps.decisions, nodeId: deps.nodeId };
  app.addHook('preHandler', async (request) => authorizeAdmin(admin, request));
  app.decorate('routeAccess', access.routes);

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'Leash', version: '0.1.0', description: 'Authorization for AI agents: the agent registry and lifecycle, policy sets, AuthZEN decisions, the audit trail, and the tokens Leash issues agents (OAuth).' },
      components: {
        securitySchemes: {
          operator: { type: 'http', scheme: 'bearer', description: 'the operator token (LEASH_ADMIN_TOKEN)' },
          caller: { type: 'http', scheme: 'bearer', description: 'a decision caller\'s token (LEASH_PEP_TOKENS)' },
          metrics: { type: 'http', scheme: 'bearer', description: 'the metrics token (LEASH_METRICS_TOKEN): reads /metrics only' },
        },
      },
      security: [{ operator: [] }],
    },
  });

  await app.register(healthRoutes, deps);
  await app.register(principalRoutes, deps);
  await app.register(grantRoutes, deps);
  await app.register(approvalRoutes, deps);
  await app.register(agentRoutes, deps);
  await app.register(policyRoutes, deps);
  await app.register(authzenRoutes, deps);
  await app.register(searchRoutes, deps);
  await app.register(monitoringRoutes, deps);
  await app.register(suggestionRoutes, deps);
  await app.register(auditRoutes, deps);
  await app.register(decisionRoutes, deps);
  await app.register(metricsRoutes, deps);
  await app.register(oauthRoutes, deps);
  await app.register(ssfRoutes, deps);
  await app.register(consoleRoutes);

  app.get('/openapi.json', { config: { access: 'public' }, schema: { hide: true } }, async () => app.swagger());
  return app;
}
