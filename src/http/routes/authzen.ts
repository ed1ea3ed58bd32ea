import { hash, randomUUID } from 'node:crypto';
import { Type } from 'typebox';
import type { FastifyReply } from 'fastify';
import { decide as decideAny } from '../../authz/agent-decision.ts';
import { DecisionCaches } from '../../authz/decision-caches.ts';
import type { Decision, EvaluationRequest } from '../../authz/engine.ts';
import type { RecordedRequest } from '../../audit/decision-log.ts';
import { LeashError } from '../../errors.ts';
import { exactJson } from '../../exact-json.ts';
import { MAX_JSON_DEPTH } from '../../json-limits.ts';
import { ShadowAgents } from '../../monitoring/shadow-agents.ts';
import { checkApprovalIds, checkBatchWork, checkLogBytes, complete } from './evaluation-limits.ts';
import { tokenVerifier, type LeashTokens } from '../../tokens/verify.ts';
import { Turns } from '../../turns.ts';
import { Problem } from '../schemas.ts';
import type { App, ServerDeps } from '../server.ts';

// OpenID AuthZEN Authorization API 1.0 (SPEC §4). Per the spec, unknown members are ignored,
// so these objects are open; what is required must still have the right type.

const open = { additionalProperties: true } as const;
const Properties = Type.Record(Type.String(), Type.Unknown());
// Cedar accepts an empty entity id or action name (`Document::""`), so these do too.
const Entity = Type.Object({ type: Type.String({ minLength: 1, maxLength: 256 }), id: Type.String({ maxLength: 1024 }), properties: Type.Optional(Properties) }, open);
const Action = Type.Object({ name: Type.String({ maxLength: 512 }), properties: Type.Optional(Properties) }, open);
const Context = Type.Record(Type.String(), Type.Unknown());

const EvaluationBody = Type.Object({ subject: Entity, action: Action, resource: Entity, context: Type.Optional(Context) }, open);

const Semantic = Type.Union([Type.Literal('execute_all'), Type.Literal('deny_on_first_deny'), Type.Literal('permit_on_first_permit')]);
const EvaluationsBody = Type.Object(
  {
    subject: Type.Optional(Entity),
    action: Type.Optional(Action),
    resource: Type.Optional(Entity),
    context: Type.Optional(Context),
    evaluations: Type.Optional(
      Type.Array(Type.Object({ subject: Type.Optional(Entity), action: Type.Optional(Action), resource: Type.Optional(Entity), context: Type.Optional(Context) }, open), { maxItems: 1000 }),
    ),
    options: Type.Optional(Type.Object({ evaluations_semantic: Type.Optional(Semantic) }, open)),
  },
  open,
);

const DecisionContext = Type.Object(
  { id: Type.String(), layer: Type.String(), reasons: Type.Array(Type.String()), position: Type.Integer(), policyVersion: Type.Integer() },
  open,
);
const DecisionView = Type.Object({ decision: Type.Boolean(), context: Type.Optional(DecisionContext) }, open);
const errors = { 400: Problem, 401: Problem, 413: Problem };

function view(d: Decision, id: string) {
  return {
    decision: d.decision,
    context: {
      id, layer: d.layer, reasons: d.reasons, position: d.position, policyVersion: d.policyVersion,
      ...(d.code ? { code: d.code } : {}), ...(d.errors.length ? { errors: d.errors } : {}), ...approvalView(d),
    },
  };
}

/** The approval to wait for (an approval required), or the one this allow spent. */
function approvalView(d: Decision) {
  const a = d.approval;
  if (!a?.id) return {};
  if (d.decision) return { approval: { id: a.id } };
  return { approval: { id: a.id, expiresAt: a.expiresAt, approvers: a.approvers } };
}

/**
 * The request as the decision log keeps it: what it was decided on (subject, action, resource,
 * context), the token replaced by its fingerprint, verified claims and jti (or, for a token
 * refused for what its claims hold, those claims escaped). `contextOf`: the
 * context is a batch's shared one, recorded in full with that decision and named here by its id.
 */
function recorded(request: EvaluationRequest, d: Decision, contextOf: string | null): RecordedRequest {
  const { subject, action, resource, context } = request;
  const properties = subject.properties;
  let kept = subject;
  if (properties && 'token' in properties) {
    const { token, ...rest } = properties;
    const fingerprint = typeof token === 'string' ? hash('sha256', token, 'hex') : null;
    const claims = d.claims ? { claims: d.claims, jti: d.claims.jti ?? null } : d.refusedClaims ? { refusedClaims: d.refusedClaims } : {};
    kept = { ...subject, properties: { ...rest, token: { sha256: fingerprint, ...claims } } };
  }
  // The approval a gated decision asked for, or spent (its stream tells the rest).
  const approval = d.approval?.id ? { approval: { id: d.approval.id, outcome: d.approval.outcome } } : {};
  if (contextOf) return { subject: kept, action, resource, contextOf, ...approval };
  return { subject: kept, action, resource, ...(context === undefined ? {} : { context }), ...approval };
}

