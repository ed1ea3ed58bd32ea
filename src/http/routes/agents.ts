import { Type } from 'typebox';
import { LeashError } from '../../errors.ts';
import { checkLink } from '../../authz/template-links.ts';
import { allowedFrom, type AgentCommand, type AgentRecord, type AgentState, type TemplateLink } from '../../registry/agent.ts';
import { agentAggregate, streamId } from '../../registry/streams.ts';
import type { CommandResult } from '../../service/command-handler.ts';
import { checkPins } from '../../tokens/pins.ts';
import {
  AgentListQuery, AgentView, AuthorizeAgentBody, ClearFindingBody, DiscoverAgentBody, EventView, FenceFields, FencedAgentView, IdParams, KillSwitchBody, Problem, ReasonBody,
  RegisterAgentBody, RevokeBody, RotateBody, WriteHeaders,
} from '../schemas.ts';
import type { App, ServerDeps } from '../server.ts';
import { byCaller, etag, writeOptions } from './write-options.ts';
import { adminOn } from '../../humans/admin.ts';

const errors = { 400: Problem, 401: Problem, 404: Problem, 409: Problem, 412: Problem, 413: Problem, 422: Problem };

export function agentView(record: AgentRecord, version: number) {
  return { ...record, version };
}

export async function agentRoutes(app: App, deps: ServerDeps): Promise<void> {
  const { view, follower, commands } = deps;
  /** Links are checked against the policy set in force (templates and their slots). */
  const policySet = () => {
    const set = deps.policies.current();
    if (!set) throw new LeashError('NOT_READY', 'no policy set is loaded, so template links cannot be checked');
    return set;
  };

  const run = async (id: string, command: AgentCommand, request: Parameters<typeof writeOptions>[0]) =>
    commands.handle(agentAggregate, id, command, writeOptions(request));

  const respond = (result: CommandResult<AgentState>) => {
    if (result.state.status === 'none') throw new Error('a successful agent command left no agent');
    return agentView(result.state, result.version);
  };

  app.get('/v1/agents', { config: { access: 'operator', admin: adminOn.leash('list', 'agents') }, schema: { tags: ['agents'], querystring: AgentListQuery, response: { 200: Type.Object({ agents: Type.Array(AgentView), next: Type.Optional(Type.String()) }), 400: Problem, 401: Problem } } }, async (request) => {
    const { limit, after, ...filter } = request.query;
    const max = limit ? Number(limit) : 100;
    const all = view.listAgents(filter).filter((a) => after === undefined || a.record.id > after);
    const page = all.slice(0, max);
    const next = all.length > max ? page[page.length - 1]!.record.id : undefined;
    return { agents: page.map((a) => agentView(a.record, a.version)), ...(next ? { next } : {}) };
  });

  app.get('/v1/agents/:id', { config: { access: 'operator', admin: adminOn.param('read', 'Agent') }, schema: { tags: ['agents'], params: IdParams, response: { 200: AgentView, ...errors } } }, async (request, reply) => {
    const found = view.agents.get(request.params.id);
    if (!found) throw new LeashError('AGENT_NOT_FOUND', `no agent ${request.params.id}`);
    void reply.header('etag', etag(found.version));
    return agentView(found.record, found.version);
  });

  app.get('/v1/agents/:id/events', { config: { access: 'operator', admin: adminOn.param('read', 'Agent') }, schema: { tags: ['agents'], params: IdParams, response: { 200: Type.Object({ events: Type.Array(EventView) }), ...errors } } }, async (request) => {
    const events = await deps.store.readStream(streamId(agentAggregate.streamType, request.params.id));
    if (events.length === 0) throw new LeashError('AGENT_NOT_FOUND', `no agent ${request.params.id}`);
    return {
      events: events.map((e) => ({
        type: e.type, version: e.version, position: e.position, at: e.at.toISOString(), data: e.data,
        ...(typeof e.metadata.actor === 'string' ? { actor: e.metadata.actor } : {}), ...(e.metadata.breakGlass === true ? { breakGlass: true } : {}),
      })),
    };
  });

  app.post('/v1/agents', { config: { access: 'operator', admin: (request) => ({ verb: 'register', resource: { type: 'Human', id: String((request.body as { owner?: unknown }).owner) } }) }, schema: { tags: ['agents'], body: RegisterAgentBody, headers: WriteHeaders, response: { 201: AgentView, ...errors } } }, async (request, reply) => {
    const body = request.body;
    await follower.sync(); // references may have been registered on another node a moment ago
    if (!view.humans.has(body.owner)) throw new LeashError('UNKNOWN_OWNER', `owner ${body.owner} is not a registered human`, { owner: body.owner });
    const groups = body.groups ?? [];
    const missing = groups.filter((g) => !view.groups.has(g));
    if (missing.length > 0) throw new LeashError('UNKNOWN_GROUP', `groups not registered: ${missing.join(', ')}`, { groups: missing });
    await checkPins(body.credentials);
    if (body.ceiling) checkLink(policySet(), body.ceiling, 'ceiling', 'ceiling');
    const result = await run(
      body.id,
      { type: 'RegisterAgent', data: { ...body, groups, tags: body.tags ?? [], ceiling: body.ceiling ?? null }, metadata: { now: new Date() } },
      request,
    );
    void reply.status(201).header('etag', etag(result.version)).header('location', `/v1/agents/${body.id}`);
    if (result.replayed) void reply.header('idempotent-replayed', 'true');
    return respond(result);
  });

  app.post('/v1/agents/discover', { config: { access: 'operator', admin: adminOn.leash('discover', 'agents') }, schema: { tags: ['agents'], body: DiscoverAgentBody, headers: WriteHeaders, response: { 201: AgentView, ...errors } } }, async (request, reply) => {
    const result = await run(request.body.id, { type: 'DiscoverAgent', data: request.body, metadata: { now: new Date() } }, request);
    void reply.status(201).header('etag', etag(result.version)).header('location', `/v1/agents/${request.body.id}`);
    if (result.replayed) void reply.header('idempotent-replayed', 'true');
    return respond(result);
  });

  /**
   * The transitions on an existing agent share one shape: POST /v1/agents/{id}/<verb>.
   * Containment (`fenced`) returns only once every live node has applied the change.
   */
  const transition = <B extends typeof AuthorizeAgentBody | typeof ClearFindingBody | typeof ReasonBody | typeof RotateBody | typeof RevokeBody>(
    verb: string,
    body: B,
    toCommand: (input: any, now: Date) => AgentCommand,
    options: { fenced?: boolean; check?: (input: any) => Promise<void> } = {},
  ) => {
    const response = options.fenced ? FencedAgentView : AgentView;
    app.post(`/v1/agents/:id/${verb}`, { config: { access: 'operator', admin: adminOn.param(verb, 'Agent') }, schema: { tags: ['agents'], params: IdParams, body, headers: WriteHeaders, response: { 200: response, ...errors } } }, async (request, reply) => {
      const input = request.body as Record<string, unknown>;
      await options.check?.(input);
      const started = performance.now();
      const result = await run(request.params.id, toCommand(input, new Date()), request);
      const committed = performance.now();
      const fence = options.fenced ? await deps.cluster.fence(result.position) : {};
      // Where the time went: the durable append (and this node applying it), then the fence.
      void reply.header('server-timing', `commit;dur=${(committed - started).toFixed(2)}, fence;dur=${(performance.now() - committed).toFixed(2)}`);
      void reply.header('etag', etag(result.version));
      if (result.replayed) void reply.header('idempotent-replayed', 'true');
      return { ...respond(result), ...fence };
    });
  };

  transition('authorize', AuthorizeAgentBody, (input, now) => ({ type: 'AuthorizeAgent', data: input, metadata: { now } }), {
    check: async (input: { grants: TemplateLink[] }) => {
      const set = policySet();
      input.grants.forEach((grant, i) => checkLink(set, grant, 'grant', `grants[${i}]`));
    },
  });
  transition('suspend', ReasonBody, (input, now) => ({ type: 'SuspendAgent', data: input, metadata: { now } }), { fenced: true });
  transition('rotate', RotateBody, (input, now) => ({ type: 'RotateCredentials', data: input, metadata: { now } }), { fenced: true, check: (input) => checkPins(input.credentials) });
  transition('retire', ReasonBody, (input, now) => ({ type: 'RetireAgent', data: input, metadata: { now } }), { fenced: true });
  transition('revoke', RevokeBody, (input, now) => ({ type: 'RevokeAgent', data: input, metadata: { now } }), { fenced: true });
  // Someone looked into a monitoring finding: the trust score it took comes back, on every node
  // before the call returns. A contained agent stays contained until it is authorized again.
  transition('clear-finding', ClearFindingBody, (input, now) => ({ type: 'ClearFinding', data: input, metadata: { now } }), { fenced: true });

  const KillSwitchResult = Type.Object({
    revoked: Type.Array(Type.String(), { description: 'agents revoked by this call' }),
    skipped: Type.Array(Type.Object({ id: Type.String(), code: Type.String(), detail: Type.String() }), { description: 'matching agents whose state changed under the call' }),
    ...FenceFields,
  });

  /**
   * Kill switch (SPEC §6): every live agent of an owner, with a tag, or all of them, revoked
   * in one call that returns once every live node has applied the last of the revocations.
   * Safe to repeat: a second call finds nothing left to revoke.
   */
  app.post('/v1/kill-switch', { config: { access: 'operator', admin: adminOn.leash('kill-switch', 'agents') }, schema: { tags: ['agents'], body: KillSwitchBody, response: { 200: KillSwitchResult, 400: Problem, 401: Problem, 413: Problem } } }, async (request) => {
    const { scope, ...revocation } = request.body;
    await follower.sync(); // agents registered on other nodes a moment ago count too
    const revocable = (a: AgentRecord) => allowedFrom.RevokeAgent.includes(a.status) && !(revocation.mode === 'quarantine' && a.status === 'quarantined');
    const targets = [...view.agents.values()]
      .map((v) => v.record)
      .filter((a) => ('all' in scope ? true : 'owner' in scope ? a.owner === scope.owner : a.tags.includes(scope.tag)) && revocable(a))
      .map((a) => a.id);
    const revoked: string[] = [];
    const skipped: { id: string; code: string; detail: string }[] = [];
    let position = view.position;
    const now = new Date();
    // Many at once: the event store's group commit writes them in a few transactions.
    const queue = [...targets];
    const worker = async () => {
      for (let id = queue.shift(); id !== undefined; id = queue.shift()) {
        try {
          const result = await commands.handle(agentAggregate, id, { type: 'RevokeAgent', data: revocation, metadata: { now } }, { now, ...byCaller(request, ':kill-switch') });
          revoked.push(id);
          position = Math.max(position, result.position);
        } catch (err) {
          if (!(err instanceof LeashError)) throw err;
          skipped.push({ id, code: err.code, detail: err.message });
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(32, targets.length) }, worker));
    const fence = await deps.cluster.fence(position);
    return { revoked: revoked.sort(), skipped, ...fence };
  });
}
