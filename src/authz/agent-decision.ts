import * as cedar from './cedar.ts';
import { LeashError } from '../errors.ts';
import type { AgentRecord, TemplateLink } from '../registry/agent.ts';
import type { CedarEntity, EntityUid } from '../registry/cedar-entities.ts';
import type { RegistryView } from '../registry/registry-view.ts';
import type { VerifiedTokenCache } from '../tokens/token-cache.ts';
import { verifyAgentToken } from '../tokens/verify.ts';
import { cedarType, entitiesFor, entityKey, evaluate, type Decision, type EvaluationRequest } from './engine.ts';
import { CEILING, type CompiledPolicySet } from './policy-set.ts';

// SPEC §3: an agent A acting for human H is allowed only if ALL layers allow —
// token, details (RFC 9396), ceiling, agent, human — and any forbid wins. The first layer
// that refuses is the one the decision names.

interface LayerResult {
  allow: boolean;
  /** Satisfied permits on an allow; satisfied forbids on a deny (empty: nothing permitted). */
  reasons: string[];
  errors: string[];
}

interface Call {
  action: EntityUid;
  resource: EntityUid;
  context: Record<string, unknown>;
  entities: CedarEntity[];
}

function answer(result: cedar.AuthorizationAnswer): LayerResult {
  if (result.type === 'failure') {
    throw new LeashError('VALIDATION_FAILED', `the request does not fit the schema: ${result.errors.map((e) => e.message).join('; ')}`);
  }
  const { decision, diagnostics } = result.response;
  return { allow: decision === 'allow', reasons: diagnostics.reason, errors: diagnostics.errors.map((e) => `${e.policyId}: ${e.error.message}`) };
}

function preparsed(set: CompiledPolicySet, id: string, principal: EntityUid, call: Call): LayerResult {
  return answer(
    cedar.statefulIsAuthorized({
      principal, action: call.action, resource: call.resource, context: call.context as cedar.Context,
      entities: call.entities as cedar.Entities, preparsedPolicySetId: id, preparsedSchemaName: set.schemaName, validateRequest: false,
    }),
  );
}

/** Per-agent template links (a ceiling, grants), evaluated on their own. */
function linked(set: CompiledPolicySet, links: { link: TemplateLink; newId: string }[], principal: EntityUid, call: Call): LayerResult {
  const templates: Record<string, string> = {};
  for (const { link } of links) templates[link.template] = set.templates[link.template]!.text;
  return answer(
    cedar.isAuthorized({
      principal, action: call.action, resource: call.resource, context: call.context as cedar.Context,
      entities: call.entities as cedar.Entities, schema: set.schemaJson, validateRequest: false,
      policies: { templates, templateLinks: links.map(({ link, newId }) => ({ templateId: link.template, newId, values: link.values as Record<string, cedar.EntityUid> })) },
    }),
  );
}

/** Two sets decided as one: any satisfied forbid denies; otherwise any satisfied permit allows. */
function union(a: LayerResult, b: LayerResult | null): LayerResult {
  if (!b) return a;
  const forbids = [...(a.allow ? [] : a.reasons), ...(b.allow ? [] : b.reasons)];
  const errors = [...a.errors, ...b.errors];
  if (forbids.length > 0) return { allow: false, reasons: forbids, errors };
  if (a.allow || b.allow) return { allow: true, reasons: [...(a.allow ? a.reasons : []), ...(b.allow ? b.reasons : [])], errors };
  return { allow: false, reasons: [], errors };
}

/** RFC 9396 entry of Leash's built-in type. */
interface CedarDetail {
  type: 'leash:cedar';
  actions: string[];
  resource?: EntityUid;
  resourceIn?: EntityUid;
}

const isUid = (v: unknown): v is EntityUid =>
  typeof v === 'object' && v !== null && typeof (v as EntityUid).type === 'string' && typeof (v as EntityUid).id === 'string';

function parseDetails(raw: unknown): { ok: true; details: CedarDetail[] } | { ok: false; code: string } {
  if (raw === undefined) return { ok: false, code: 'DETAILS_MISSING' };
  if (!Array.isArray(raw) || raw.length === 0) return { ok: false, code: 'DETAILS_MALFORMED' };
  const details: CedarDetail[] = [];
  for (const d of raw as Record<string, unknown>[]) {
    if (typeof d !== 'object' || d === null) return { ok: false, code: 'DETAILS_MALFORMED' };
    // An entry Leash cannot read cannot be shown to lie within the ceiling: refuse the token.
    if (d.type !== 'leash:cedar') return { ok: false, code: 'DETAILS_UNSUPPORTED_TYPE' };
    const actions = d.actions;
    if (!Array.isArray(actions) || actions.length === 0 || !actions.every((a) => typeof a === 'string')) return { ok: false, code: 'DETAILS_MALFORMED' };
    if ((d.resource === undefined) === (d.resourceIn === undefined)) return { ok: false, code: 'DETAILS_MALFORMED' };
    const target = d.resource ?? d.resourceIn;
    if (!isUid(target)) return { ok: false, code: 'DETAILS_MALFORMED' };
    details.push({ type: 'leash:cedar', actions: actions as string[], ...(d.resource ? { resource: target } : { resourceIn: target }) });
  }
  return { ok: true, details };
}