/** How this node checks Leash's own tokens: its issuer, every node's keys, and the revoked jtis (introspection uses the same). */
export const leashTokens = (deps: ServerDeps): LeashTokens => ({
  issuer: deps.publicUrl, keys: deps.keys.getKey, revoked: (jti, nowMs) => deps.revokedTokens.has(jti, nowMs),
});

export async function authzenRoutes(app: App, deps: ServerDeps): Promise<void> {
  // Integers beyond 2^53 are read exactly here (Cedar's are 64-bit); the default parser runs
  // first, so its checks (syntax, prototype poisoning) hold for these bodies too.
  const json = app.getDefaultJsonParser('error', 'error');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    json(request, body as string, (err: Error | null, parsed?: unknown) => {
      if (err) return done(err);
      try {
        done(null, exactJson(body as string, parsed));
      } catch {
        // JSON.parse read it, so only the exact parser's recursion can have failed: nesting.
        done(new LeashError('VALIDATION_FAILED', `the body nests deeper than ${MAX_JSON_DEPTH} levels`));
      }
    });
  });
  const caches = new DecisionCaches();
  deps.metrics.tokenCaches.push(caches.tokens);
  const shadowAgents = new ShadowAgents({ view: deps.view, commands: deps.commands, log: (fields, message) => app.log.warn(fields, message) });
  // Agents' own tokens through their pins; the ones Leash issued through Leash's keys (every node's).
  const tokens = tokenVerifier(leashTokens(deps));
  // A lifecycle change drops what was cached for the agent and for tokens delegated through it.
  const off = deps.view.onAgentChange((id) => caches.forgetAgent(id));
  app.addHook('onClose', async () => off());

  /** Decide, then record durably; only then may the answer leave (SPEC §8). */
  /** `shared`: a batch's top-level context, which the items that use it record once. */
  const decide = async (pep: string, requests: EvaluationRequest[], stopAt?: (d: Decision) => boolean, shared?: object) => {
    // Admitted: caught up if this node was behind or cut off; its confirmations of later
    // positions wait until this answer has left (SPEC §6).
    const ticket = await deps.cluster.admit();
    const observed: Promise<void>[] = [];
    let answers;
    try {
      answers = await decideAndRecord(pep, requests, observed, stopAt, shared);
    } finally {
      deps.cluster.release(ticket);
    }
    // A containment these decisions triggered is fenced: every node (this one too, now that the
    // answer is settled) applies it before the answer leaves.
    if (observed.length > 0) await Promise.all(observed);
    return answers;
  };

  /**
   * One request decided; a decision the approval gate took is settled here (the approval it
   * needs recorded, or the one it names spent) before it is recorded itself. One that lost the
   * race to spend its approval is decided again, on the state that shows who won.
   */
  const decideOne = async (request: EvaluationRequest, id: string) => {
    for (let attempt = 1; ; attempt++) {
      // The record carries the instant the decision was made at, so replay can decide at it too.
      const at = deps.clock?.() ?? new Date();
      const started = performance.now();
      const decision = await decideAny(request, deps.policies.current(), deps.view, at, { caches, tokens });
      deps.metrics.decided(decision.decision, decision.layer, (performance.now() - started) / 1000);
      if (!decision.approval) return { request, decision, at, id, durable: null };
      let settled;
      try {
        settled = await deps.approvals.resolve(decision, id, at);
      } catch (err) {
        if (err instanceof LeashError) throw err;
        app.log.error({ err }, 'approval write failed; answering 503');
        throw new LeashError('NOT_READY', 'the approval this decision needs could not be recorded durably, so no answer is given');
      }
      if ('decision' in settled) return { request, decision: settled.decision, at, id, durable: settled.durable ?? null };
      if (attempt === 3) throw new LeashError('NOT_READY', 'the approval this request names is being spent elsewhere; ask again');
    }
  };

  const decideAndRecord = async (pep: string, requests: EvaluationRequest[], observed: Promise<void>[], stopAt?: (d: Decision) => boolean, shared?: object) => {
    checkApprovalIds(requests);
    const decided: { request: EvaluationRequest; decision: Decision; at: Date; id: string; durable: Promise<void> | null }[] = [];
    const turns = new Turns();
    for (const request of requests) {
      // A long batch gives other requests (and revocations) a turn now and then.
      await turns.take();
      const one = await decideOne(request, randomUUID());
      decided.push(one);
      if (stopAt?.(one.decision)) break;
    }
    // The first item decided with the batch's shared context records it; the others name that record.
    let sharedIn: string | null = null;
    const records = decided.map(({ request, decision: d, at, id }) => {
      const isShared = shared !== undefined && request.context === shared;
      const contextOf = isShared ? sharedIn : null;
      if (isShared) sharedIn ??= id;
      return {
        id, nodeId: deps.nodeId, at, request: recorded(request, d, contextOf), decision: d.decision, layer: d.layer,
        code: d.code ?? null, reasons: d.reasons, policyVersion: d.policyVersion, logPosition: d.position, shadow: d.shadow ?? null,
      };
    });
    // The approvals these decisions asked for, being appended: durable before any answer leaves.
    const approvals = Promise.all(decided.map((d) => d.durable));
    approvals.catch(() => {});
    let stored;
    try {
      // The record holding a shared context is durable before any record naming it is written.
      const holder = sharedIn === null ? -1 : records.findIndex((r) => r.id === sharedIn);
      const first = holder >= 0 && records.length > 1 ? [await deps.decisions.record(records[holder]!)] : [];
      const rest = await Promise.all(records.filter((_, i) => first.length === 0 || i !== holder).map((r) => deps.decisions.record(r)));
      stored = first.length === 0 ? rest : [...rest.slice(0, holder), first[0]!, ...rest.slice(holder)];
    } catch (err) {
      app.log.error({ err }, 'decision log write failed; answering 503');
      throw new LeashError('NOT_READY', 'the decision could not be recorded durably, so it is not given');
    }
    try {
      await approvals;
    } catch (err) {
      app.log.error({ err }, 'approval write failed; answering 503');
      throw new LeashError('NOT_READY', 'the approval this decision asks for could not be recorded durably, so no answer is given');
    }
    // Agents the registry does not know: shadow agents, recorded (bounded) after the answer is settled.
    // Agents it knows: counted by the detectors (see decide for what waits on them).
    for (const { request, decision, at } of decided) {
      if (decision.code === 'AGENT_UNKNOWN') shadowAgents.seen(request.subject.id, pep, request.subject.properties?.token, at);
      else if (decision.layer !== 'subject') {
        const responding = deps.monitor.observe(request, decision, at);
        if (responding) observed.push(responding);
      }
    }
    return decided.map(({ decision }, i) => view(decision, stored[i]!.id));
  };

  app.get('/.well-known/authzen-configuration', { config: { access: 'public' }, schema: { tags: ['authzen'] } }, async () => {
    // From configuration, never from the request's Host header, which the caller writes.
    const base = deps.publicUrl;
    return {
      policy_decision_point: base,
      access_evaluation_endpoint: `${base}/access/v1/evaluation`,
      access_evaluations_endpoint: `${base}/access/v1/evaluations`,
      search_subject_endpoint: `${base}/access/v1/search/subject`,
      search_action_endpoint: `${base}/access/v1/search/action`,
      search_resource_endpoint: `${base}/access/v1/search/resource`,
    };
  });

  /** The request's log lines (its "request completed" too) name the decisions it made: the first ten of a batch, and how many. */
  const logged = <T extends { context: { id: string } }>(reply: FastifyReply, answers: T[]): T[] => {
    reply.log = answers.length === 1
      ? reply.log.child({ decisionId: answers[0]!.context.id })
      : reply.log.child({ decisions: answers.length, decisionIds: answers.slice(0, 10).map((a) => a.context.id) });
    return answers;
  };

  app.post('/access/v1/evaluation', { config: { access: 'decider', exactValues: true }, schema: { tags: ['authzen'], body: EvaluationBody, response: { 200: DecisionView, ...errors } } }, async (request, reply) =>
    logged(reply, await decide(request.pep ?? 'operator', [request.body as EvaluationRequest]))[0]!,
  );

  app.post('/access/v1/evaluations', { config: { access: 'decider', exactValues: true }, schema: { tags: ['authzen'], body: EvaluationsBody, response: { 200: Type.Union([Type.Object({ evaluations: Type.Array(DecisionView) }), DecisionView]), ...errors } } }, async (request, reply) => {
    const { evaluations, options, ...defaults } = request.body;
    if (!evaluations || evaluations.length === 0) {
      // The spec: without an evaluations array this is a single evaluation.
      return logged(reply, await decide(request.pep ?? 'operator', [complete(defaults)]))[0]!;
    }
    const semantic = options?.evaluations_semantic ?? 'execute_all';
    const merged = evaluations.map((item) =>
      complete({ subject: item.subject ?? defaults.subject, action: item.action ?? defaults.action, resource: item.resource ?? defaults.resource, context: item.context ?? defaults.context }),
    );
    const stopAt = semantic === 'deny_on_first_deny' ? (d: Decision) => !d.decision : semantic === 'permit_on_first_permit' ? (d: Decision) => d.decision : undefined;
    checkLogBytes(merged);
    checkBatchWork(merged);
    const results = logged(reply, await decide(request.pep ?? 'operator', merged, stopAt, defaults.context));
    return { evaluations: results };
  });
}

/** Decisions in a batch between turns of the event loop. */
