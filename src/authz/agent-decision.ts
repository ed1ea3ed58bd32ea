import * as cedar from './cedar.ts';
import { LeashError } from '../errors.ts';
import { escapedCopy } from '../exact-json.ts';
import { findUnsafeValue } from '../json-limits.ts';
import type { AgentRecord, TemplateLink } from '../registry/agent.ts';
import type { CedarEntity, EntityUid } from '../registry/cedar-entities.ts';
import type { RegistryState } from '../registry/registry-view.ts';
import { verifyAgentToken, type TokenVerifier } from '../tokens/verify.ts';
import { ceilingSetFor, combinedSetFor, withHuman, type CombinedLayer } from './combined.ts';
import { answerKey, callEntities, jsonOf, literalsOf, literalsOfLinks, literalsWith, shareable, slimRegistryEntities } from './call-inputs.ts';
import { DecisionCaches } from './decision-caches.ts';
import { ancestorsOf, detailsOf, within, type CedarDetail } from './details.ts';
import { answer, type IsForbid, type LayerResult } from './layer-result.ts';
import { bindPrincipal, linkFits } from './template-links.ts';
import { actionUid, cedarType, entitiesFor, hierarchySize, entityKey, evaluate, reachableEntities, referencedUids, sameUid as same, type Decision, type EvaluationRequest } from './engine.ts';
import { CEILING, type CompiledPolicySet } from './policy-set.ts';

// SPEC §3: an agent A acting for human H is allowed only if ALL layers allow —
// token, details (RFC 9396), ceiling, agent, human — and any forbid wins. The first layer
// that refuses is the one the decision names.

interface Call {
  action: EntityUid;
  resource: EntityUid;
  context: Record<string, unknown>;
  entities: CedarEntity[];
}

/**
 * A preparsed set (policy ids as written, plus any links in `links`). `validate`: Cedar checks
 * the request against the schema first (principal, resource and context types for the action),
 * done on the calls whose principal is the agent; the human layer's calls ask about the same
 * request with another principal, which the action need not name.
 */
function preparsed(set: CompiledPolicySet, id: string, principal: EntityUid, call: Call, validate: boolean, links: Link[] = [], isForbid?: IsForbid): LayerResult {
  return answer(
    cedar.statefulIsAuthorized({
      principal, action: call.action, resource: call.resource, context: call.context as cedar.Context,
      entities: call.entities as cedar.Entities, preparsedPolicySetId: id, preparsedSchemaName: set.schemaName, validateRequest: validate,
    }),
    isForbid ?? forbidsOf(set, links),
  );
}

type Link = { link: TemplateLink; newId: string };

/** Static forbids by id, and links of forbid templates by their link id. */
function forbidsOf(set: CompiledPolicySet, links: Link[]): IsForbid {
  if (links.length === 0) return (id) => set.forbidIds.has(id);
  const linkForbids = new Set(links.filter(({ link }) => set.forbidIds.has(link.template)).map(({ newId }) => newId));
  return (id) => set.forbidIds.has(id) || linkForbids.has(id);
}

/** Per-agent template links (a ceiling, grants), evaluated on their own. */
function linked(set: CompiledPolicySet, links: Link[], principal: EntityUid, call: Call, validate: boolean): LayerResult {
  const templates: Record<string, string> = {};
  for (const { link } of links) templates[link.template] = set.templates[link.template]!.text;
  return answer(
    cedar.isAuthorized({
      principal, action: call.action, resource: call.resource, context: call.context as cedar.Context,
      entities: call.entities as cedar.Entities, schema: set.schemaJson, validateRequest: validate,
      policies: { templates, templateLinks: links.map(({ link, newId }) => ({ templateId: link.template, newId, values: link.values as Record<string, cedar.EntityUid> })) },
    }),
    forbidsOf(set, links),
  );
}

/** Two sets decided as one: any satisfied forbid denies; otherwise any satisfied permit allows. */
function union(a: LayerResult, b: LayerResult | null): LayerResult {
  if (!b) return a;
  const forbids = [...(a.allow ? [] : a.reasons), ...(b.allow ? [] : b.reasons)];
  const errors = [...a.errors, ...b.errors];
  const failed = [...a.failed, ...b.failed];
  const errored = a.errored || b.errored;
  if (forbids.length > 0) return { allow: false, reasons: forbids, errors, failed, errored };
  if (a.allow || b.allow) return { allow: true, reasons: [...(a.allow ? a.reasons : []), ...(b.allow ? b.reasons : [])], errors, failed, errored };
  return { allow: false, reasons: [], errors, failed, errored };
}

