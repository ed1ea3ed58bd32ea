import type { FastifyReply } from 'fastify';
import { Type } from 'typebox';
import type { CommandResult } from '../../service/command-handler.ts';
import { LeashError } from '../../errors.ts';
import type { HumanRecord } from '../../registry/principals.ts';
import { groupAggregate, humanAggregate } from '../../registry/streams.ts';
import { FenceFields, GroupBody, GroupView, HumanBody, HumanView, IdParams, Ids, Problem, Text, WriteHeaders } from '../schemas.ts';
import type { App, ServerDeps } from '../server.ts';
import { etag, writeOptions } from './write-options.ts';
import { adminOn } from '../../humans/admin.ts';

/** 201 with ETag and Location: the registered record, without its internal status, at its version. */
function created<R extends object>(reply: FastifyReply, result: CommandResult<{ status: 'none' } | ({ status: 'registered' } & R)>, location: string) {
  const state = result.state;
  if (state.status === 'none') throw new Error(`${location} is missing after its registration`);
  const { status: _status, ...record } = state as { status: 'registered' } & R;
  void reply.status(201).header('etag', etag(result.version)).header('location', location);
  if (result.replayed) void reply.header('idempotent-replayed', 'true');
  return { ...record, version: result.version };
}

/** A human as the API shows them: their grants are listed at /v1/humans/{id}/grants. */
function humanView(record: HumanRecord, version: number) {
  const { grants: _grants, ...rest } = record;
  return { ...rest, version };
}

const errors = { 400: Problem, 401: Problem, 404: Problem, 409: Problem, 412: Problem, 413: Problem, 422: Problem };

/** Humans and groups: the principals agents act for and belong to. */
export async function principalRoutes(app: App, deps: ServerDeps): Promise<void> {
  const { view, follower, commands } = deps;

  const missingGroups = async (ids: string[]) => {
    await follower.sync();
    const missing = ids.filter((g) => !view.groups.has(g));
    if (missing.length > 0) throw new LeashError('UNKNOWN_GROUP', `groups not registered: ${missing.join(', ')}`, { groups: missing });
  };

  app.post('/v1/humans', { config: { access: 'operator', admin: adminOn.leash('create-human', 'humans') }, schema: { tags: ['humans'], body: HumanBody, headers: WriteHeaders, response: { 201: HumanView, ...errors } } }, async (request, reply) => {
    const data = { ...request.body, groups: request.body.groups ?? [] };
    await missingGroups(data.groups);
    const result = await commands.handle(humanAggregate, data.id, { type: 'RegisterHuman', data, metadata: { now: new Date() } }, writeOptions(request));
    return created(reply, result, `/v1/humans/${data.id}`);
  });

  app.get('/v1/humans', { config: { access: 'operator', admin: adminOn.leash('list', 'humans') }, schema: { tags: ['humans'], response: { 200: Type.Object({ humans: Type.Array(HumanView) }), 401: Problem } } }, async () => ({
    humans: [...view.humans.values()].map((h) => humanView(h.record, h.version)).sort((a, b) => (a.id < b.id ? -1 : 1)),
  }));

  app.get('/v1/humans/:id', { config: { access: 'operator', admin: adminOn.param('read', 'Human') }, schema: { tags: ['humans'], params: IdParams, response: { 200: HumanView, ...errors } } }, async (request, reply) => {
    const found = view.humans.get(request.params.id);
    if (!found) throw new LeashError('HUMAN_NOT_FOUND', `no human ${request.params.id}`);
    void reply.header('etag', etag(found.version));
    return humanView(found.record, found.version);
  });

  // Fenced like a revocation: whatever the human's old groups gave them (and the agents acting
  // for them) is refused on every node before this returns.
  app.put('/v1/humans/:id/groups', {
    config: { access: 'operator', admin: adminOn.param('set-groups', 'Human') },
    schema: {
      tags: ['humans'], params: IdParams, headers: WriteHeaders,
      body: Type.Object({ groups: Ids(100), reason: Text(1000) }, { additionalProperties: false }),
      response: { 200: Type.Object({ ...HumanView.properties, ...FenceFields }, { additionalProperties: true }), ...errors },
    },
  }, async (request, reply) => {
    const { groups, reason } = request.body;
    // Groups carry rights and make approvers: nobody, whatever the admin policies say, changes their own.
    if (request.caller?.kind === 'human' && request.caller.id === request.params.id) {
      throw new LeashError('FORBIDDEN', `${request.caller.id} may not change their own groups`, { layer: 'admin', reasons: [] });
    }
    await missingGroups(groups);
    const result = await commands.handle(humanAggregate, request.params.id, { type: 'ChangeHumanGroups', data: { groups, reason }, metadata: { now: new Date() } }, writeOptions(request));
    const fence = await deps.cluster.fence(result.position);
    if (result.state.status === 'none') throw new Error(`human ${request.params.id} is missing after the change`);
    const { status: _status, ...record } = result.state;
    void reply.header('etag', etag(result.version));
    return { ...humanView(record, result.version), ...fence };
  });

  app.post('/v1/groups', { config: { access: 'operator', admin: adminOn.leash('create-group', 'groups') }, schema: { tags: ['groups'], body: GroupBody, headers: WriteHeaders, response: { 201: GroupView, ...errors } } }, async (request, reply) => {
    const data = { ...request.body, parents: request.body.parents ?? [] };
    await missingGroups(data.parents.filter((p) => p !== data.id));
    const result = await commands.handle(groupAggregate, data.id, { type: 'RegisterGroup', data, metadata: { now: new Date() } }, writeOptions(request));
    return created(reply, result, `/v1/groups/${data.id}`);
  });

  app.get('/v1/groups', { config: { access: 'operator', admin: adminOn.leash('list', 'groups') }, schema: { tags: ['groups'], response: { 200: Type.Object({ groups: Type.Array(GroupView) }), 401: Problem } } }, async () => ({
    groups: [...view.groups.values()].map((g) => ({ ...g.record, version: g.version })).sort((a, b) => (a.id < b.id ? -1 : 1)),
  }));

  app.get('/v1/groups/:id', { config: { access: 'operator', admin: adminOn.param('read', 'Group') }, schema: { tags: ['groups'], params: IdParams, response: { 200: GroupView, ...errors } } }, async (request, reply) => {
    const found = view.groups.get(request.params.id);
    if (!found) throw new LeashError('GROUP_NOT_FOUND', `no group ${request.params.id}`);
    void reply.header('etag', etag(found.version));
    return { ...found.record, version: found.version };
  });
}
