import { configure } from 'safe-stable-stringify';

/**
 * RFC 8785 (JCS) canonical JSON for JSON data: members sorted by the UTF-16 code units of
 * their names, numbers as ECMAScript prints them, strings as JSON.stringify escapes them.
 * safe-stable-stringify writes exactly that when it sorts keys, in about half the time of
 * the reference implementation (`canonicalize`), which the tests hold it to. Strict:
 * NaN, Infinity, functions, symbols, BigInt and cycles throw instead of being written.
 */
const stringify = configure({ deterministic: true, strict: true, bigint: false, circularValue: TypeError });

/** The byte string every hash in Leash is computed over. */
export function canonicalJson(value: unknown): string {
  const text = stringify(value);
  if (text === undefined) throw new TypeError('value has no JSON representation');
  return text;
}
