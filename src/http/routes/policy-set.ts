import { Type } from 'typebox';
import { policyAggregate } from '../../authz/policy-aggregate.ts';
import { checkOffThread } from '../../authz/policy-compiler.ts';
import { refuseReservedIds } from '../../authz/policy-set.ts';
import { LeashError } from '../../errors.ts';
import { FenceFields, Problem, WriteHeaders } from '../schemas.ts';
import type { App, ServerDeps } from '../server.ts';
import { etag, writeOptions } from './write-options.ts';
import { adminOn } from '../../humans/admin.ts';

const PolicySetBody = Type.Object(
  {
    schema: Type.String({ minLength: 1, maxLength: 1024 * 1024 }),
    policies: Type.String({ maxLength: 8 * 1024 * 1024 }),
    aliases: Type.Optional(Type.Record(Type.String({ pattern: '^[A-Za-z0-9._:-]{1,128}$' }), Type.String({ maxLength: 256 }))),
  },
  { additionalProperties: false },
);

const PolicySetView = Type.Object(
  {
    version: Type.Integer(),
    sha256: Type.String(),
    policyIds: Type.Array(Type.String()),
    templateIds: Type.Array(Type.String()),
  },
  { additionalProperties: true },
);

const PublishedView = Type.Object({ ...PolicySetView.properties, ...FenceFields }, { additionalProperties: true });

const errors = { 400: Problem, 401: Problem, 412: Problem, 413: Problem, 422: Problem, 503: Problem };

/** SPEC §4: publish a policy set as an event after strict validation; read the one in force. */
export async function policyRoutes(app: App, deps: ServerDeps): Promise<void> {
  const { policies, commands } = deps;

  const current = () => {
    const set = policies.current();
    if (!set) throw new LeashError('NOT_READY', policies.error ?? 'no policy set is loaded');
    return set;
  };

  app.get('/v1/policy-set', { config: { access: 'operator', admin: adminOn.leash('read-policies', 'policies') }, schema: { tags: ['policies'], response: { 200: PolicySetView, ...errors } } }, async (_request, reply) => {
    const set = current();
    void reply.header('etag', etag(set.version));
    return { version: set.version, sha256: set.sha256, policyIds: set.policyIds, templateIds: set.templateIds, ...set.source };
  });

  app.put(
    '/v1/policy-set',
    { bodyLimit: 10 * 1024 * 1024, config: { access: 'operator', admin: adminOn.leash('publish-policies', 'policies') }, schema: { tags: ['policies'], body: PolicySetBody, headers: WriteHeaders, response: { 200: PublishedView, ...errors } } },
    async (request, reply) => {
      const source = request.body;
      // Strict validation first (off the event loop): an invalid set is a 422 with Cedar's
      // diagnostics, never an event.
      const checked = await checkOffThread(source);
      refuseReservedIds(checked);
      const result = await commands.handle(policyAggregate, 'current', { type: 'PublishPolicySet', data: { ...source, sha256: checked.sha256 }, metadata: { now: new Date() } }, writeOptions(request));
      // Every live node has the event and decides with the new set before the call returns, as
      // for a revocation (SPEC §6). Each compiles it first: this one's time tells how long the
      // others may need beyond an ordinary fence.
      const applied = await deps.cluster.fence(result.position);
      await policies.settled();
      const switched = await deps.cluster.awaitPolicy(result.position, result.version, 2 * policies.lastCompileMs);
      const missing = [...new Set([...applied.nodesMissing, ...switched.nodesMissing])].sort();
      const expected = Math.max(applied.nodesExpected, switched.nodesExpected);
      const fence = { position: result.position, nodesConfirmed: expected - missing.length, nodesExpected: expected, nodesMissing: missing };
      void reply.header('etag', etag(result.version));
      if (result.replayed) void reply.header('idempotent-replayed', 'true');
      return { version: result.version, sha256: checked.sha256, policyIds: checked.policyIds, templateIds: checked.templateIds, ...fence };
    },
  );
}
