import { randomUUID } from 'node:crypto';
import { Type } from 'typebox';
import { detailsOf } from '../../authz/details.ts';
import { LeashError } from '../../errors.ts';
import { actorOf } from '../../humans/admin.ts';
import { grantStatus, type GrantRecord } from '../../registry/grants.ts';
import { humanAggregate } from '../../registry/streams.ts';
import { FenceFields, Id, Problem, WriteHeaders } from '../schemas.ts';
import type { App, ServerDeps } from '../server.ts';
import { etag, writeOptions } from './write-options.ts';

// On-behalf-of grants (registry/grants.ts): a human consents that an agent may act for them
// within named authorization details, until an expiry. The human grants with their own token
// (it is theirs to give: no policy needed) or the operator grants for them; either is recorded
// on the human's stream. Revoking one is fenced like revoking an agent.

/** The longest a grant may run. */
const MAX_GRANT_DAYS = 366;
/**
 * The most a grant's authorization_details may take (as JSON): every node holds a human's
 * grants (up to MAX_GRANTS_PER_HUMAN), so one grant may not carry a whole request body of
 * fields Leash does not read. 32 plain entries take a few KiB.
 */
const MAX_GRANT_DETAILS_CHARS = 8 * 1024;

const GrantBody = Type.Object({
  agent: Id,
  authorization_details: Type.Array(Type.Object({}, { additionalProperties: true }), { minItems: 1, maxItems: 32 }),
  expiresAt: Type.String({ format: 'date-time', description: 'when the grant ends (at most 366 days ahead)' }),
  purpose: Type.String({ minLength: 1, maxLength: 500 }),
}, { additionalProperties: false });

const GrantView = Type.Object({
  id: Type.String(), human: Type.String(), agent: Type.String(), authorization_details: Type.Array(Type.Any()), expiresAt: Type.String(), purpose: Type.String(),
  status: Type.Union([Type.Literal('active'), Type.Literal('revoked'), Type.Literal('expired')]),
  consentedBy: Type.String(), grantedAt: Type.String(), revokedAt: Type.Optional(Type.String()), revokedBy: Type.Optional(Type.String()), reason: Type.Optional(Type.String()),
}, { additionalProperties: false });

const HumanParams = Type.Object({ id: Id }, { additionalProperties: false });
const GrantParams = Type.Object({ id: Id, grantId: Type.String({ format: 'uuid' }) }, { additionalProperties: false });
const errors = { 400: Problem, 401: Problem, 403: Problem, 404: Problem, 409: Problem, 412: Problem, 413: Problem, 422: Problem };

const view = (human: string, g: GrantRecord, now: Date) => ({ ...g, human, status: grantStatus(g, now) });

const onHuman = (verb: string) => (request: { params: unknown }) => ({ verb, resource: { type: 'Human', id: (request.params as { id: string }).id } });

