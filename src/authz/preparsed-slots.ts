import * as cedar from './cedar.ts';

// cedar-wasm keeps preparsed policy sets by id, in its own memory, and has no call that drops
// one; preparsing under an id that is taken replaces (and so frees) what was there. So every
// set Leash prepares at run time lives in one of a fixed number of slots: a new set reuses the
// slot of the least recently used one, and a superseded policy version gives its slots back
// at once (each overwritten with an empty set, so its memory is free for the next).
//
// A slot's id names whatever set is in it now, so a caller looks its set up right before the
// Cedar call that uses it, in the same synchronous stretch: no other set can take the slot in
// between. Each set also carries a generation no other set ever has, for memory keys.

/** A bounded map that forgets the least recently used entry first. */
export class Lru<K, V> {
  private readonly entries = new Map<K, V>();
  constructor(readonly max: number) {}

  get(key: K): V | undefined {
    const v = this.entries.get(key);
    if (v !== undefined) {
      this.entries.delete(key);
      this.entries.set(key, v);
    }
    return v;
  }

  delete(key: K): void {
    this.entries.delete(key);
  }

  /** Stores the value; returns the entry it pushed out, if any. */
  set(key: K, value: V): [K, V] | undefined {
    this.entries.delete(key);
    let evicted: [K, V] | undefined;
    if (this.entries.size >= this.max) {
      const oldest = this.entries.entries().next().value!;
      this.entries.delete(oldest[0]);
      evicted = oldest;
    }
    this.entries.set(key, value);
    return evicted;
  }

  get size(): number {
    return this.entries.size;
  }
}

/** A set in a slot: its preparsed id, a generation unique to it, and what its builder added. */
export type Prepared<T> = T & { preparsedId: string; generation: number };

/** How many sets may be prepared at once, all policy versions together. */
export const SLOTS = 8192;
const slots = new Lru<string, Prepared<object>>(SLOTS);
const freeSlots: string[] = [];
/** The keys each policy version's sets are held under, so a superseded version gives them back. */
const bySource = new Map<string, Set<string>>();
const sourceOfKey = new Map<string, string>();
let slotCount = 0;
let generations = 0;

const EMPTY: cedar.PolicySet = { staticPolicies: {} };

function freeSlot(key: string, set: Prepared<object>): void {
  const source = sourceOfKey.get(key);
  sourceOfKey.delete(key);
  const keys = source === undefined ? undefined : bySource.get(source);
  keys?.delete(key);
  if (keys?.size === 0) bySource.delete(source!);
  cedar.preparsePolicySet(set.preparsedId, EMPTY);
  freeSlots.push(set.preparsedId);
}

/**
 * The set prepared under `key` for policy version `source` (built and preparsed on first use,
 * in the slot of the least recently used set when all are taken), or null when Cedar refuses
 * what `build` makes.
 */
export function preparedFor<T extends object>(source: string, key: string, build: () => { policies: cedar.PolicySet; extra: T }): Prepared<T> | null {
  const fullKey = `${source}\n${key}`;
  const hit = slots.get(fullKey);
  if (hit) return hit as Prepared<T>;
  const { policies, extra } = build();
  const preparsedId = freeSlots.pop() ?? `slot-${slotCount++}`;
  if (cedar.preparsePolicySet(preparsedId, policies).type === 'failure') {
    freeSlots.push(preparsedId);
    return null;
  }
  const set = { ...extra, preparsedId, generation: ++generations } as Prepared<T>;
  const pushedOut = slots.set(fullKey, set);
  if (pushedOut) freeSlot(pushedOut[0], pushedOut[1]);
  sourceOfKey.set(fullKey, source);
  let keys = bySource.get(source);
  if (!keys) bySource.set(source, (keys = new Set()));
  keys.add(fullKey);
  return set;
}

/**
 * Gives back every slot a policy version's sets hold: called when the version is superseded.
 * A decision still holding that version (a batch that began before the switch) prepares what
 * it needs again on its next call, and gets the same answers.
 */
export function releaseSource(source: string): void {
  const keys = bySource.get(source);
  if (!keys) return;
  for (const key of [...keys]) {
    const set = slots.get(key);
    slots.delete(key);
    if (set) freeSlot(key, set);
  }
}

/** What the slots hold: sets prepared now, slots ever made (their ids), and sets per version. */
export function slotStats(): { inUse: number; created: number; sources: Map<string, number> } {
  return { inUse: slots.size, created: slotCount, sources: new Map([...bySource].map(([s, keys]) => [s, keys.size])) };
}
