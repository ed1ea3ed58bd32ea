import { Type } from 'typebox';
import { replay } from '../../audit/replay.ts';
import { PostgresSource } from '../../audit/source.ts';
import { traceDecision } from '../../audit/trace.ts';
import { LeashError } from '../../errors.ts';
import { instantOf, Problem } from '../schemas.ts';
import type { App, ServerDeps } from '../server.ts';
import { adminOn } from '../../humans/admin.ts';

// SPEC §8 over HTTP, for a console: replay and what-if over a range of recorded decisions,
// and the trace of one decision. Operator only (all of /v1). A run decides at most
// `maxDecisions` records and says where to continue, and gives the event loop a turn as it
// goes, so a node keeps answering decisions meanwhile.

const closed = { additionalProperties: false } as const;
const Seq = Type.Integer({ minimum: 1 });
const MAX_DECISIONS = 10_000;

const RangeBody = {
  from: Type.Optional(Seq),
  to: Type.Optional(Seq),
  since: Type.Optional(Type.String({ format: 'date-time' })),
  until: Type.Optional(Type.String({ format: 'date-time' })),
  maxDecisions: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_DECISIONS, description: `decisions evaluated in this call (default and most ${MAX_DECISIONS}); \`next\` says where to continue` })),
  limit: Type.Optional(Type.Integer({ minimum: 0, maximum: MAX_DECISIONS, description: 'records listed (all are counted); default 1000' })),
};
const ReplayBody = Type.Object(RangeBody, closed);
const WhatIfBody = Type.Object(
  {
    policies: Type.Object(
      {
        schema: Type.String({ minLength: 1, maxLength: 1024 * 1024 }),
        policies: Type.String({ maxLength: 8 * 1024 * 1024 }),
        aliases: Type.Optional(Type.Record(Type.String({ pattern: '^[A-Za-z0-9._:-]{1,128}$' }), Type.String({ maxLength: 256 }))),
      },
      closed,
    ),
    ...RangeBody,
  },
  closed,
);

const Report = Type.Object(
  {
    mode: Type.Union([Type.Literal('replay'), Type.Literal('what-if')]),
    decisions: Type.Integer(),
    tokenFromRecord: Type.Integer(),
    differing: Type.Integer(),
    allowToDeny: Type.Integer(),
    denyToAllow: Type.Integer(),
    records: Type.Array(Type.Object({}, { additionalProperties: true })),
    range: Type.Object({ from: Type.Union([Type.Integer(), Type.Null()]), to: Type.Union([Type.Integer(), Type.Null()]) }),
    next: Type.Union([Type.Integer(), Type.Null()]),
    memory: Type.Object({ asked: Type.Integer(), remembered: Type.Integer() }, { description: 'combined Cedar calls needed, and how many were answered from memory' }),
  },
  { additionalProperties: true },
);

const errors = { 400: Problem, 401: Problem, 413: Problem, 422: Problem };

type RangeInput = { from?: number; to?: number; since?: string; until?: string; maxDecisions?: number; limit?: number };

function rangeOf(body: RangeInput) {
  if (body.from !== undefined && body.to !== undefined && body.to < body.from) throw new LeashError('VALIDATION_FAILED', '`to` is before `from`');
  return {
    ...(body.from !== undefined ? { from: body.from } : {}), ...(body.to !== undefined ? { to: body.to } : {}),
    ...(body.since ? { since: instantOf(body.since, '/body/since') } : {}), ...(body.until ? { until: instantOf(body.until, '/body/until') } : {}),
    maxDecisions: body.maxDecisions ?? MAX_DECISIONS, keep: body.limit ?? 1_000, takeTurns: true,
  };
}

export async function auditRoutes(app: App, deps: ServerDeps): Promise<void> {
  const source = () => new PostgresSource(deps.decisions.db);

  app.post('/v1/audit/replay', { config: { access: 'operator', admin: adminOn.leash('audit', 'audit') }, schema: { tags: ['audit'], body: ReplayBody, response: { 200: Report, ...errors } } }, async (request) =>
    replay(source(), rangeOf(request.body)),
  );

  app.post('/v1/audit/what-if', { bodyLimit: 10 * 1024 * 1024, config: { access: 'operator', admin: adminOn.leash('audit', 'audit') }, schema: { tags: ['audit'], body: WhatIfBody, response: { 200: Report, ...errors } } }, async (request) => {
    const { policies, ...range } = request.body;
    return replay(source(), { ...rangeOf(range), candidate: policies });
  });

  app.get(
    '/v1/audit/decisions/:id/trace',
    { config: { access: 'operator', admin: adminOn.leash('audit', 'audit') }, schema: { tags: ['audit'], params: Type.Object({ id: Type.String({ format: 'uuid' }) }), response: { 200: Type.Object({}, { additionalProperties: true }), 400: Problem, 401: Problem, 404: Problem } } },
    async (request) => {
      const trace = await traceDecision(source(), request.params.id);
      if (!trace) throw new LeashError('NOT_FOUND', `no decision ${request.params.id} in the log`);
      return trace;
    },
  );
}
