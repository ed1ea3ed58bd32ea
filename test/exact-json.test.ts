import { describe, expect, it } from 'vitest';
import { actionUid } from '../src/authz/engine.ts';
import { cedarText, escapedCopy, escapeString, escapeValues, exactJson, unescapeValue } from '../src/exact-json.ts';

// The decision API's escaped form must be lossless (every string comes back as it was sent,
// to Cedar and from the log) and unambiguous (no string sent as itself is ever read as an
// escaped one).

const awkward = ['', 'plain', 'a\u0000b', '\u0000', '%', '%00', '%25', '%uFDD0', '\uFDD0', '\uFDD0s:x', '\uFDD0n:5', 'a"b\\c', 'x\u0000%\uFDD0"\\\n', '😀', 'a\ud800'];

describe('the escaped form', () => {
  it.each(awkward)('%j comes back as it was, both from the log form and in the text Cedar reads', (s) => {
    const escaped = escapeString(s);
    expect(escaped.includes('\u0000')).toBe(false);
    expect((escaped as string & { isWellFormed(): boolean }).isWellFormed()).toBe(true);
    expect(unescapeValue(escaped)).toBe(s);
    if ((s as string & { isWellFormed(): boolean }).isWellFormed()) expect(JSON.parse(cedarText(JSON.stringify({ [escaped]: [escaped] })))).toEqual({ [s]: [s] });
  });

  it('an integer is spelled with its digits for Cedar, and comes back as a bigint', () => {
    const value = escapeValues({ n: 9007199254740993n, m: [-9223372036854775808n] });
    expect(value).toEqual({ value: { n: '\uFDD0n:9007199254740993', m: ['\uFDD0n:-9223372036854775808'] } });
    expect(cedarText(JSON.stringify((value as { value: unknown }).value))).toBe('{"n":9007199254740993,"m":[-9223372036854775808]}');
    expect(unescapeValue('\uFDD0n:9007199254740993')).toBe(9007199254740993n);
  });

  it('member names are escaped too, and one sent as another\'s escaped form stays a different member', () => {
    const sent = { 'a\u0000': 1, '\uFDD0s:a%00': 2, plain: { 'b\u0000': 'c\u0000' } };
    const { value } = escapeValues(structuredClone(sent)) as { value: Record<string, unknown> };
    expect(Object.keys(value)).toHaveLength(3);
    expect(JSON.parse(cedarText(JSON.stringify(value)))).toEqual(sent);
  });

  it('text with no escaped value is handed to Cedar unchanged', () => {
    const text = JSON.stringify({ a: 'x', b: [1, 2], c: '%00' });
    expect(cedarText(text)).toBe(text);
  });

  it('reads integers exactly only when the text may hold one JSON.parse rounds', () => {
    const text = '{"a":9007199254740993,"b":12,"c":1.5,"d":"9007199254740993"}';
    expect(exactJson(text, JSON.parse(text))).toEqual({ a: 9007199254740993n, b: 12, c: 1.5, d: '9007199254740993' });
    const short = '{"a":123456789012345}';
    const parsed = JSON.parse(short);
    expect(exactJson(short, parsed)).toBe(parsed);
  });

  it('refused token claims are copied escaped, or not at all when they are not the claims as signed', () => {
    expect(escapedCopy({ sub: 'a\u0000', ['k\ud800']: ['\uFDD0'] }, 8)).toEqual({ sub: '\uFDD0s:a%00', '\uFDD0s:k%uD800': ['\uFDD0s:%uFDD0'] });
    expect(escapedCopy({ n: 2 ** 60 }, 8)).toBeNull();
    expect(escapedCopy({ n: Infinity }, 8)).toBeNull();
    expect(escapedCopy({ n: [[[1]]] }, 2)).toBeNull();
  });

  it('an action uid sent with NUL in its id is read as sent, its id escaped again', () => {
    expect(actionUid(escapeString('Shop::Action::"a\\u0000b"'))).toEqual({ type: 'Shop::Action', id: escapeString('a\u0000b') });
    expect(actionUid(escapeString('read\u0000'))).toEqual({ type: 'Action', id: escapeString('read\u0000') });
  });
});