export async function grantRoutes(app: App, deps: ServerDeps): Promise<void> {
  const { view: registry, follower, commands } = deps;

  app.post('/v1/humans/:id/grants', {
    config: { access: 'operator', admin: onHuman('grant') },
    schema: { tags: ['humans'], params: HumanParams, body: GrantBody, headers: WriteHeaders, response: { 201: GrantView, ...errors } },
  }, async (request, reply) => {
    const { agent, authorization_details: details, expiresAt, purpose } = request.body;
    const now = new Date();
    const parsed = detailsOf(details);
    if (!parsed.ok) throw new LeashError('VALIDATION_FAILED', `/body/authorization_details ${parsed.detail}`);
    // A grant for an action no policy set of today could decide would never be usable: say so now.
    const schema = deps.policies.current()?.schemaJson;
    const unknown = schema && parsed.details.flatMap((d) => d.actionUids).find((a) => !declaresAction(schema, a));
    if (unknown) throw new LeashError('VALIDATION_FAILED', `/body/authorization_details names ${unknown.type}::${JSON.stringify(unknown.id)}, which the schema does not declare`);
    if (JSON.stringify(details).length > MAX_GRANT_DETAILS_CHARS) throw new LeashError('VALIDATION_FAILED', `/body/authorization_details must take at most ${MAX_GRANT_DETAILS_CHARS} characters as JSON`);
    const ends = Date.parse(expiresAt);
    if (!(ends > now.getTime()) || ends > now.getTime() + MAX_GRANT_DAYS * 86_400_000) throw new LeashError('VALIDATION_FAILED', `/body/expiresAt must be in the future and at most ${MAX_GRANT_DAYS} days ahead`);
    await follower.sync();
    if (!registry.agents.has(agent)) throw new LeashError('AGENT_NOT_FOUND', `the grant names agent ${agent}, which is not registered`);
    const grant = { id: randomUUID(), agent, authorization_details: details, expiresAt: new Date(ends).toISOString(), purpose, consentedBy: actorOf(request.caller) };
    const human = request.params.id;
    const result = await commands.handle(humanAggregate, human, { type: 'GrantDelegation', data: grant, metadata: { now } }, writeOptions(request));
    const state = result.state;
    // A retry with the same Idempotency-Key gets the grant it made (the stream's state as of
    // then, its last grant), not the id this request drew.
    const grants = state.status === 'registered' ? state.grants ?? [] : [];
    const stored = result.replayed ? grants.at(-1) : grants.find((g) => g.id === grant.id);
    if (!stored) throw new Error(`grant ${grant.id} is missing after it was recorded`);
    if (result.replayed) void reply.header('idempotent-replayed', 'true');
    void reply.status(201).header('etag', etag(result.version)).header('location', `/v1/humans/${human}/grants/${grant.id}`);
    return view(human, stored, now);
  });

  app.get('/v1/humans/:id/grants', {
    config: { access: 'operator', admin: onHuman('read') },
    schema: { tags: ['humans'], params: HumanParams, response: { 200: Type.Object({ grants: Type.Array(GrantView) }), ...errors } },
  }, async (request) => {
    const found = registry.humans.get(request.params.id);
    if (!found) throw new LeashError('HUMAN_NOT_FOUND', `no human ${request.params.id}`);
    const now = new Date();
    return { grants: (found.record.grants ?? []).map((g) => view(found.record.id, g, now)) };
  });

  app.post('/v1/humans/:id/grants/:grantId/revoke', {
    config: { access: 'operator', admin: onHuman('revoke-grant') },
    schema: {
      tags: ['humans'], params: GrantParams, body: Type.Object({ reason: Type.String({ minLength: 1, maxLength: 1000 }) }, { additionalProperties: false }), headers: WriteHeaders,
      response: { 200: Type.Object({ ...GrantView.properties, ...FenceFields }, { additionalProperties: false }), ...errors },
    },
  }, async (request) => {
    const { id: human, grantId } = request.params;
    const now = new Date();
    const result = await commands.handle(humanAggregate, human, { type: 'RevokeDelegation', data: { id: grantId, revokedBy: actorOf(request.caller), reason: request.body.reason }, metadata: { now } }, writeOptions(request));
    // Every token under the grant is refused on every live node before this answers.
    const fence = await deps.cluster.fence(result.position);
    const state = result.state;
    const grant = state.status === 'registered' ? state.grants?.find((g) => g.id === grantId) : undefined;
    if (!grant) throw new Error(`grant ${grantId} is missing after its revocation`);
    return { ...view(human, grant, now), ...fence };
  });
}

/** Whether the schema (Cedar's JSON form) declares this action: `Action` in the empty namespace, `NS::Action` in NS. */
function declaresAction(schema: Record<string, { actions?: Record<string, unknown> }>, action: { type: string; id: string }): boolean {
  const namespace = action.type === 'Action' ? '' : action.type.slice(0, -'::Action'.length);
  return Object.hasOwn(schema[namespace]?.actions ?? {}, action.id);
}
