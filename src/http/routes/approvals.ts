import type { FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { approvalAggregate, approvalStatus, type ApprovalRecord } from '../../approvals/approval.ts';
import { isApprover } from '../../approvals/gate.ts';
import { LeashError } from '../../errors.ts';
import { APPROVALS, leashResource, type AdminAsk } from '../../humans/admin.ts';
import type { RegistryState } from '../../registry/registry-view.ts';
import { FenceFields, Id, Problem } from '../schemas.ts';
import type { App, ServerDeps } from '../server.ts';
import { byCaller } from './write-options.ts';

// Approvals (approvals/): the requests an `@approval` permit holds back, waiting for a human.
// A designated approver answers with their own token (no policy needed: it is addressed to
// them), or the operator answers naming the approver, which the event records as break-glass.
// Nobody else answers, whatever the admin policies say: an admin forbid may still stop an
// approver, but no admin permit makes someone an approver.

const Status = Type.Union([Type.Literal('pending'), Type.Literal('approved'), Type.Literal('denied'), Type.Literal('used'), Type.Literal('expired')]);

const ApprovalView = Type.Object({
  id: Type.String(), status: Status,
  agent: Type.String(), human: Type.String(), action: Type.String(), resource: Type.Object({ type: Type.String(), id: Type.String() }),
  contextDigest: Type.String(), approvers: Type.Array(Type.String()), policies: Type.Array(Type.String()),
  requestedAt: Type.String(), expiresAt: Type.String(), decisionId: Type.String(),
  answeredBy: Type.Optional(Type.String()), answeredAt: Type.Optional(Type.String()), reason: Type.Optional(Type.String()),
  usedBy: Type.Optional(Type.String()), usedAt: Type.Optional(Type.String()),
}, { additionalProperties: false });

const ApprovalParams = Type.Object({ id: Type.String({ format: 'uuid' }) }, { additionalProperties: false });
const AnswerBody = Type.Object({
  reason: Type.String({ minLength: 1, maxLength: 1000 }),
  approver: Type.Optional(Id),
}, { additionalProperties: false });
const errors = { 400: Problem, 401: Problem, 403: Problem, 404: Problem, 409: Problem, 422: Problem };

/** Longest a `GET /v1/approvals/{id}?wait=` holds the request. */
export const MAX_WAIT_SECONDS = 60;
const MAX_LIST = 500;

const view = (a: ApprovalRecord, now: Date) => ({ ...a, status: approvalStatus(a, now) });

/** The admin decision asked of a human caller: on the approval's agent, naming the approval (whose approvers may). */
const onApproval = (registry: RegistryState, verb: string) => (request: FastifyRequest): AdminAsk => {
  const id = (request.params as { id: string }).id;
  const agent = registry.approvals.get(id)?.record.agent;
  return agent ? { verb, resource: { type: 'Agent', id: agent }, approval: id } : { verb, resource: leashResource(APPROVALS), approval: id };
};

/** Allowed only by what is their own (no admin policy): the human sees the approvals addressed to them and those of their agents. */
const onlyTheirOwn = (request: FastifyRequest) => request.caller?.kind === 'human' && (request.adminReasons ?? []).every((r) => r.startsWith('own:'));

export async function approvalRoutes(app: App, deps: ServerDeps): Promise<void> {
  const { view: registry, commands } = deps;
  const concerns = (human: string, a: ApprovalRecord) => isApprover(registry, human, a) || registry.agents.get(a.agent)?.record.owner === human;

  app.get('/v1/approvals', {
    config: { access: 'operator', admin: () => ({ verb: 'list', resource: leashResource(APPROVALS) }) },
    schema: {
      tags: ['approvals'],
      querystring: Type.Object({
        status: Type.Optional(Status), agent: Type.Optional(Id),
        limit: Type.Optional(Type.String({ pattern: '^(?:[1-9][0-9]?|[1-4][0-9]{2}|500)$', description: `1..${MAX_LIST}, default 100` })),
      }, { additionalProperties: false }),
      response: { 200: Type.Object({ approvals: Type.Array(ApprovalView) }), ...errors },
    },
  }, async (request) => {
    const { status, agent, limit = '100' } = request.query as { status?: string; agent?: string; limit?: string };
    const now = new Date();
    const mine = onlyTheirOwn(request) ? (request.caller as { id: string }).id : null;
    const out: ApprovalRecord[] = [];
    for (const { record: a } of registry.approvals.values()) {
      if (agent !== undefined && a.agent !== agent) continue;
      if (status !== undefined && approvalStatus(a, now) !== status) continue;
      if (mine !== null && !concerns(mine, a)) continue;
      out.push(a);
    }
    // Newest first.
    out.sort((x, y) => (x.requestedAt < y.requestedAt ? 1 : x.requestedAt > y.requestedAt ? -1 : x.id < y.id ? 1 : -1));
    return { approvals: out.slice(0, Number(limit)).map((a) => view(a, now)) };
  });

  app.get('/v1/approvals/:id', {
    config: { access: 'operator', admin: onApproval(registry, 'read') },
    schema: {
      tags: ['approvals'], params: ApprovalParams,
      querystring: Type.Object({ wait: Type.Optional(Type.String({ pattern: '^(?:[0-9]|[1-5][0-9]|60)$', description: `seconds to wait while it is pending, 0..${MAX_WAIT_SECONDS}` })) }, { additionalProperties: false }),
      response: { 200: ApprovalView, ...errors },
    },
  }, async (request) => {
    const { id } = request.params;
    const wait = Number((request.query as { wait?: string }).wait ?? 0);
    // Asked for on another node a moment ago, it may not be here yet.
    if (!registry.approvals.has(id)) await deps.follower.sync();
    let found = registry.approvals.get(id)?.record;
    if (!found) throw new LeashError('APPROVAL_NOT_FOUND', `no approval ${id}`);
    if (wait > 0 && approvalStatus(found, new Date()) === 'pending') found = await untilAnswered(deps, found, wait * 1000, request);
    return view(found, new Date());
  });

  for (const approve of [true, false]) {
    const verb = approve ? 'approve' : 'deny';
    app.post(`/v1/approvals/:id/${verb}`, {
      config: { access: 'operator', admin: onApproval(registry, 'approve') },
      schema: { tags: ['approvals'], params: ApprovalParams, body: AnswerBody, response: { 200: Type.Object({ ...ApprovalView.properties, ...FenceFields }, { additionalProperties: false }), ...errors } },
    }, async (request) => {
      const { id } = request.params;
      const { reason, approver: named } = request.body;
      const caller = request.caller;
      if (!registry.approvals.has(id)) await deps.follower.sync();
      const approval = registry.approvals.get(id)?.record;
      if (!approval) throw new LeashError('APPROVAL_NOT_FOUND', `no approval ${id}`);
      // A person answers for themselves; the operator names the person it answers for.
      let approver: string;
      if (caller?.kind === 'human') {
        if (named !== undefined && named !== caller.id) throw new LeashError('FORBIDDEN', `${caller.id} answers as themselves, not as ${named}`, { layer: 'admin', reasons: [] });
        approver = caller.id;
      } else {
        if (named === undefined) throw new LeashError('VALIDATION_FAILED', '/body/approver names the approver the operator answers for (one of the approval\'s approvers)');
        if (!registry.humans.has(named)) throw new LeashError('HUMAN_NOT_FOUND', `no human ${named}`);
        approver = named;
      }
      if (!isApprover(registry, approver, approval)) {
        throw new LeashError('FORBIDDEN', `${approver} is not an approver of approval ${id} (approvers: ${approval.approvers.join(', ')})`, { layer: 'admin', reasons: [], approvers: approval.approvers });
      }
      const now = new Date();
      const result = await commands.handle(approvalAggregate, id, { type: 'AnswerApproval', approve, data: { approver: `human:${approver}`, reason }, metadata: { now } }, { now, ...byCaller(request) });
      // Every live node knows the answer before this returns: the PEP's retry may reach any of them.
      const fence = await deps.cluster.fence(result.position);
      if (result.state.status === 'none') throw new Error(`approval ${id} is missing after its answer`);
      return { ...view(result.state, now), ...fence };
    });
  }
}

/** Resolves with the approval once it is answered (or used, or expired), or as it is after `ms`. */
function untilAnswered(deps: ServerDeps, approval: ApprovalRecord, ms: number, request: FastifyRequest): Promise<ApprovalRecord> {
  return new Promise((resolve) => {
    const until = Math.min(ms, Date.parse(approval.expiresAt) - Date.now());
    let off = () => {};
    const done = () => {
      clearTimeout(timer);
      off();
      request.raw.off('close', done);
      resolve(deps.view.approvals.get(approval.id)?.record ?? approval);
    };
    const timer = setTimeout(done, Math.max(0, until));
    off = deps.view.onApprovalChange((a) => {
      if (a.id === approval.id && a.status !== 'pending') done();
    });
    // A caller that hangs up stops the wait.
    request.raw.on('close', done);
  });
}
