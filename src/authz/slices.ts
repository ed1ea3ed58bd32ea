import * as cedar from './cedar.ts';
import type { EntityUid } from '../registry/cedar-entities.ts';
import { preparedForm, type PolicyEntry } from './combined.ts';
import { entityKey } from './engine.ts';
import { preparedFor } from './preparsed-slots.ts';

// A policy set's layers are not prepared whole: preparing 3,000 policies holds the thread
// for a third of a second, and a version superseded would keep them in cedar-wasm's memory.
// Each Cedar call instead gets the slice of the layer whose principal scope can match its
// principal: the policies open to every principal, those for the principal itself, and those
// for its ancestors and type. A policy whose scope cannot match is not satisfied and cannot
// fail, so a slice answers exactly as the whole layer would. Slices are prepared on first use
// and shared by every principal that reaches the same scopes; they live in slots
// (preparsed-slots.ts), given back when their version is superseded.

/** A layer's policies by principal scope (`all`, `=uid`, `<uid`, `:Type`, `:Type<uid`). */
export type ScopeIndex = Map<string, PolicyEntry[]>;

const uidKey = (e: cedar.EntityUidJson) => entityKey(('__entity' in e ? e.__entity : e) as EntityUid);

function bucketOf(scope: cedar.PrincipalConstraint): string {
  switch (scope.op) {
    case 'All':
      return 'all';
    case '==':
    case 'in': {
      const entity = (scope as { entity?: cedar.EntityUidJson }).entity;
      // A slot is a template's; a static policy always names its entity.
      return entity ? `${scope.op === '==' ? '=' : '<'}${uidKey(entity)}` : 'all';
    }
    case 'is': {
      const is = scope as { entity_type: string; in?: { entity?: cedar.EntityUidJson } };
      return is.in?.entity ? `:${is.entity_type}<${uidKey(is.in.entity)}` : `:${is.entity_type}`;
    }
  }
}

export function indexByScope(entries: PolicyEntry[]): ScopeIndex {
  const index: ScopeIndex = new Map();
  for (const p of entries) {
    const bucket = bucketOf(p.json.principal);
    let policies = index.get(bucket);
    if (!policies) index.set(bucket, (policies = []));
    policies.push(p);
  }
  return index;
}

/**
 * The buckets of `index` whose scope can match `principal`, whose ancestors (entity keys) are
 * `ancestors`, sorted: the policies in them are every policy of the layer that can apply to it.
 */
export function scopeHits(index: ScopeIndex, principal: EntityUid, ancestors: Iterable<string>): string[] {
  const p = entityKey(principal);
  const hits = new Set<string>();
  const at = (bucket: string) => {
    if (index.has(bucket)) hits.add(bucket);
  };
  at('all');
  at(`=${p}`);
  at(`<${p}`);
  at(`:${principal.type}`);
  at(`:${principal.type}<${p}`);
  for (const a of ancestors) {
    at(`<${a}`);
    at(`:${principal.type}<${a}`);
  }
  return [...hits].sort();
}

/**
 * The preparsed id of the slice of a layer (`layer`, indexed as `index`, of policy version
 * `source`) for `principal`, whose ancestors (entity keys) are `ancestors`; null when Cedar
 * refuses it (it parsed whole at publish, so this does not happen).
 */
export function sliceFor(source: string, layer: string, index: ScopeIndex, principal: EntityUid, ancestors: Iterable<string>): string | null {
  const hits = scopeHits(index, principal, ancestors);
  return preparedFor(source, `slice\n${layer}\n${hits.join('\n')}`, () => {
    const staticPolicies: Record<string, cedar.Policy> = {};
    for (const bucket of hits) for (const p of index.get(bucket)!) staticPolicies[p.id] = preparedForm(p);
    return { policies: { staticPolicies }, extra: {} };
  })?.preparsedId ?? null;
}
