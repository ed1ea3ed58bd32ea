// What a JSON value from outside (a request body, a token's claims) must satisfy before any
// of it is used: values that cannot travel intact (strings PostgreSQL's jsonb cannot hold:
// NUL, unpaired surrogates; integers beyond 2^53, which JSON parsing has already rounded;
// U+FDD0, which marks the decision API's escaped values, see exact-json.ts), and nesting no
// deeper than a bound, so nothing later (Cedar, canonical JSON, the log) recurses without
// end. The walk is iterative: a value nested 10,000 levels costs a loop, not the stack.
// (The decision API keeps NUL and big integers instead, escaped: exact-json.ts.)

/** Deeper than any request or claim Leash reads; deep enough for any Cedar record a policy names. */
export const MAX_JSON_DEPTH = 64;

export interface UnsafeValue {
  /** JSON pointer segments to the value. */
  path: string[];
  why: string;
}

const badString = (s: string) => s.includes('\u0000') || s.includes('\uFDD0') || !(s as string & { isWellFormed(): boolean }).isWellFormed();

/** The first value that cannot travel intact or lies too deep, with its path; null if none. */
export function findUnsafeValue(root: unknown, maxDepth = MAX_JSON_DEPTH): UnsafeValue | null {
  // Each entry: the value, its parent entry and its name there (the path is built only for a hit).
  type Entry = { value: unknown; parent: Entry | null; name: string; depth: number };
  const pathOf = (e: Entry) => {
    const path: string[] = [];
    for (let at: Entry | null = e; at?.parent; at = at.parent) path.push(at.name);
    return path.reverse();
  };
  const pending: Entry[] = [{ value: root, parent: null, name: '', depth: 0 }];
  while (pending.length > 0) {
    const entry = pending.pop()!;
    const { value, depth } = entry;
    if (typeof value === 'string') {
      if (badString(value)) return { path: pathOf(entry), why: 'contains a NUL character, an unpaired surrogate or U+FDD0 (reserved)' };
      continue;
    }
    if (typeof value === 'number') {
      // 1e400 parses as Infinity, which JSON cannot write back (the log's canonical form refuses it).
      if (!Number.isFinite(value)) return { path: pathOf(entry), why: 'is a number beyond what JSON can hold exactly' };
      if (Number.isInteger(value) && !Number.isSafeInteger(value)) {
        return { path: pathOf(entry), why: 'is an integer beyond 2^53, which cannot be kept exactly; send it as a string (or a Cedar extension value)' };
      }
      continue;
    }
    if (value === null || typeof value !== 'object') continue;
    if (depth >= maxDepth) return { path: pathOf(entry), why: `nests deeper than ${maxDepth} levels` };
    if (Array.isArray(value)) {
      for (let i = value.length - 1; i >= 0; i--) pending.push({ value: value[i], parent: entry, name: String(i), depth: depth + 1 });
      continue;
    }
    const keys = Object.keys(value);
    for (let i = keys.length - 1; i >= 0; i--) {
      const k = keys[i]!;
      if (badString(k)) return { path: [...pathOf(entry), k.replace(/[^\x20-\x7e]/g, '?')], why: 'is a member name with a NUL character, an unpaired surrogate or U+FDD0 (reserved)' };
      pending.push({ value: (value as Record<string, unknown>)[k], parent: entry, name: k, depth: depth + 1 });
    }
  }
  return null;
}

/** A JSON pointer for messages, bounded in length whatever the names in it. */
export function pointer(path: string[]): string {
  if (path.length === 0) return 'the body';
  const text = path.map((p) => `/${p.replaceAll('~', '~0').replaceAll('/', '~1')}`).join('');
  return text.length > 200 ? `${text.slice(0, 200)}…` : text;
}
