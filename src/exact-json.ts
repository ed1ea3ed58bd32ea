import { parse as parseLossless } from 'lossless-json';
import { MAX_JSON_DEPTH, type UnsafeValue } from './json-limits.ts';

// Decision requests are Cedar's to judge: a string holding NUL and an integer beyond 2^53
// (Cedar's integers are 64-bit) are values Cedar accepts, but PostgreSQL's jsonb cannot hold
// NUL and JavaScript numbers cannot hold such integers. Such a value is carried, from the
// request's parsing to the decision log and back through replay, in an escaped form that is a
// plain, storable string; only the text handed to Cedar spells the value itself (`cedarText`).
//
// The escaped form: U+FDD0 (a Unicode noncharacter, set aside for a program's internal use)
// then `s:` and the string with `%` written `%25`, NUL `%00`, U+FDD0 and any unpaired
// surrogate `%uXXXX`; or `n:` and the integer's digits. Every string holding U+FDD0 is
// escaped too, so the form is never ambiguous, and nothing else Leash stores may hold U+FDD0
// (json-limits refuses it). The decision log also keeps refused token claims in this form.

export const MARK = '\uFDD0';

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const ESCAPED_CHARS = new RegExp(`[%\u0000\uFDD0]|${LONE_SURROGATE.source}`, 'g');
const ESCAPE = /%(25|00|u[0-9A-F]{4})/g;

const needsEscape = (s: string) => s.includes('\u0000') || s.includes(MARK);
const unpaired = (s: string) => !(s as string & { isWellFormed(): boolean }).isWellFormed();

/** A string as the decision API carries it: escaped when it holds NUL or U+FDD0. */
export const carried = (s: string) => (needsEscape(s) ? escapeString(s) : s);

export function escapeString(s: string): string {
  const escape = (c: string) => (c === '%' ? '%25' : c === '\u0000' ? '%00' : `%u${c.charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')}`);
  return `${MARK}s:${s.replace(ESCAPED_CHARS, escape)}`;
}

export function escapeInteger(n: bigint): string {
  return `${MARK}n:${n}`;
}

/** The value an escaped string stands for (a string or a bigint); any other string as it is. */
export function unescapeValue(s: string): string | bigint {
  if (!s.startsWith(MARK)) return s;
  if (s.startsWith(`${MARK}n:`)) return BigInt(s.slice(3));
  return s.slice(3).replace(ESCAPE, (_, c: string) => (c === '25' ? '%' : c === '00' ? '\u0000' : String.fromCharCode(parseInt(c.slice(1), 16))));
}

/** JSON text with a run of 16 digits somewhere may hold an integer JSON.parse would round. */
const LONG_DIGITS = /\d{16}/;

/**
 * The body as JSON, with integers beyond 2^53 kept exactly (as bigints, for `escapeValues`).
 * `parsed` is what JSON.parse made of it; the exact parse runs only when the text may need it.
 */
export function exactJson(text: string, parsed: unknown): unknown {
  if (!LONG_DIGITS.test(text)) return parsed;
  return parseLossless(text, null, (digits) => {
    const n = Number(digits);
    return /^-?\d+$/.test(digits) && !Number.isSafeInteger(n) ? BigInt(digits) : n;
  });
}

/**
 * Puts a parsed decision request in the escaped form, in place: strings and member names
 * holding NUL or U+FDD0, and bigints, escaped. Returns the new root (a root whose member names
 * change is rebuilt) or what cannot be decided at all: an unpaired surrogate (no Cedar string
 * holds one), a number that was not read exactly, or nesting past the bound.
 */
