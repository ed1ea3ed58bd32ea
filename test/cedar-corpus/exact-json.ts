// JSON that keeps integers beyond 2^53 exactly. Cedar's Long is a 64-bit integer, and the
// generated corpus holds values such as 9223372036854775807 that JSON.parse would round. Such
// a number parses to a BigIntLiteral, and `stringify` writes its digits back as they were, so
// the body Leash receives is byte for byte the number the test holds.

export class BigIntLiteral {
  constructor(readonly digits: string) {}
  toJSON(): string {
    return `${MARK}${this.digits}${MARK}`;
  }
}

const MARK = '\u0001big\u0001';
const MARKED = /"\\u0001big\\u0001(-?\d+)\\u0001big\\u0001"/g;

/** JSON.stringify, with each BigIntLiteral written as its digits. */
export function stringify(value: unknown): string {
  const text = JSON.stringify(value) as string | undefined;
  if (text === undefined) return 'undefined';
  return text.includes('\\u0001big') ? text.replace(MARKED, '$1') : text;
}

/** Does this value hold a BigIntLiteral anywhere? */
export function hasBigInt(value: unknown): boolean {
  if (value instanceof BigIntLiteral) return true;
  if (Array.isArray(value)) return value.some(hasBigInt);
  if (value !== null && typeof value === 'object') return Object.values(value).some(hasBigInt);
  return false;
}

/** Where the first BigIntLiteral is, as JSON pointer segments (null: none). */
export function findBigInt(value: unknown, path: string[] = []): { path: string[]; digits: string } | null {
  if (value instanceof BigIntLiteral) return { path, digits: value.digits };
  if (value !== null && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      const hit = findBigInt(v, [...path, k]);
      if (hit) return hit;
    }
  }
  return null;
}

const UNSAFE = /-?\d{16,}(?![.eE\d])/;

/** JSON.parse, except that integers beyond 2^53 come back as BigIntLiterals. */
export function parse(text: string): unknown {
  // The fast path: no literal long enough to be unsafe.
  if (!UNSAFE.test(text)) return JSON.parse(text);
  let i = 0;
  const ws = () => {
    while (i < text.length && (text[i] === ' ' || text[i] === '\n' || text[i] === '\r' || text[i] === '\t')) i++;
  };
  const fail = (what: string): never => {
    throw new SyntaxError(`${what} at ${i}`);
  };
  const value = (): unknown => {
    ws();
    const c = text[i];
    if (c === '{') {
      i++;
      const out: Record<string, unknown> = {};
      ws();
      if (text[i] === '}') return i++, out;
      for (;;) {
        ws();
        if (text[i] !== '"') fail('expected a member name');
        const k = string();
        ws();
        if (text[i++] !== ':') fail('expected :');
        Object.defineProperty(out, k, { value: value(), enumerable: true, writable: true, configurable: true });
        ws();
        if (text[i] === ',') i++;
        else if (text[i] === '}') return i++, out;
        else fail('expected , or }');
      }
    }
    if (c === '[') {
      i++;
      const out: unknown[] = [];
      ws();
      if (text[i] === ']') return i++, out;
      for (;;) {
        out.push(value());
        ws();
        if (text[i] === ',') i++;
        else if (text[i] === ']') return i++, out;
        else fail('expected , or ]');
      }
    }
    if (c === '"') return string();
    const m = /^-?(?:0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?|^true|^false|^null/.exec(text.slice(i, i + 400));
    if (!m) return fail('unexpected token');
    i += m[0].length;
    if (m[0] === 'true') return true;
    if (m[0] === 'false') return false;
    if (m[0] === 'null') return null;
    const n = Number(m[0]);
    if (!m[1] && !m[2] && !Number.isSafeInteger(n)) return new BigIntLiteral(m[0]);
    return n;
  };
  const string = (): string => {
    const start = i;
    i++;
    while (i < text.length && text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
    if (i >= text.length) fail('unterminated string');
    i++;
    return JSON.parse(text.slice(start, i)) as string;
  };
  const out = value();
  ws();
  if (i !== text.length) fail('trailing characters');
  return out;
}
