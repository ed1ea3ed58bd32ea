import type { AgentRecord } from '../registry/agent.ts';
import type { CedarEntity, EntityUid } from '../registry/cedar-entities.ts';
import type { RegistryState } from '../registry/registry-view.ts';
import { slimEntity } from './combined.ts';
import { entityKey, referencedUids, registryEntity, sameUid as same } from './engine.ts';
import type { LayerResult } from './layer-result.ts';
import type { CompiledPolicySet } from './policy-set.ts';

// What an agent decision's combined Cedar call reads, cut to what can matter (slimmed registry
// entities, the literals policies and links name), and the key its answer is remembered under.

// Registry entities and verified-token claims are the same objects from one request to the
// next (until their version changes), so their JSON is kept rather than written out each time.
const json = new WeakMap<object, string>();
export function jsonOf(value: object): string {
  let text = json.get(value);
  if (text === undefined) json.set(value, (text = JSON.stringify(value)));
  return text;
}

const slimmed = new WeakMap<CedarEntity, { named: Set<string>; entity: CedarEntity }>();

/**
 * Registry entities with only the attributes the policy set names (see slimSchema). Null if
 * the caller describes an entity of a relaxed type itself: the relaxed schema would not hold
 * it to its required attributes, so such a request is decided the long way.
 */
export function slimRegistryEntities(view: RegistryState, set: CompiledPolicySet, entities: CedarEntity[]): CedarEntity[] | null {
  const out: CedarEntity[] = [];
  for (const e of entities) {
    if (!set.slimTypes.has(e.uid.type)) {
      out.push(e);
      continue;
    }
    if (registryEntity(view, e.uid) !== e) return null;
    let hit = slimmed.get(e);
    if (hit?.named !== set.namedAttributes) slimmed.set(e, (hit = { named: set.namedAttributes, entity: slimEntity(e, set.namedAttributes) }));
    out.push(hit.entity);
  }
  return out;
}

const literals = new WeakMap<CompiledPolicySet, Set<string>>();

/** Keys of the entities the policies and templates name literally. */
export function literalsOf(set: CompiledPolicySet): ReadonlySet<string> {
  let named = literals.get(set);
  if (!named) literals.set(set, (named = new Set(referencedUids([set.statics.map((p) => p.json), Object.values(set.templateEntries).map((t) => t.json)]).map(entityKey))));
  return named;
}

/**
 * The key under which the combined call's answer is remembered: its inputs, whole, after
 * `prefix` (policy set generation, schema, action). Cedar can only compare entity ids, never
 * read them, so renaming an entity no policy names changes nothing. When neither the policies
 * (`named`: literals and linked values) nor anything else in the request (context, other
 * entities, the resource's own attributes) mentions the resource, its id is left out of the
 * key: resources alike in type, attributes and parents share one answer. Only an answer
 * without evaluation errors is shared (their messages may name the resource), see `shareable`.
 */
export function answerKey(prefix: string, resource: EntityUid, context: string, entities: CedarEntity[], named: (key: string) => boolean): { key: string; shared: boolean } {
  // Entities are a set to Cedar: the key lists the resource's first, the others sorted.
  let own = '';
  const others: string[] = [];
  for (const e of entities) {
    if (same(e.uid, resource)) own = JSON.stringify([e.attrs, e.parents]);
    else others.push(jsonOf(e));
  }
  const rest = `${context}\n${own}\n${others.sort().join('\n')}`;
  const id = JSON.stringify(resource.id);
  // (Every part is JSON or a number, so no newline inside a part can make two keys meet.)
  if (!named(entityKey(resource)) && !rest.includes(id)) return { key: `${prefix}\n\u0001${JSON.stringify(resource.type)}\n${rest}`, shared: true };
  return { key: `${prefix}\n${JSON.stringify(entityKey(resource))}\n${rest}`, shared: false };
}

/** An answer shared between resources must not carry an error message that could name one. */
export const shareable = (result: LayerResult) => result.failed.length === 0;

/**
 * The entities for Cedar: the reachable ones, unless the caller described one the call cannot
 * reach. Cedar checks what a caller describes against the schema, so then it gets them all and
 * a malformed entity is refused whether or not the policies could have read it.
 */
export function callEntities(view: RegistryState, all: CedarEntity[], reachable: CedarEntity[]): CedarEntity[] {
  if (reachable.length === all.length) return reachable;
  const kept = new Set(reachable);
  return all.some((e) => !kept.has(e) && registryEntity(view, e.uid) !== e) ? all : reachable;
}

const withLinks = new WeakMap<ReadonlySet<string>, { set: CompiledPolicySet; all: Set<string> }>();

/** The policies' literals and an agent's link literals together (kept per agent record and policy set). */
export function literalsWith(set: CompiledPolicySet, links: ReadonlySet<string>): ReadonlySet<string> {
  if (links.size === 0) return literalsOf(set);
  let hit = withLinks.get(links);
  if (hit?.set !== set) withLinks.set(links, (hit = { set, all: new Set([...literalsOf(set), ...links]) }));
  return hit.all;
}

const linkLiterals = new WeakMap<AgentRecord, Set<string>>();

/** Keys of the entities an agent's ceiling and grants fill into their templates (a record is never changed, only replaced). */
export function literalsOfLinks(agent: AgentRecord): ReadonlySet<string> {
  let named = linkLiterals.get(agent);
  if (!named) linkLiterals.set(agent, (named = new Set(referencedUids([agent.ceiling?.values, agent.grants.map((g) => g.values)]).map(entityKey))));
  return named;
}
