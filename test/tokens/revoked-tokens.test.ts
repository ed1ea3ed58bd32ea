import { describe, expect, it } from 'vitest';
import type { StoredEvent } from '../../src/store/event-store.ts';
import { RevokedTokens } from '../../src/tokens/revoked-tokens.ts';
import { recordedTokenVerifier } from '../../src/tokens/verify.ts';
import { agent, registryOf } from './harness.ts';

// The revoked jtis a node keeps: each only while its token could still be accepted (its exp
// plus the largest leeway, 300 s), so memory stays bounded by the tokens still alive.

const T0 = Date.parse('2026-01-01T00:00:00Z');
let position = 0;
const revoked = (jti: string, exp: number, atMs: number): StoredEvent =>
  ({ streamId: `token/${jti}`, streamType: 'token', type: 'TokenRevoked', version: 1, position: ++position, at: new Date(atMs), data: { jti, exp, revokedBy: 'operator' }, metadata: {} }) as unknown as StoredEvent;

describe('RevokedTokens', () => {
  it('given a revocation, the jti is revoked until exp + 300 s, then forgotten', () => {
    const view = new RevokedTokens();
    const exp = T0 / 1000 + 120;
    view.apply(revoked('a', exp, T0));
    expect(view.positionOf('a', T0)).toBe(position);
    expect(view.has('a', (exp + 299) * 1000)).toBe(true);
    expect(view.has('a', (exp + 300) * 1000)).toBe(false);
    expect(view.size).toBe(0); // dropped on the lookup that found it past its time
    expect(view.has('b', T0)).toBe(false);
  });

  it('given many revocations, a later event prunes the expired ones without their being looked up', () => {
    const view = new RevokedTokens();
    for (let i = 0; i < 100; i++) view.apply(revoked(`old-${i}`, T0 / 1000 + 60, T0));
    view.apply(revoked('fresh', T0 / 1000 + 3600, T0 + 10 * 60_000));
    expect(view.size).toBe(1);
    expect(view.has('fresh', T0 + 10 * 60_000)).toBe(true);
  });

  it('lookups prune too, when no event comes for a while', () => {
    const view = new RevokedTokens();
    for (let i = 0; i < 10; i++) view.apply(revoked(`old-${i}`, T0 / 1000 + 60, T0));
    expect(view.has('other', T0 + 10 * 60_000)).toBe(false);
    expect(view.size).toBe(0);
  });

  it('a revocation of a token long expired when it is folded (a node catching up) is not kept at all', () => {
    const view = new RevokedTokens();
    view.apply(revoked('stale', T0 / 1000 - 1000, T0));
    expect(view.size).toBe(0);
  });

  it('ignores other streams', () => {
    const view = new RevokedTokens();
    view.apply({ ...revoked('x', T0 / 1000 + 60, T0), streamType: 'agent', type: 'AgentRevoked' } as StoredEvent);
    expect(view.size).toBe(0);
  });
});

describe('replay', () => {
  it('a recorded TOKEN_REVOKED refusal stands as recorded, with its claims', async () => {
    const claims = { iss: 'http://127.0.0.1:8080', sub: 'bot', iat: T0 / 1000, exp: T0 / 1000 + 60, jti: 'j1' };
    const check = await recordedTokenVerifier('TOKEN_REVOKED')({ sha256: 'x', claims }, 'bot', registryOf(agent('bot')), new Date(T0));
    expect(check).toMatchObject({ ok: false, code: 'TOKEN_REVOKED', claims, agentVersion: 2 });
    // Any other recorded outcome with claims is decided again (here: allowed past the token layer).
    expect(await recordedTokenVerifier(null)({ sha256: 'x', claims }, 'bot', registryOf(agent('bot')), new Date(T0))).toMatchObject({ ok: true });
  });
});
