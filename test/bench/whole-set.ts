import * as cedar from '../../src/authz/cedar.ts';
import { CEILING, type CompiledPolicySet } from '../../src/authz/policy-set.ts';

const prepared = new Map<string, string>();

/**
 * The set's ordinary policies preparsed whole under an id of their own: what a raw
 * cedar-wasm baseline decides against (Leash itself prepares them in slices by principal).
 */
export function wholeSet(set: CompiledPolicySet): string {
  let id = prepared.get(set.preparsedId);
  if (!id) {
    id = `whole-${set.preparsedId}`;
    const staticPolicies = Object.fromEntries(set.statics.filter((p) => p.layer !== CEILING).map((p) => [p.id, p.text]));
    if (cedar.preparsePolicySet(id, { staticPolicies }).type !== 'success') throw new Error('the whole set does not prepare');
    prepared.set(set.preparsedId, id);
  }
  return id;
}
