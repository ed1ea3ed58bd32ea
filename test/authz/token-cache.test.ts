import { describe, expect, it } from 'vitest';
import { VerifiedTokenCache } from '../../src/tokens/token-cache.ts';

describe('verified-token cache', () => {
  const claims = { sub: 'bot', exp: 100 };

  it('keys by agent version: a lifecycle change makes every earlier entry unreachable', () => {
    const cache = new VerifiedTokenCache();
    cache.set(VerifiedTokenCache.key('tok', 'bot', 2), claims, 10_000);
    expect(cache.get(VerifiedTokenCache.key('tok', 'bot', 2), 0)).toEqual(claims);
    expect(cache.get(VerifiedTokenCache.key('tok', 'bot', 3), 0)).toBeUndefined();
    expect(cache.get(VerifiedTokenCache.key('tok', 'other', 2), 0)).toBeUndefined();
    expect(cache.get(VerifiedTokenCache.key('tok2', 'bot', 2), 0)).toBeUndefined();
  });

  it('drops an entry at its expiry and the oldest entry when full', () => {
    const cache = new VerifiedTokenCache(2);
    cache.set('a', claims, 1000);
    expect(cache.get('a', 999)).toEqual(claims);
    expect(cache.get('a', 1000)).toBeUndefined();
    cache.set('b', claims, 5000);
    cache.set('c', claims, 5000);
    cache.set('d', claims, 5000);
    expect(cache.size).toBe(2);
    expect(cache.get('b', 0)).toBeUndefined();
    expect(cache.get('d', 0)).toEqual(claims);
  });

  it('never holds the raw token', () => {
    expect(VerifiedTokenCache.key('eyJhbGciOi.secret-token.sig', 'bot', 1)).not.toContain('secret-token');
  });
});
