import { describe, expect, it } from 'vitest';
import { DecisionCaches } from '../../src/authz/decision-caches.ts';
import { RegistryView } from '../../src/registry/registry-view.ts';
import { VerifiedTokenCache } from '../../src/tokens/token-cache.ts';

describe('verified-token cache', () => {
  const claims = { sub: 'bot', exp: 100 };

  it('keys by agent version: a lifecycle change makes every earlier entry unreachable', () => {
    const cache = new VerifiedTokenCache();
    cache.set(VerifiedTokenCache.key('tok', 'bot', 2), claims, 10_000, 3);
    expect(cache.get(VerifiedTokenCache.key('tok', 'bot', 2), 0)).toEqual(claims);
    expect(cache.get(VerifiedTokenCache.key('tok', 'bot', 3), 0)).toBeUndefined();
    expect(cache.get(VerifiedTokenCache.key('tok', 'other', 2), 0)).toBeUndefined();
    expect(cache.get(VerifiedTokenCache.key('tok2', 'bot', 2), 0)).toBeUndefined();
  });

  it('drops an entry at its expiry and the oldest entry when full', () => {
    const cache = new VerifiedTokenCache(2);
    cache.set('a', claims, 1000, 1);
    expect(cache.get('a', 999)).toEqual(claims);
    expect(cache.get('a', 1000)).toBeUndefined();
    cache.set('b', claims, 5000, 1);
    cache.set('c', claims, 5000, 1);
    cache.set('d', claims, 5000, 1);
    expect(cache.size).toBe(2);
    expect(cache.get('b', 0)).toBeUndefined();
    expect(cache.get('d', 0)).toEqual(claims);
  });

  it('bounds what the tokens add up to: the oldest go first, and a token larger than the bound is not kept', () => {
    const cache = new VerifiedTokenCache(100, 10_000);
    cache.set('a', claims, 5000, 4_000);
    cache.set('b', claims, 5000, 4_000);
    expect(cache.tokenChars).toBe(8_000);
    cache.set('c', claims, 5000, 4_000); // 12,000 would pass the bound: a goes
    expect(cache.get('a', 0)).toBeUndefined();
    expect(cache.get('b', 0)).toEqual(claims);
    expect(cache.tokenChars).toBe(8_000);
    cache.set('d', claims, 5000, 9_000); // b and c both go to make room
    expect(cache.size).toBe(1);
    expect(cache.tokenChars).toBe(9_000);
    cache.set('e', claims, 5000, 10_001); // larger than the bound by itself: not kept, nothing pushed out
    expect(cache.get('e', 0)).toBeUndefined();
    expect(cache.get('d', 0)).toEqual(claims);
    // Expiry and forgetting give the room back.
    cache.get('d', 5000);
    expect(cache.tokenChars).toBe(0);
  });

  it('a node keeps up to 100,000 tokens, bounded at 64 Mi characters of them', () => {
    const cache = new VerifiedTokenCache();
    for (let i = 0; i < 100_001; i++) cache.set(`k${i}`, claims, 5000, 600);
    expect(cache.size).toBe(100_000);
    expect(cache.get('k0', 0)).toBeUndefined();
    const big = new VerifiedTokenCache();
    for (let i = 0; i < 5_000; i++) big.set(`k${i}`, claims, 5000, 16_384);
    expect(big.tokenChars).toBeLessThanOrEqual(64 * 2 ** 20);
    expect(big.size).toBe(Math.floor((64 * 2 ** 20) / 16_384));
  });

  it('never holds the raw token', () => {
    expect(VerifiedTokenCache.key('eyJhbGciOi.secret-token.sig', 'bot', 1)).not.toContain('secret-token');
  });

  it('forgets an agent: its own entries and tokens delegated through it, nobody else\'s', () => {
    const caches = new DecisionCaches();
    const set = (token: string, agent: string, c: Record<string, unknown>) => caches.tokens.set(VerifiedTokenCache.key(token, agent, 1), { exp: 100, ...c }, 10_000, token.length);
    set('t1', 'parent', { sub: 'parent' });
    set('t2', 'child', { sub: 'alice', act: { sub: 'child', act: { sub: 'parent' } } });
    set('t3', 'other', { sub: 'other' });
    set('t4', 'parent-2', { sub: 'parent-2' }); // a prefix of the id is not the id
    const verdict = { allow: true, reasons: [], errors: [], failed: [], errored: false };
    caches.ceilingVerdicts('parent', 'k-parent').set('Folder::"inv"\nread', verdict);
    caches.ceilingVerdicts('other', 'k-other').set('Folder::"inv"\nread', verdict);
    caches.forgetAgent('parent');
    expect(caches.tokens.size).toBe(2);
    expect(caches.tokens.get(VerifiedTokenCache.key('t3', 'other', 1), 0)).toBeDefined();
    expect(caches.tokens.get(VerifiedTokenCache.key('t4', 'parent-2', 1), 0)).toBeDefined();
    expect(caches.ceilingVerdicts('parent', 'k-parent').size).toBe(0);
    expect(caches.ceilingVerdicts('other', 'k-other').get('Folder::"inv"\nread')).toEqual(verdict);
    // Forgetting the child too leaves only the others; nothing is forgotten twice.
    expect(caches.tokens.forget('child')).toBe(0); // its token went with the parent
    expect(caches.tokens.forget('other')).toBe(1);
    expect(caches.tokens.size).toBe(1);
  });

  it("keeps a token's ceiling verdicts as long as the token, however many others are checked meanwhile; never for other inputs or past a forget", () => {
    const caches = new DecisionCaches();
    const claims = { sub: 'bot' }; // the object the token cache holds for a verified token
    const verdict = { allow: true, reasons: [], errors: [], failed: [], errored: false };
    caches.ceilingVerdicts('bot', 'inputs-1', claims).set('Folder::"inv"\nread', verdict);
    // 10,001 other checks push it out of the shared memory (its bound is 10,000), but the token still has it.
    for (let i = 0; i < 10_001; i++) caches.ceilingVerdicts(`a${i}`, `other-${i}`);
    expect(caches.ceilingVerdicts('bot', 'inputs-1', claims).get('Folder::"inv"\nread')).toBe(verdict);
    // Other inputs (another agent version, policy set, context or entities) are another check.
    expect(caches.ceilingVerdicts('bot', 'inputs-2', claims).size).toBe(0);
    caches.ceilingVerdicts('bot', 'inputs-1', claims).set('Folder::"inv"\nread', verdict);
    expect(caches.ceilingVerdicts('bot', 'inputs-1', claims).size).toBe(1);
    // Forgetting the agent forgets what its tokens kept.
    caches.forgetAgent('bot');
    expect(caches.ceilingVerdicts('bot', 'inputs-1', claims).size).toBe(0);
    // Another token's claims never see it.
    caches.ceilingVerdicts('bot', 'inputs-3', claims).set('Folder::"inv"\nread', verdict);
    expect(caches.ceilingVerdicts('bot', 'inputs-3', { sub: 'bot' }).size).toBe(1); // (the shared memory still holds it)
    for (let i = 0; i < 10_001; i++) caches.ceilingVerdicts(`b${i}`, `more-${i}`);
    expect(caches.ceilingVerdicts('bot', 'inputs-3', { sub: 'bot' }).size).toBe(0);
  });

  it("a token's kept verdicts never answer past a forget, however many agents are forgotten after it (the counts are bounded)", () => {
    const caches = new DecisionCaches();
    const claims = { sub: 'bot' };
    const verdict = { allow: true, reasons: [], errors: [], failed: [], errored: false };
    caches.ceilingVerdicts('bot', 'inputs-1', claims).set('Folder::"inv"\nread', verdict);
    caches.forgetAgent('bot');
    // 200,000 agents counted in all: the counts start over, bot's with them, and what its token kept still never answers.
    for (let i = 1; i < 200_000; i++) caches.forgetAgent(`agent-${i}`);
    expect(caches.agentsCounted).toBe(200_000);
    caches.forgetAgent('one-more');
    expect(caches.agentsCounted).toBe(1);
    expect(caches.ceilingVerdicts('bot', 'inputs-1', claims).size).toBe(0);
  });

  it('the registry view tells who changed, event by event', () => {
    const view = new RegistryView();
    const changed: string[] = [];
    view.onAgentChange((id) => changed.push(id));
    view.apply({ position: 1, streamId: 'agent/a1', streamType: 'agent', version: 1, type: 'AgentDiscovered', data: { id: 'a1', source: 's', fingerprint: 'f' }, metadata: {}, at: new Date(), idempotencyKey: null, prevHash: '', hash: '' });
    view.apply({ position: 2, streamId: 'human/h1', streamType: 'human', version: 1, type: 'HumanRegistered', data: { id: 'h1', email: 'h@example.com', groups: [] }, metadata: {}, at: new Date(), idempotencyKey: null, prevHash: '', hash: '' });
    expect(changed).toEqual(['a1']);
  });
});
