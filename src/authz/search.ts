import { hash } from 'node:crypto';
import { canonicalJson } from '../canonical-json.ts';
import { LeashError } from '../errors.ts';
import type { RegistryView } from '../registry/registry-view.ts';
import type { TokenVerifier } from '../tokens/verify.ts';
import { Turns } from '../turns.ts';
import { decide } from './agent-decision.ts';
import { actionUid, cedarType, contextEntitiesCost, type AuthzenEntity, type EvaluationRequest } from './engine.ts';
import type { CompiledPolicySet } from './policy-set.ts';

// Access review (AuthZEN 1.0 search): which registered agents or humans may do this action on
// this resource, what may this agent do on it, which of the named resources may it act on. Each
// candidate is decided through the same layers as a decision, for an agent as if it held a token
// asking for exactly this request and acting for its owner: its ceiling, its own policies and
// grants and its owner's policies decide, and a request an `@approval` permit holds back is not
// in the results (it is not allowed without the approval). Nothing is recorded: a search is a
// question about the policies, not a decision anyone acts on.

export type SearchKind = 'subject' | 'action' | 'resource';

export interface SearchRequest {
  subject: Partial<AuthzenEntity> & { type: string };
  action?: { name?: string };
  resource: Partial<AuthzenEntity> & { type: string };
  context?: Record<string, unknown>;
  page?: { token?: string; limit?: number };
}

export interface SearchResult {
  page: { next_token: string; count: number };
  results: object[];
}

/** Results per page unless `page.limit` says fewer; and at most this many. */
export const DEFAULT_LIMIT = 50;
export const MAX_LIMIT = 1000;
/** Candidates one page looks at, at most (a page may come back short, with a token to go on). */
export const MAX_EXAMINED = 5000;
/**
 * What one page may cost: candidates × (1 + what the request's entities cost each Cedar call),
 * the bound a batch of evaluations has (MAX_BATCH_WORK): many entities mean fewer candidates a page.
 */
export const MAX_PAGE_WORK = 20_000;

/** For a candidate agent: a token for exactly this request, its claims as verified (nothing is signed). */
const asIfTokenFor = (action: string, resource: { type: string; id: string }): TokenVerifier => async (_token, subjectId, agentOf) => {
  const found = agentOf(subjectId);
  if (!found) return { ok: false, code: 'AGENT_UNKNOWN', detail: 'no such agent' };
  if (found.record.status !== 'active') return { ok: false, code: 'AGENT_NOT_ACTIVE', detail: `the agent is ${found.record.status}`, agentVersion: found.version };
  const claims = { sub: subjectId, authorization_details: [{ type: 'leash:cedar', actions: [action], resource }] };
  return { ok: true, claims, actingAgent: subjectId, onBehalfOf: null, chain: [], standing: 'active', agentVersion: found.version, leashIssued: false };
};

interface Candidate {
  key: string;
  result: object;
  request: EvaluationRequest;
}

export async function search(kind: SearchKind, body: SearchRequest, policies: CompiledPolicySet | null, view: RegistryView, now: Date): Promise<SearchResult> {
  if (!policies) throw new LeashError('NOT_READY', 'no policy set is loaded');
  const limit = body.page?.limit ?? DEFAULT_LIMIT;
  const fingerprint = hash('sha256', canonicalJson({ kind, subject: kind === 'subject' ? { type: body.subject.type } : body.subject, action: kind === 'action' ? null : body.action, resource: kind === 'resource' ? { type: body.resource.type } : body.resource, context: body.context ?? null, limit }), 'base64url').slice(0, 22);
  const after = body.page?.token ? readToken(body.page.token, fingerprint) : null;
  const aliases = policies.source.aliases ?? {};
  const results: object[] = [];
  // Each candidate's calls read the request's entities: the page's work is bounded by their cost.
  const perCandidate = 1 + contextEntitiesCost(body.context?.entities);
  const maxExamined = Math.max(1, Math.min(MAX_EXAMINED, Math.floor(MAX_PAGE_WORK / perCandidate)));
  let examined = 0;
  let last: string | null = null;
  const turns = new Turns();
  for (const c of candidates(kind, body, policies, view)) {
    if (after !== null && c.key <= after) continue;
    if (results.length >= limit || examined >= maxExamined) return { page: { next_token: token(last ?? after ?? '', fingerprint), count: results.length }, results };
    // Other callers (and revocations) get a turn now and then.
    await turns.take();
    examined++;
    last = c.key;
    const subjectType = cedarType(c.request.subject.type, aliases);
    const tokens = subjectType === 'Agent' ? asIfTokenFor(c.request.action.name, { type: cedarType(c.request.resource.type, aliases), id: c.request.resource.id }) : undefined;
    try {
      const d = await decide(c.request, policies, view, now, tokens ? { tokens, combined: false } : {});
      if (d.decision) results.push(c.result);
    } catch (err) {
      // A candidate the schema refuses (an action that does not apply to this resource type) is not a result.
      if (!(err instanceof LeashError && err.code === 'VALIDATION_FAILED')) throw err;
    }
  }
  return { page: { next_token: '', count: results.length }, results };
}

