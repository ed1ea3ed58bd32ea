import canonicalize from 'canonicalize';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { canonicalJson } from '../src/canonical-json.ts';

// Every hash in the event and decision logs is taken over this text, so it must be exactly
// RFC 8785's: the reference implementation (`canonicalize`, by the RFC's author) is the oracle.
const reference = canonicalize as unknown as (value: unknown) => string;

/** JSON values whose strings and member names may be any UTF-16 code units, lone surrogates included. */
const anyJson = fc.jsonValue({ stringUnit: 'binary', maxDepth: 4 });
/** Objects with names JSON engines order on their own: integer-like ones ("10" before "9" here). */
const awkwardNames = fc.dictionary(
  fc.oneof(fc.nat({ max: 20 }).map(String), fc.string({ unit: 'binary', maxLength: 3 }), fc.constantFrom('', '__proto__', 'constructor', '-1', '01', '1.5', '\u20ac', '\ud83d\ude00', '\ud800')),
  anyJson,
  { maxKeys: 12 },
);

describe('canonical JSON (RFC 8785)', () => {
  it('is the reference implementation’s text for any JSON value', () => {
    fc.assert(fc.property(anyJson, (value) => {
      expect(canonicalJson(value)).toBe(reference(value));
    }), { numRuns: 2000 });
  });

  it('sorts member names by UTF-16 code units, integer-like and unpaired-surrogate names included', () => {
    fc.assert(fc.property(awkwardNames, (value) => {
      expect(canonicalJson(value)).toBe(reference(value));
    }), { numRuns: 1000 });
    expect(canonicalJson({ 9: 'a', 10: 'b', a: 1, B: 2, '': 3 })).toBe('{"":3,"10":"b","9":"a","B":2,"a":1}');
  });

  it('writes numbers and strings as RFC 8785 does', () => {
    for (const value of [0, -0, 1e21, 1e-7, 5e-324, 2 ** 53 + 2, 0.1 + 0.2, -1.5e300, '\u2028\u2029', '\u0000\u001f"\\', '\ud800x', '\udc00', 'x'.repeat(6000) + '"', '€😀']) {
      expect(canonicalJson(value)).toBe(reference(value));
    }
    expect(canonicalJson(-0)).toBe('0');
    expect(canonicalJson(1e21)).toBe('1e+21');
  });

  it('leaves out undefined members, writes undefined array items as null, and dates through toJSON', () => {
    const value = { b: undefined, a: [undefined, 1], at: new Date('2026-11-24T00:00:00.000Z'), nested: { z: 1, y: undefined } };
    expect(canonicalJson(value)).toBe('{"a":[null,1],"at":"2026-11-24T00:00:00.000Z","nested":{"z":1}}');
    expect(canonicalJson(value)).toBe(reference(value));
  });

  it('refuses what JSON cannot carry instead of writing it', () => {
    const cycle: Record<string, unknown> = {};
    cycle.self = cycle;
    for (const value of [NaN, Infinity, { n: -Infinity }, [NaN], 10n, { f: () => 1 }, Symbol('s'), undefined, cycle]) {
      expect(() => canonicalJson(value), String(typeof value)).toThrow();
    }
  });
});
