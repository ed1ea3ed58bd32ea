import * as cedar from './cedar.ts';
import { escapedCopy } from '../exact-json.ts';
import { findUnsafeValue } from '../json-limits.ts';
import type { AgentRecord } from '../registry/agent.ts';
import type { EntityUid } from '../registry/cedar-entities.ts';
import type { RegistryState } from '../registry/registry-view.ts';
import { verifyAgentToken, type TokenVerifier } from '../tokens/verify.ts';
import { combinedSetFor, withHuman, type CombinedInput, type CombinedLayer, type CombinedSet } from './combined.ts';
import { sharedCombinedSetFor, type CallSet } from './shared-sets.ts';
import { answerKey, callEntities, literalsOf, literalsOfLinks, literalsWith, shareable, slimRegistryEntities } from './call-inputs.ts';
import { DecisionCaches } from './decision-caches.ts';
import { ancestorsOf, detailsOf, within, type CedarDetail } from './details.ts';
import { linked, preparsed, union, type Call } from './layer-calls.ts';
import { answer, type LayerResult } from './layer-result.ts';
import { bindPrincipal, linkFits } from './template-links.ts';
import { actionUid, cedarType, entitiesFor, evaluate, reachableEntities, sameUid as same, type Decision, type EvaluationRequest } from './engine.ts';
import type { CompiledPolicySet } from './policy-set.ts';
import { ceilingOf, withinCeiling } from './within-ceiling.ts';
import { delegationRefusal } from './token-layer.ts';
import { APPROVAL_ID, gateOf, settle, type GateLayer } from '../approvals/gate.ts';

