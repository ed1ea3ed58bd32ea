import canonicalize from 'canonicalize';

/** RFC 8785 (JCS) canonical JSON: the byte string every hash in Leash is computed over. */
export function canonicalJson(value: unknown): string {
  const text = (canonicalize as unknown as (v: unknown) => string | undefined)(value);
  if (text === undefined) throw new TypeError('value has no JSON representation');
  return text;
}