export function escapeValues(root: unknown, maxDepth = MAX_JSON_DEPTH): { value: unknown } | { problem: UnsafeValue } {
  type Entry = { holder: Record<string, unknown> | unknown[] | null; name: string; parent: Entry | null; depth: number };
  const pathOf = (e: Entry) => {
    const path: string[] = [];
    for (let at: Entry | null = e; at?.parent; at = at.parent) path.push(at.name);
    return path.reverse();
  };
  const box = { root };
  const pending: Entry[] = [{ holder: box as unknown as Record<string, unknown>, name: 'root', parent: null, depth: 0 }];
  while (pending.length > 0) {
    const entry = pending.pop()!;
    const holder = entry.holder as Record<string, unknown>;
    const value = holder[entry.name];
    if (typeof value === 'string') {
      if (unpaired(value)) return { problem: { path: pathOf(entry), why: 'holds an unpaired surrogate, which no Cedar string can' } };
      if (needsEscape(value)) holder[entry.name] = escapeString(value);
      continue;
    }
    if (typeof value === 'bigint') {
      holder[entry.name] = escapeInteger(value);
      continue;
    }
    if (typeof value === 'number') {
      if (!Number.isFinite(value)) return { problem: { path: pathOf(entry), why: 'is a number beyond what JSON can hold exactly' } };
      // Only digits are read exactly (exactJson); 1e300 has already been rounded.
      if (Number.isInteger(value) && !Number.isSafeInteger(value)) return { problem: { path: pathOf(entry), why: 'is an integer beyond 2^53 written with an exponent or a fraction; write its digits' } };
      continue;
    }
    if (value === null || typeof value !== 'object') continue;
    if (entry.depth >= maxDepth) return { problem: { path: pathOf(entry), why: `nests deeper than ${maxDepth} levels` } };
    if (Array.isArray(value)) {
      for (let i = value.length - 1; i >= 0; i--) pending.push({ holder: value, name: String(i), parent: entry, depth: entry.depth + 1 });
      continue;
    }
    let object = value as Record<string, unknown>;
    const keys = Object.keys(object);
    const bad = keys.find(unpaired);
    if (bad !== undefined) return { problem: { path: [...pathOf(entry), bad.replace(/[^\x20-\x7e]/g, '?')], why: 'is a member name with an unpaired surrogate, which no Cedar string can hold' } };
    if (keys.some(needsEscape)) {
      // Rebuilt, not renamed in place: an escaped name may equal another member's name as sent.
      object = Object.fromEntries(keys.map((k) => [needsEscape(k) ? escapeString(k) : k, object[k]]));
      holder[entry.name] = object;
    }
    const names = Object.keys(object);
    for (let i = names.length - 1; i >= 0; i--) pending.push({ holder: object, name: names[i]!, parent: entry, depth: entry.depth + 1 });
  }
  return { value: box.root };
}

/** A JSON string literal in the escaped form (the text between the quotes is JSON-escaped). */
const ESCAPED_LITERAL = /"\uFDD0([sn]):((?:[^"\\]|\\.)*)"/g;

/**
 * JSON text for Cedar with each escaped string spelled as the value it stands for: the
 * integer's digits, or the string with its NUL (as `\u0000`) and U+FDD0 back.
 */
export function cedarText(text: string): string {
  if (!text.includes(MARK)) return text;
  return text.replace(ESCAPED_LITERAL, (literal, kind: string, body: string) => {
    if (kind === 'n') return /^-?\d+$/.test(body) ? body : literal;
    return `"${body.replace(ESCAPE, (_, c: string) => (c === '25' ? '%' : c === '00' ? '\\u0000' : `\\${c}`))}"`;
  });
}

/**
 * A copy of token claims the decision log can hold: every string and member name holding NUL,
 * U+FDD0 or an unpaired surrogate escaped. Null when they cannot be kept as signed (nesting
 * past `maxDepth`, a number JSON cannot write back or parsing has rounded).
 */
export function escapedCopy(value: unknown, maxDepth: number): unknown {
  const copy = (v: unknown, depth: number): unknown => {
    if (typeof v === 'string') return needsEscape(v) || unpaired(v) ? escapeString(v) : v;
    if (typeof v === 'number') {
      // Infinity, or an integer JSON parsing has already rounded: not the claim as signed.
      if (!Number.isFinite(v) || (Number.isInteger(v) && !Number.isSafeInteger(v))) throw new RangeError('not exact');
      return v;
    }
    if (v === null || typeof v !== 'object') return v;
    if (depth >= maxDepth) throw new RangeError('too deep');
    if (Array.isArray(v)) return v.map((x) => copy(x, depth + 1));
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [needsEscape(k) || unpaired(k) ? escapeString(k) : k, copy(x, depth + 1)]));
  };
  try {
    return copy(value, 0);
  } catch {
    return null;
  }
}
