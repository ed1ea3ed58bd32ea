import { Type } from 'typebox';
import { listDecisions } from '../../audit/decision-query.ts';
import { LeashError } from '../../errors.ts';
import { adminOn } from '../../humans/admin.ts';
import { Id, instantOf, Problem } from '../schemas.ts';
import type { App, ServerDeps } from '../server.ts';

// GET /v1/decisions: the decision log, newest first, for an operator looking for a decision to
// trace (`GET /v1/audit/decisions/{id}/trace`). Keyset pages: `next` is where the next page
// starts, so a deep page costs what the first one does.

const DecisionsQuery = Type.Object({
  agent: Type.Optional(Id),
  decision: Type.Optional(Type.Union([Type.Literal('true'), Type.Literal('false')], { description: 'only allows (true) or denies (false)' })),
  since: Type.Optional(Type.String({ format: 'date-time', maxLength: 40, description: 'recorded at or after' })),
  until: Type.Optional(Type.String({ format: 'date-time', maxLength: 40, description: 'recorded before' })),
  limit: Type.Optional(Type.String({ pattern: '^(?:[1-9][0-9]{0,2}|1000)$', description: '1..1000, default 100' })),
  after: Type.Optional(Type.String({ pattern: '^[1-9][0-9]{0,15}$', description: "the previous page's `next`" })),
}, { additionalProperties: false });

const Ref = Type.Union([Type.Object({ type: Type.String(), id: Type.String() }), Type.Null()]);
const DecisionSummary = Type.Object({
  id: Type.String({ format: 'uuid' }), seq: Type.Integer(), at: Type.String(), nodeId: Type.String(),
  subject: Ref, action: Type.Union([Type.String(), Type.Null()]), resource: Ref,
  decision: Type.Boolean(), layer: Type.String(), code: Type.Union([Type.String(), Type.Null()]), reasons: Type.Array(Type.String()), policyVersion: Type.Integer(),
});

export async function decisionRoutes(app: App, deps: ServerDeps): Promise<void> {
  app.get('/v1/decisions', {
    config: { access: 'operator', admin: adminOn.leash('audit', 'audit') },
    schema: { tags: ['audit'], querystring: DecisionsQuery, response: { 200: Type.Object({ decisions: Type.Array(DecisionSummary), next: Type.Optional(Type.String()) }), 400: Problem, 401: Problem, 403: Problem } },
  }, async (request) => {
    const q = request.query;
    const since = q.since ? instantOf(q.since, 'querystring/since') : undefined;
    const until = q.until ? instantOf(q.until, 'querystring/until') : undefined;
    if (since && until && until <= since) throw new LeashError('VALIDATION_FAILED', '`until` is not after `since`');
    const page = await listDecisions(deps.decisions.db, {
      limit: q.limit ? Number(q.limit) : 100,
      ...(q.agent !== undefined ? { agent: q.agent } : {}),
      ...(q.decision !== undefined ? { decision: q.decision === 'true' } : {}),
      ...(since ? { since } : {}), ...(until ? { until } : {}),
      ...(q.after !== undefined ? { before: Number(q.after) } : {}),
    });
    return { decisions: page.decisions, ...(page.next === null ? {} : { next: String(page.next) }) };
  });
}