/**
 * The beyond-ceiling check makes one Cedar call per (target, action) pair of the token, each
 * parsing the request's entities: pairs × (entities + ancestor links) is bounded by this.
 * Measured: a 62-level chain of folders with 64 pairs held the event loop for 0.5 s.
 */
const MAX_CEILING_CHECK_WORK = 10_000;

const principalTypes = new WeakMap<CompiledPolicySet, Map<string, Set<string>>>();

/** The principal types the schema lets this action have (empty: an action it does not declare). */
function principalTypesOf(set: CompiledPolicySet, action: EntityUid): ReadonlySet<string> {
  let byAction = principalTypes.get(set);
  if (!byAction) principalTypes.set(set, (byAction = new Map()));
  const k = `${action.type}\n${action.id}`;
  let types = byAction.get(k);
  if (!types) {
    const namespace = action.type === 'Action' ? '' : action.type.slice(0, -'::Action'.length);
    const declared = set.schemaJson[namespace]?.actions?.[action.id]?.appliesTo?.principalTypes ?? [];
    // A type may be written qualified (`NS::Human`) or not; the built-in Human is the root's.
    types = new Set(declared.map((t) => (namespace === '' ? t.replace(/^::/, '') : t)));
    byAction.set(k, types);
  }
  return types;
}

/** Claims nest no deeper than this (`act` chains are bounded far below it). */
const MAX_CLAIMS_DEPTH = 32;

const keepable = new WeakSet<object>();

/** Can the decision log keep these claims as they are? (Checked once per verified token: the claims object is cached with it.) */
function claimsKeepable(claims: object): boolean {
  if (keepable.has(claims)) return true;
  if (findUnsafeValue(claims, MAX_CLAIMS_DEPTH)) return false;
  keepable.add(claims);
  return true;
}

export interface AgentDecisionOptions {
  caches?: DecisionCaches;
  /** false: one Cedar call per layer (the reference path the combined call is tested against). */
  combined?: boolean;
  /** How the token is checked: the JWT (default), or what the decision log recorded of it (replay). */
  tokens?: TokenVerifier;
}


export async function evaluateAgent(
  request: EvaluationRequest, policies: CompiledPolicySet | null, view: RegistryState, now: Date, options: AgentDecisionOptions = {},
): Promise<Decision> {
  const token: { standing?: Standing } = {};
  const d = await decideLayers(request, policies, view, now, options, token);
  // SPEC §6 modes. Quarantined: decided as usual for the record, denied to the caller.
  if (token.standing === 'quarantined') {
    const { claims, policyVersion, position } = d;
    return {
      decision: false, layer: 'token', code: 'AGENT_QUARANTINED', reasons: [], errors: [], policyVersion, position, ...(claims ? { claims } : {}),
      shadow: { decision: d.decision, layer: d.layer, reasons: d.reasons, ...(d.code ? { code: d.code } : {}) },
    };
  }
  // Revoked gracefully: work begun before the revocation finishes, and says so.
  if (token.standing === 'grace' && d.decision) return { ...d, code: 'REVOKED_GRACE_PERIOD' };
  return d;
}

type Standing = Extract<Awaited<ReturnType<TokenVerifier>>, { ok: true }>['standing'];

