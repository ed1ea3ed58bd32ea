import { LeashError } from '../errors.ts';
import type { CedarEntity, EntityUid } from '../registry/cedar-entities.ts';
import type { RegistryState } from '../registry/registry-view.ts';
import { ancestorsOf, type CedarDetail } from './details.ts';
import { actionUid, entitiesFor, entityKey } from './engine.ts';
import { preparsed } from './layer-calls.ts';
import type { LayerResult } from './layer-result.ts';
import type { CompiledPolicySet } from './policy-set.ts';

// A parent agent passing part of what its token allows to a sub-agent (token exchange): the
// built-in action `delegate`, asked of the ordinary policies with the parent as principal and
// the sub-agent as resource, and the rule that the sub-agent's token asks for nothing its
// parent's token does not cover.

export const DELEGATE_ACTION = 'delegate';

/**
 * May `parent` delegate to `child`? Cedar, with the ordinary policies and the registry's
 * entities. A schema that does not declare `delegate` (for Agent principals and resources)
 * allows no delegation at all: `declared: false`.
 */
export function delegateDecision(policies: CompiledPolicySet, registry: RegistryState, parent: string, child: string): { declared: boolean; result: LayerResult } {
  const A: EntityUid = { type: 'Agent', id: parent };
  const B: EntityUid = { type: 'Agent', id: child };
  const entities = entitiesFor(registry, [{ uid: A }, { uid: B }], undefined);
  try {
    const result = preparsed(policies, policies.preparsedId, A, { action: actionUid(DELEGATE_ACTION), resource: B, context: {}, entities: [...entities.values()] }, true);
    return { declared: true, result };
  } catch (err) {
    if (!(err instanceof LeashError && err.code === 'VALIDATION_FAILED')) throw err;
    return { declared: false, result: { allow: false, reasons: [], errors: [err.message], failed: [], errored: false } };
  }
}

/**
 * The keys of `uid` and of everything it lies within in `entities`, each uid walked once: one
 * for many uncoveredPair calls over the same entities (a human's grants) walks each target once.
 */
export function atOrAbove(entities: Map<string, CedarEntity>): (uid: EntityUid) => ReadonlySet<string> {
  const memo = new Map<string, Set<string>>();
  return (uid) => {
    const k = entityKey(uid);
    let found = memo.get(k);
    if (!found) memo.set(k, (found = new Set([k, ...ancestorsOf(entities, uid)])));
    return found;
  };
}

/**
 * Does some entry of the parent's details cover every (target, action) the requested entries
 * name? A requested `resource: X` is covered by a parent entry naming X exactly, or by one whose
 * `resourceIn` X lies within; a requested `resourceIn: X` (X and everything under it) only by a
 * parent `resourceIn` that X lies within. "Within" reads `entities` (for the token endpoint, the
 * registry's: a hierarchy only a PEP knows cannot be shown here). Returns the first pair not covered.
 */
export function uncoveredPair(
  parent: CedarDetail[], requested: CedarDetail[], entities: Map<string, CedarEntity>, above: (uid: EntityUid) => ReadonlySet<string> = atOrAbove(entities),
): { target: EntityUid; action: string } | null {
  const index = indexOf(parent);
  for (const r of requested) {
    const target = r.resource ?? r.resourceIn!;
    for (const action of r.actions) {
      const held = index.get(action);
      let covered = held !== undefined && r.resource !== undefined && held.exact.has(entityKey(r.resource));
      if (!covered && held !== undefined && held.within.size > 0) for (const k of above(target)) if ((covered = held.within.has(k))) break;
      if (!covered) return { target, action };
    }
  }
  return null;
}

/** A parent's details by action: the targets it names exactly, and those it names with everything within. */
type DetailsIndex = Map<string, { exact: Set<string>; within: Set<string> }>;
const indexes = new WeakMap<CedarDetail[], DetailsIndex>();

function indexOf(parent: CedarDetail[]): DetailsIndex {
  let index = indexes.get(parent);
  if (index) return index;
  index = new Map();
  for (const p of parent) {
    for (const action of p.actions) {
      let held = index.get(action);
      if (!held) index.set(action, (held = { exact: new Set(), within: new Set() }));
      if (p.resourceIn) held.within.add(entityKey(p.resourceIn));
      else held.exact.add(entityKey(p.resource!));
    }
  }
  indexes.set(parent, index);
  return index;
}