// SPEC §3: an agent A acting for human H is allowed only if ALL layers allow —
// token, details (RFC 9396), ceiling, agent, human — and any forbid wins. The first layer
// that refuses is the one the decision names.

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
  // Every satisfied permit of every layer, each id once, sorted; unless a layer allowed only
  // through `@approval` permits: then the approval gate decides (approvals/gate.ts).
  let gated = (d: Decision, _layers: GateLayer[]): Decision => d;
  const allowed = (layers: (GateLayer & { errors: string[] })[]): Decision => gated({
    ...base, decision: true, layer: 'all', reasons: [...new Set(layers.flatMap((l) => l.reasons))].sort(), errors: layers.flatMap((l) => l.errors),
  }, layers);

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
  // The chain above it, whom it acts for, and that human (shared with introspection).
  const refusal = delegationRefusal(token, view, now);
  if (refusal) return deny('token', refusal);
  // The human the agent acts for: its owner, or the one whose grant the token layer found.
  const humanId = token.onBehalfOf ?? agent.owner!;
  if (!policies) return deny('policy-set', 'NO_POLICY_SET');

  const aliases = policies.source.aliases ?? {};
  const A: EntityUid = { type: 'Agent', id: agent.id };
  const H: EntityUid = { type: 'Human', id: humanId };
  const resource: EntityUid = { type: cedarType(request.resource.type, aliases), id: request.resource.id };
  const action: EntityUid = actionUid(request.action.name);
  // The approval a PEP names is for the gate, not for Cedar.
  const { entities: extra, [APPROVAL_ID]: _approvalId, ...context } = request.context ?? {};
  const entityMap = entitiesFor(view, [{ uid: A }, { uid: H }, { uid: resource, given: request.resource }], extra);
  const call: Call = { action, resource, context, entities: [...entityMap.values()] };
  gated = (d, layers) => {
    const gate = gateOf(policies.approvals, layers);
    if (!gate) return d;
    const settled = settle(view, { agent: agent.id, human: humanId, owner: agent.owner, action, resource, resourceProperties: request.resource.properties, context: request.context }, gate, now);
    if (settled.allow) return { ...d, code: 'APPROVED', approval: settled.ask };
    return { ...deny(gate.layer, settled.code, gate.policies), ...(settled.ask ? { approval: settled.ask } : {}) };
  };

  // 2. details: the token must say this request is what it is for, and ask for nothing beyond the ceiling.
  const details = detailsOf(token.claims.authorization_details);
  if (!details.ok) return deny('details', details.code, [], [details.detail]);
  const covers = (d: CedarDetail) => d.actionUids.some((a) => same(a, action)) && (d.resource ? same(d.resource, resource) : within(entityMap, resource, d.resourceIn!));
  if (!details.details.some(covers)) return deny('details', 'DETAILS_NOT_COVERING');

  // 3. ceiling: @layer("ceiling") policies plus this agent's linked ceiling template.
  const found = ceilingOf(policies, agent, agentVersion, entityMap, options.combined !== false);
  if (!found.ok) return deny('ceiling', found.code);
  const { ceiling } = found;
  const ceilingLink = ceiling.link;
  const ceilingId = ceiling.id;
  const agentAncestors = ceiling.ancestors;
  const inside = withinCeiling({ policies, agent, agentVersion, ceiling, details, entities: entityMap, view, context, caches, request: call, token: token.claims });
  if (!inside.ok) return deny('details', inside.code, inside.reasons, inside.errors);

  // The human layer asks whether H may do what A asks. When the schema says no human can be
  // the principal of this action, the policies were validated for other principals only, and
  // a forbid that fails on H (an attribute only agents have) is an artefact of asking, not a
  // forbid that holds: the agent layer has decided it with a principal it was written for.
  const humanMayAct = principalTypesOf(policies, action).has('Human');

  const grants = grantsInUse(policies, agent).map((link, i) => ({ link: bindPrincipal(policies, link, A), newId: grantPolicyId(agent.id, i) }));

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
    const input: CombinedInput = {
      agent: { uid: A, version: agentVersion, ancestors: agentAncestors },
      human: { uid: H, ancestors: ancestorsOf(entityMap, H), via },
      ceiling: { ...ceilingLink, newId: ceilingId },
      grants: grants.map(({ link, newId }) => ({ ...link, newId })),
    };
    // Shared by the agents alike in what can match them (shared-sets.ts); else the agent's own.
    const set = sharedCombinedSetFor(policies, input, resource, ancestorsOf(entityMap, resource)) ?? ownSet(combinedSetFor(policies, input));
    if (set) {
      const combinedContext = combined.context;
      const isForbid = (id: string) => {
        const origin = set.origin(id);
        return origin?.forbid === true && (origin.layer !== 'human' || humanMayAct);
      };
      const call = () =>
        answer(
          set.rename(cedar.statefulIsAuthorized({
            principal: A, action, resource, context: combinedContext, entities: slimEntities as cedar.Entities,
            preparsedPolicySetId: set.preparsedId, preparsedSchemaName: combined.schemaName, validateRequest: true,
          })),
          isForbid,
          (id) => set.origin(id)?.id ?? id,
        );
      // Cedar is a function of its inputs: the same set (this policy version, and what can match
      // this agent and human), request and entities give the same answer; renamed for the
      // agent's links (its memo key). The key is those inputs.
      let result: LayerResult;
      if (caches) {
        const memo = answerKey(`${set.memoKey}\n${JSON.stringify(combined.schemaName)}\n${JSON.stringify([action.type, action.id])}`, resource, JSON.stringify(combinedContext), slimEntities, named);
        result = caches.decided(agent.id, memo.key, call, memo.shared ? shareable : undefined);
      } else {
        result = call();
      }
      const inLayer = (layer: CombinedLayer) => (id: string) => set.origin(id)?.layer === layer;
      const original = (id: string) => set.origin(id)?.id ?? id;
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

  const ceilingResult = ceiling.ask(call, true);
  if (!ceilingResult.allow) return refused('ceiling', ceilingResult);

  // 4. agent: ordinary policies plus the agent's grants, principal = A.
  const agentResult = union(preparsed(policies, policies.preparsedId, A, call, true), grants.length ? linked(policies, grants, A, call, true) : null);
  if (!agentResult.allow) return refused('agent', agentResult);

  // 5. human: ordinary policies, principal = H — an agent never exceeds its human.
  const humanResult = preparsed(policies, policies.preparsedId, H, call, false, [], humanMayAct ? undefined : () => false);
  if (!humanResult.allow) return refused('human', humanResult);

  return allowed([{ layer: 'ceiling', ...ceilingResult }, { layer: 'agent', ...agentResult }, { layer: 'human', ...humanResult }]);
}

/** An agent's own combined set, as a call uses it: its ids as they are. */
const ownSet = (set: CombinedSet | null): CallSet | null =>
  set && { preparsedId: set.preparsedId, origin: (id) => set.origin.get(id), memoKey: `${set.generation}`, rename: (raw) => raw };

/** The agent's grants a decision under this policy set uses: those that still fit it, in the order given at authorize. */
export const grantsInUse = (policies: CompiledPolicySet, agent: AgentRecord) => agent.grants.filter((g) => linkFits(policies, g, 'grant'));

/** The id a decision's reasons name the agent's `i`-th grant in use by (`grantsInUse`). */
export const grantPolicyId = (agentId: string, i: number): string => `grant:${agentId}:${i}`;

/** One entry point for the API: agents through the layers, everyone else once. */
export async function decide(request: EvaluationRequest, policies: CompiledPolicySet | null, view: RegistryState, now: Date, options: AgentDecisionOptions = {}): Promise<Decision> {
  const type = cedarType(request.subject.type, policies?.source.aliases ?? {});
  return type === 'Agent' ? evaluateAgent(request, policies, view, now, options) : evaluate(request, policies, view);
}