async function decideLayers(
  request: EvaluationRequest, policies: CompiledPolicySet | null, view: RegistryState, now: Date, options: AgentDecisionOptions, out: { standing?: Standing },
): Promise<Decision> {
  const { caches } = options;
  const base: { errors: string[]; policyVersion: number; position: number; claims?: Record<string, unknown> } = {
    errors: [], policyVersion: policies?.version ?? 0, position: view.position,
  };
  const deny = (layer: Decision['layer'], code: string | undefined, reasons: string[] = [], errors: string[] = []): Decision => ({
    ...base, decision: false, layer, reasons, errors, ...(code ? { code } : {}),
  });
  /** A layer that refused: a forbid that could not be evaluated says so in the code. */
  const refused = (layer: Decision['layer'], r: LayerResult, code?: string) => deny(layer, r.errored ? 'POLICY_EVALUATION_ERROR' : code, r.reasons, r.errors);
  const recordOf = (id: string): AgentRecord | undefined => view.agents.get(id)?.record;
  // Every satisfied permit of every layer, each id once, sorted.
  const allowed = (layers: { reasons: string[]; errors: string[] }[]): Decision => ({
    ...base, decision: true, layer: 'all', reasons: [...new Set(layers.flatMap((l) => l.reasons))].sort(), errors: layers.flatMap((l) => l.errors),
  });

  // 1. token
  const verify = options.tokens ?? verifyAgentToken;
  const agentOf = (id: string) => view.agents.get(id);
  let token = await verify(request.subject.properties?.token, request.subject.id, agentOf, now, caches?.tokens);
  // The agent may have changed while the signature was checked: decide on one state throughout.
  while (token.agentVersion !== undefined && token.agentVersion !== (view.agents.get(request.subject.id)?.version ?? 0)) {
    token = await verify(request.subject.properties?.token, request.subject.id, agentOf, now, caches?.tokens);
  }
  // Everything from here on is synchronous: the registry as of this position decides it all.
  base.position = view.position;
  // Claims that cannot be taken as they are (NUL, unpaired surrogates, rounded integers, deep
  // nesting) refuse the token; the record keeps them escaped (exact-json.ts), apart from the
  // claims of accepted tokens, when they can be kept at all.
  if (token.claims && !claimsKeepable(token.claims)) {
    const kept = escapedCopy(token.claims, MAX_CLAIMS_DEPTH);
    return { ...deny('token', 'TOKEN_MALFORMED'), ...(kept ? { refusedClaims: kept as Record<string, unknown> } : {}) };
  }
  if (!token.ok) {
    if (token.claims) base.claims = token.claims;
    return deny('token', token.code);
  }
  out.standing = token.standing;
  const agentVersion = token.agentVersion;
  const agent = recordOf(token.actingAgent)!;
  base.claims = token.claims;
  // Every agent that delegated down to this one must still be live.
  if (token.chain.some((id) => recordOf(id)?.status !== 'active')) return deny('token', 'DELEGATION_CHAIN_BROKEN');
  // A token may say it acts for a human (`sub` beside `act`), but the agent signs its own
  // tokens: it may not pick whom it is checked against. Until humans grant delegations, the
  // only human an agent acts for is its owner.
  if (token.onBehalfOf !== null && token.onBehalfOf !== agent.owner) return deny('token', 'DELEGATION_NOT_GRANTED');
  const humanId = agent.owner;
  if (!humanId || !view.humans.has(humanId)) return deny('token', 'TOKEN_UNKNOWN_HUMAN');
  if (!policies) return deny('policy-set', 'NO_POLICY_SET');

  const aliases = policies.source.aliases ?? {};
  const A: EntityUid = { type: 'Agent', id: agent.id };
  const H: EntityUid = { type: 'Human', id: humanId };
  const resource: EntityUid = { type: cedarType(request.resource.type, aliases), id: request.resource.id };
  const action: EntityUid = actionUid(request.action.name);
  const { entities: extra, ...context } = request.context ?? {};
  const entityMap = entitiesFor(view, [{ uid: A }, { uid: H }, { uid: resource, given: request.resource }], extra);
  const call: Call = { action, resource, context, entities: [...entityMap.values()] };

  // 2. details: the token must say this request is what it is for, and ask for nothing beyond the ceiling.
  const details = detailsOf(token.claims.authorization_details);
  if (!details.ok) return deny('details', details.code, [], [details.detail]);
  const covers = (d: CedarDetail) => d.actionUids.some((a) => same(a, action)) && (d.resource ? same(d.resource, resource) : within(entityMap, resource, d.resourceIn!));
  if (!details.details.some(covers)) return deny('details', 'DETAILS_NOT_COVERING');

  // 3. ceiling: @layer("ceiling") policies plus this agent's linked ceiling template.
  if (!agent.ceiling) return deny('ceiling', 'NO_CEILING');
  if (policies.templates[agent.ceiling.template]?.layer !== CEILING) return deny('ceiling', 'CEILING_TEMPLATE_MISSING');
  // Checked when it was linked; a later policy set may have changed the template's slots.
  if (!linkFits(policies, agent.ceiling, 'ceiling')) return deny('ceiling', 'CEILING_LINK_INVALID');
  const ceilingLink = bindPrincipal(policies, agent.ceiling, A);
  const ceilingId = `ceiling:${agent.id}`;
  const agentAncestors = ancestorsOf(entityMap, A);
  // The agent's ceiling policies and link as one preparsed set; the reference path (and a set
  // that cannot be prepared) takes the union of the shared ceiling policies and a stateless link.
  const ceilingSet = options.combined === false ? null : ceilingSetFor(policies, { uid: A, version: agentVersion, ancestors: agentAncestors }, { ...ceilingLink, newId: ceilingId });
  const ceilingLinks = [{ link: ceilingLink, newId: ceilingId }];
  const ceiling = (c: Call, validate: boolean) =>
    ceilingSet ? preparsed(policies, ceilingSet, A, c, validate, ceilingLinks)
      : union(preparsed(policies, policies.ceilingPreparsedId, A, c, validate), linked(policies, ceilingLinks, A, c, validate));
  // What the check can reach: the agent, the details' targets, and what they lead to. (The
  // requested resource is not among them, so the verdict holds for every resource the token
  // is used on.)
  // One Cedar call per pair, each reading the entities: bounded together, not only each.
  if (details.pairs.length * hierarchySize(entityMap) > MAX_CEILING_CHECK_WORK) {
    return deny('details', 'DETAILS_MALFORMED', [], [`the token names ${details.pairs.length} (target, action) pairs, too many to check against entities this large`]);
  }
  const targets = details.details.map((d) => d.resource ?? d.resourceIn!);
  // (The ceiling link's values are literals of the agent's own ceiling.)
  const checkEntities = reachableEntities(entityMap, [A, ...targets, ...referencedUids(ceilingLink.values)], context, literalsOf(policies));
  // Each distinct (target, action) pair once (the parser bounds how many), remembered per pair
  // under the exact inputs the check reads (long ones by their sha-256: see decision-caches.ts).
  const checkKey = caches && `${policies.preparsedId}\n${JSON.stringify(agent.id)}\n${agentVersion}\n${JSON.stringify(context)}\n${checkEntities.map(jsonOf).join('\n')}`;
  const verdicts = checkKey ? caches.ceilingVerdicts(agent.id, checkKey) : new Map<string, LayerResult>();
  for (const { target, action: a } of details.pairs) {
    const pair = `${entityKey(target)}\n${a}`;
    let inside = verdicts.get(pair);
    if (!inside) {
      try {
        // Not validated as a request: the context is the request's, made for its own action.
        inside = ceiling({ ...call, action: actionUid(a), resource: target, entities: checkEntities }, false);
      } catch (err) {
        if (!(err instanceof LeashError && err.code === 'VALIDATION_FAILED')) throw err;
        // Cedar refused the question. If the request itself does not fit the schema, that is the
        // caller's 400 (this call throws it); otherwise the token names an action or target the
        // schema does not know: a malformed token, denied and recorded.
        ceiling(call, true);
        return deny('details', 'DETAILS_MALFORMED', [], [err.message]);
      }
      verdicts.set(pair, inside);
    }
    if (!inside.allow) return refused('details', inside, 'DETAILS_BEYOND_CEILING');
  }

  // The human layer asks whether H may do what A asks. When the schema says no human can be
  // the principal of this action, the policies were validated for other principals only, and
  // a forbid that fails on H (an attribute only agents have) is an artefact of asking, not a
  // forbid that holds: the agent layer has decided it with a principal it was written for.
  const humanMayAct = principalTypesOf(policies, action).has('Human');

  const grants = agent.grants
    .filter((g) => linkFits(policies, g, 'grant'))
    .map((link, i) => ({ link: bindPrincipal(policies, link, A), newId: `grant:${agent.id}:${i}` }));

  // 3–5 in one Cedar call when the outcome is plain from its diagnostics (see combined.ts).
  // The human is the owner (an autonomous agent) or a delegating human named by the token.
  const via = humanId === agent.owner && policies.combinedOwnerSchemaName ? 'owner' : 'context';
  // Only what the call can reach (the agent, the human, the resource, the context and what the
  // policies and the agent's links name, through parents and attributes): less for Cedar to
  // read, and a memory key that holds nothing the answer cannot depend on.
  const linkLiterals = literalsOfLinks(agent);
  const named = (k: string) => literalsOf(policies).has(k) || linkLiterals.has(k);
  const slimEntities = options.combined === false ? null
    : slimRegistryEntities(view, policies, callEntities(view, call.entities, reachableEntities(entityMap, [A, H, resource], context, literalsWith(policies, linkLiterals))));
  const combined = !slimEntities ? null
    : via === 'owner' ? { context: context as cedar.Context, schemaName: policies.combinedOwnerSchemaName! }
    : policies.combinedSchemaName ? { context: withHuman(context, H), schemaName: policies.combinedSchemaName } : null;
  if (combined?.context && slimEntities) {
    const set = combinedSetFor(policies, {
      agent: { uid: A, version: agentVersion, ancestors: agentAncestors },
      human: { uid: H, ancestors: ancestorsOf(entityMap, H), via },
      ceiling: { ...ceilingLink, newId: ceilingId },
      grants: grants.map(({ link, newId }) => ({ ...link, newId })),
    });
    if (set) {
      const combinedContext = combined.context;
      const isForbid = (id: string) => {
        const origin = set.origin.get(id);
        return origin?.forbid === true && (origin.layer !== 'human' || humanMayAct);
      };
      const call = () =>
        answer(
          cedar.statefulIsAuthorized({
            principal: A, action, resource, context: combinedContext, entities: slimEntities as cedar.Entities,
            preparsedPolicySetId: set.preparsedId, preparsedSchemaName: combined.schemaName, validateRequest: true,
          }),
          isForbid,
          (id) => set.origin.get(id)?.id ?? id,
        );
      // Cedar is a function of its inputs: the same set (this agent, version and human, this
      // policy version), request and entities give the same answer. The key is those inputs.
      let result: LayerResult;
      if (caches) {
        const memo = answerKey(`${set.generation}\n${JSON.stringify(combined.schemaName)}\n${JSON.stringify([action.type, action.id])}`, resource, JSON.stringify(combinedContext), slimEntities, named);
        result = caches.decided(agent.id, memo.key, call, memo.shared ? shareable : undefined);
      } else {
        result = call();
      }
      const inLayer = (layer: CombinedLayer) => (id: string) => set.origin.get(id)?.layer === layer;
      const original = (id: string) => set.origin.get(id)?.id ?? id;
      const errorsOf = (layer: CombinedLayer) => result.failed.filter(({ policyId }) => inLayer(layer)(policyId)).map(({ message }) => message);
      if (result.allow) {
        // Allowed only if each layer has a satisfied permit of its own (no forbid was satisfied).
        const layers = (['ceiling', 'agent', 'human'] as const).map((layer) => ({ layer, reasons: result.reasons.filter(inLayer(layer)).map(original), errors: errorsOf(layer) }));
        const refusing = layers.find((l) => l.reasons.length === 0);
        if (refusing) return deny(refusing.layer, undefined, [], refusing.errors);
        return allowed(layers);
      }
      // No permit satisfied anywhere and no forbid: the ceiling is the first layer to refuse.
      if (result.reasons.length === 0) return deny('ceiling', undefined, [], errorsOf('ceiling'));
      // A forbid was satisfied (or could not be evaluated): which layer refused first needs the
      // layers one by one (below).
    }
  }

  const ceilingResult = ceiling(call, true);
  if (!ceilingResult.allow) return refused('ceiling', ceilingResult);

  // 4. agent: ordinary policies plus the agent's grants, principal = A.
  const agentResult = union(preparsed(policies, policies.preparsedId, A, call, true), grants.length ? linked(policies, grants, A, call, true) : null);
  if (!agentResult.allow) return refused('agent', agentResult);

  // 5. human: ordinary policies, principal = H — an agent never exceeds its human.
  const humanResult = preparsed(policies, policies.preparsedId, H, call, false, [], humanMayAct ? undefined : () => false);
  if (!humanResult.allow) return refused('human', humanResult);

  return allowed([ceilingResult, agentResult, humanResult]);
}

/** One entry point for the API: agents through the layers, everyone else once. */
export async function decide(request: EvaluationRequest, policies: CompiledPolicySet | null, view: RegistryState, now: Date, options: AgentDecisionOptions = {}): Promise<Decision> {
  const type = cedarType(request.subject.type, policies?.source.aliases ?? {});
  return type === 'Agent' ? evaluateAgent(request, policies, view, now, options) : evaluate(request, policies, view);
}
