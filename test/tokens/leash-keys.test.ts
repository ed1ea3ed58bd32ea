import { describe, expect, it } from 'vitest';
import type { StoredEvent } from '../../src/store/event-store.ts';
import { keepUntil, LeashKeys } from '../../src/tokens/leash-keys.ts';
import { MAX_CLOCK_SKEW_SECONDS } from '../../src/tokens/pins.ts';

// Which keys Leash's JWKS holds, folded from the log at a frozen clock: a key stays until
// every token it may have signed has expired, counted from when it stopped signing.

const T0 = Date.parse('2030-01-01T00:00:00Z');
const min = 60_000;
const DAY = 24 * 60 * min;
const LIFETIME = 300;
const KEPT_AFTER = (LIFETIME + MAX_CLOCK_SKEW_SECONDS) * 1000;

let position = 0;
const published = (nodeId: string, kid: string, atMs: number, signForMs = DAY): StoredEvent => ({
  position: ++position, streamId: `signing-key/${nodeId}`, streamType: 'signing-key', version: 1, type: 'SigningKeyPublished',
  data: { nodeId, jwk: { kty: 'EC', crv: 'P-256', x: 'x', y: 'y', kid, alg: 'ES256', use: 'sig' }, signUntil: new Date(atMs + signForMs).toISOString(), maxTokenLifetimeSeconds: LIFETIME },
  metadata: {}, at: new Date(atMs), idempotencyKey: null, prevHash: '', hash: '',
});

const kidsAt = (keys: LeashKeys, at: number) => keys.jwks(at).keys.map((k) => k.kid).sort();

describe('the JWKS projection', () => {
  it('keeps a superseded key for the longest token lifetime plus the largest leeway after its node published the next one', () => {
    const keys = new LeashKeys();
    keys.apply(published('n1', 'old', T0));
    keys.apply(published('n2', 'other', T0));
    expect(keys.signable('old', T0 + min)).toBe(true);
    const restart = T0 + 10 * min;
    keys.apply(published('n1', 'new', restart));
    expect(keys.signable('old', restart)).toBe(false); // its node has moved on
    expect(keys.signable('new', restart)).toBe(true);
    expect(kidsAt(keys, restart + KEPT_AFTER - 1)).toEqual(['new', 'old', 'other']);
    expect(kidsAt(keys, restart + KEPT_AFTER)).toEqual(['new', 'other']);
  });

  it('a node that dies without a successor: its key leaves once its signing period and then its tokens are over', () => {
    const keys = new LeashKeys();
    keys.apply(published('gone', 'k', T0, 60 * min));
    expect(keys.signable('k', T0 + 60 * min - 1)).toBe(true);
    expect(keys.signable('k', T0 + 60 * min)).toBe(false);
    expect(kidsAt(keys, T0 + 60 * min + KEPT_AFTER - 1)).toEqual(['k']);
    expect(kidsAt(keys, T0 + 60 * min + KEPT_AFTER)).toEqual([]);
  });

  it('keepUntil is the earlier of signUntil and the supersession, plus lifetime and leeway', () => {
    expect(keepUntil({ signUntil: T0 + DAY, supersededAt: T0 + min, maxTokenLifetimeSeconds: 60 })).toBe(T0 + min + (60 + MAX_CLOCK_SKEW_SECONDS) * 1000);
    expect(keepUntil({ signUntil: T0 + min, supersededAt: null, maxTokenLifetimeSeconds: 60 })).toBe(T0 + min + (60 + MAX_CLOCK_SKEW_SECONDS) * 1000);
  });

  it('keys whose tokens have all expired are dropped as the log is folded (a node restarting after a year folds no stale keys)', () => {
    const keys = new LeashKeys();
    keys.apply(published('n1', 'a', T0));
    keys.apply(published('n1', 'b', T0 + 365 * DAY));
    expect(kidsAt(keys, T0)).toEqual(['b']);
  });

  it('events of other streams are ignored', () => {
    const keys = new LeashKeys();
    keys.apply({ ...published('n1', 'a', T0), streamType: 'agent', streamId: 'agent/n1', type: 'AgentRegistered' });
    expect(kidsAt(keys, T0)).toEqual([]);
  });
});
