import * as cedar from './cedar.ts';
import type { TemplateLink } from '../registry/agent.ts';
import type { CedarEntity, EntityUid } from '../registry/cedar-entities.ts';
import { answer, type IsForbid, type LayerResult } from './layer-result.ts';
import type { CompiledPolicySet } from './policy-set.ts';
import { sliceFor } from './slices.ts';
import { entityKey } from './engine.ts';
import { ancestorsOf } from './details.ts';

// The Cedar calls a layer makes, one way for every layer: a preparsed set, per-agent
// template links evaluated on their own, and two results decided as one.

export interface Call {
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
export function preparsed(
  set: CompiledPolicySet, id: string, principal: EntityUid, call: Call, validate: boolean, links: Link[] = [], isForbid?: IsForbid, schemaName = set.schemaName,
): LayerResult {
  // A layer of the set is asked through its slice for this principal, looked up right before the call.
  const layer = set.layers.get(id);
  const preparsedPolicySetId = layer ? sliceFor(set.preparsedId, id, layer, principal, ancestorsIn(call.entities, principal)) : id;
  if (preparsedPolicySetId === null) return { allow: false, reasons: [], errors: ['the policy set cannot be prepared'], failed: [], errored: true };
  return answer(
    cedar.statefulIsAuthorized({
      principal, action: call.action, resource: call.resource, context: call.context as cedar.Context,
      entities: call.entities as cedar.Entities, preparsedPolicySetId, preparsedSchemaName: schemaName, validateRequest: validate,
    }),
    isForbid ?? forbidsOf(set, links),
  );
}

const byKey = new WeakMap<CedarEntity[], Map<string, CedarEntity>>();

/** An entity's ancestors (entity keys) through the call's entities, as Cedar reads `in`. */
export function ancestorsIn(entities: CedarEntity[], principal: EntityUid): Set<string> {
  let map = byKey.get(entities);
  if (!map) byKey.set(entities, (map = new Map(entities.map((e) => [entityKey(e.uid), e]))));
  return ancestorsOf(map, principal);
}

export type Link = { link: TemplateLink; newId: string };

/** Static forbids by id, and links of forbid templates by their link id. */
function forbidsOf(set: CompiledPolicySet, links: Link[]): IsForbid {
  if (links.length === 0) return (id) => set.forbidIds.has(id);
  const linkForbids = new Set(links.filter(({ link }) => set.forbidIds.has(link.template)).map(({ newId }) => newId));
  return (id) => set.forbidIds.has(id) || linkForbids.has(id);
}

/** Per-agent template links (a ceiling, grants), evaluated on their own. */
export function linked(set: CompiledPolicySet, links: Link[], principal: EntityUid, call: Call, validate: boolean): LayerResult {
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
export function union(a: LayerResult, b: LayerResult | null): LayerResult {
  if (!b) return a;
  const forbids = [...(a.allow ? [] : a.reasons), ...(b.allow ? [] : b.reasons)];
  const errors = [...a.errors, ...b.errors];
  const failed = [...a.failed, ...b.failed];
  const errored = a.errored || b.errored;
  if (forbids.length > 0) return { allow: false, reasons: forbids, errors, failed, errored };
  if (a.allow || b.allow) return { allow: true, reasons: [...(a.allow ? a.reasons : []), ...(b.allow ? b.reasons : [])], errors, failed, errored };
  return { allow: false, reasons: [], errors, failed, errored };
}