/** Is `ancestor` the entity itself or reachable through its parents in this request's entities? */
function within(entities: Map<string, CedarEntity>, uid: EntityUid, ancestor: EntityUid): boolean {
  const target = entityKey(ancestor);
  const seen = new Set<string>();
  const pending = [uid];
  while (pending.length > 0) {
    const u = pending.pop()!;
    const k = entityKey(u);
    if (k === target) return true;
    if (seen.has(k)) continue;
    seen.add(k);
    pending.push(...(entities.get(k)?.parents ?? []));
  }
  return false;
}

const same = (a: EntityUid, b: EntityUid) => a.type === b.type && a.id === b.id;

export async function evaluateAgent(request: EvaluationRequest, policies: CompiledPolicySet | null, view: RegistryView, now: Date, tokenCache?: VerifiedTokenCache): Promise<Decision> {
  const base: { errors: string[]; policyVersion: number; position: number; claims?: Record<string, unknown> } = {
    errors: [], policyVersion: policies?.version ?? 0, position: view.position,
  };
  const deny = (layer: Decision['layer'], code: string | undefined, reasons: string[] = [], errors: string[] = []): Decision => ({
    ...base, decision: false, layer, reasons, errors, ...(code ? { code } : {}),
  });
  const agentOf = (id: string): AgentRecord | undefined => view.agents.get(id)?.record;

  // 1. token
  const token = await verifyAgentToken(request.subject.properties?.token, request.subject.id, (id) => view.agents.get(id), now, tokenCache);
  if (!token.ok) return deny('token', token.code);
  const agent = agentOf(token.actingAgent)!;
  base.claims = token.claims;
  // Every agent that delegated down to this one must still be live.
  if (token.chain.some((id) => agentOf(id)?.status !== 'active')) return deny('token', 'DELEGATION_CHAIN_BROKEN');
  const humanId = token.onBehalfOf ?? agent.owner;
  if (!humanId || !view.humans.has(humanId)) return deny('token', 'TOKEN_UNKNOWN_HUMAN');
  if (!policies) return deny('policy-set', 'NO_POLICY_SET');

  const aliases = policies.source.aliases ?? {};
  const A: EntityUid = { type: 'Agent', id: agent.id };
  const H: EntityUid = { type: 'Human', id: humanId };
  const resource: EntityUid = { type: cedarType(request.resource.type, aliases), id: request.resource.id };
  const action: EntityUid = { type: 'Action', id: request.action.name };
  const { entities: extra, ...context } = request.context ?? {};
  const entityMap = entitiesFor(view, [{ uid: A }, { uid: H }, { uid: resource, given: request.resource }], extra);
  const call: Call = { action, resource, context, entities: [...entityMap.values()] };

  // 2. details: the token must say this request is what it is for, and ask for nothing beyond the ceiling.
  const details = parseDetails(token.claims.authorization_details);
  if (!details.ok) return deny('details', details.code);
  const covers = (d: CedarDetail) => d.actions.includes(action.id) && (d.resource ? same(d.resource, resource) : within(entityMap, resource, d.resourceIn!));
  if (!details.details.some(covers)) return deny('details', 'DETAILS_NOT_COVERING');

  // 3. ceiling: @layer("ceiling") policies plus this agent's linked ceiling template.
  const ceilingLink = agent.ceiling;
  if (!ceilingLink) return deny('ceiling', 'NO_CEILING');
  if (policies.templates[ceilingLink.template]?.layer !== CEILING) return deny('ceiling', 'CEILING_TEMPLATE_MISSING');
  const ceiling = (c: Call) =>
    union(preparsed(policies, policies.ceilingPreparsedId, A, c), linked(policies, [{ link: ceilingLink, newId: `ceiling:${agent.id}` }], A, c));
  for (const d of details.details) {
    const target = d.resource ?? d.resourceIn!;
    for (const a of d.actions) {
      const inside = ceiling({ ...call, action: { type: 'Action', id: a }, resource: target });
      if (!inside.allow) return deny('details', 'DETAILS_BEYOND_CEILING', inside.reasons);
    }
  }
  const ceilingResult = ceiling(call);
  if (!ceilingResult.allow) return deny('ceiling', undefined, ceilingResult.reasons, ceilingResult.errors);

  // 4. agent: ordinary policies plus the agent's grants, principal = A.
  const grants = agent.grants
    .filter((g) => policies.templates[g.template] && policies.templates[g.template]!.layer !== CEILING)
    .map((link, i) => ({ link, newId: `grant:${agent.id}:${i}` }));
  const agentResult = union(preparsed(policies, policies.preparsedId, A, call), grants.length ? linked(policies, grants, A, call) : null);
  if (!agentResult.allow) return deny('agent', undefined, agentResult.reasons, agentResult.errors);

  // 5. human: ordinary policies, principal = H — an agent never exceeds its human.
  const humanResult = preparsed(policies, policies.preparsedId, H, call);
  if (!humanResult.allow) return deny('human', undefined, humanResult.reasons, humanResult.errors);

  return {
    ...base,
    decision: true,
    layer: 'all',
    reasons: [...new Set([...ceilingResult.reasons, ...agentResult.reasons, ...humanResult.reasons])],
    errors: [...ceilingResult.errors, ...agentResult.errors, ...humanResult.errors],
  };
}

/** One entry point for the API: agents through the layers, everyone else once. */
export async function decide(request: EvaluationRequest, policies: CompiledPolicySet | null, view: RegistryView, now: Date, tokenCache?: VerifiedTokenCache): Promise<Decision> {
  const type = cedarType(request.subject.type, policies?.source.aliases ?? {});
  return type === 'Agent' ? evaluateAgent(request, policies, view, now, tokenCache) : evaluate(request, policies, view);
}