/** Every candidate, in a stable order of its key (the pagination token names the last one seen). */
function* candidates(kind: SearchKind, body: SearchRequest, policies: CompiledPolicySet, view: RegistryView): Generator<Candidate> {
  const base = { action: { name: body.action?.name ?? '' }, resource: body.resource as AuthzenEntity, ...(body.context ? { context: body.context } : {}) };
  if (kind === 'subject') {
    const type = cedarType(body.subject.type, policies.source.aliases ?? {});
    if (type !== 'Agent' && type !== 'Human') throw new LeashError('VALIDATION_FAILED', '/subject/type must be agent or human: the registry holds no other subjects');
    const ids = type === 'Agent' ? agentIds(view) : humanIds(view);
    for (const id of ids) yield { key: id, result: { type: body.subject.type, id }, request: { ...base, subject: { type: body.subject.type, id } } };
    return;
  }
  const subject = { type: body.subject.type, id: body.subject.id ?? '' } as AuthzenEntity;
  if (kind === 'action') {
    const resourceType = cedarType(body.resource.type, policies.source.aliases ?? {});
    const principalType = cedarType(body.subject.type, policies.source.aliases ?? {});
    for (const name of actionsFor(policies, principalType, resourceType)) {
      yield { key: name, result: { name }, request: { ...base, subject, action: { name } } };
    }
    return;
  }
  // Resources: those the request's entities name, of the type asked for.
  const entities = Array.isArray(body.context?.entities) ? (body.context!.entities as { uid?: { type?: unknown; id?: unknown } }[]) : [];
  const wanted = cedarType(body.resource.type, policies.source.aliases ?? {});
  const ids = [...new Set(entities.filter((e) => e?.uid?.type === wanted && typeof e.uid.id === 'string').map((e) => e.uid!.id as string))].sort();
  for (const id of ids) yield { key: id, result: { type: body.resource.type, id }, request: { ...base, subject, resource: { type: body.resource.type, id } } };
}

/** Only an active agent can be allowed anything. */
const agentIds = (view: RegistryView): string[] => [...view.agents.values()].filter((a) => a.record.status === 'active').map((a) => a.record.id).sort();
const humanIds = (view: RegistryView): string[] => [...view.humans.keys()].sort();

/** The actions the schema lets this principal type do on this resource type (built-in admin actions aside), as AuthZEN names them. */
function actionsFor(policies: CompiledPolicySet, principal: string, resource: string): string[] {
  const out: string[] = [];
  for (const [namespace, ns] of Object.entries(policies.schemaJson)) {
    for (const [id, action] of Object.entries(ns.actions ?? {})) {
      const applies = (action as { appliesTo?: { principalTypes?: string[]; resourceTypes?: string[] } }).appliesTo;
      const qualify = (t: string) => (namespace === '' || t.includes('::') ? t.replace(/^::/, '') : `${namespace}::${t}`);
      if (!applies?.principalTypes?.map(qualify).includes(principal) || !applies.resourceTypes?.map(qualify).includes(resource)) continue;
      if (namespace === '' && id.startsWith('admin:')) continue;
      const uid = namespace === '' ? { type: 'Action', id } : { type: `${namespace}::Action`, id };
      out.push(uid.type === 'Action' ? id : `${uid.type}::${JSON.stringify(id)}`);
    }
  }
  // Each name must read back as the action it stands for.
  return out.filter((name) => actionUid(name) !== undefined).sort();
}

const token = (after: string, fingerprint: string): string => Buffer.from(JSON.stringify([fingerprint, after])).toString('base64url');

function readToken(t: string, fingerprint: string): string {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(t, 'base64url').toString('utf8'));
  } catch {
    parsed = null;
  }
  if (!Array.isArray(parsed) || parsed.length !== 2 || typeof parsed[1] !== 'string') throw new LeashError('VALIDATION_FAILED', '/page/token is not a token this search gave');
  if (parsed[0] !== fingerprint) throw new LeashError('VALIDATION_FAILED', '/page/token belongs to another search: the request must stay the same from page to page');
  return parsed[1];
}
