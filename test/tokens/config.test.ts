import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';

// The settings that reach token verification (through startNode → configureTokens).

describe('token settings in the configuration', () => {
  it('defaults: private URLs refused, at most 4 agents in a delegation chain', () => {
    expect(loadConfig({})).toMatchObject({ allowPrivateUrls: false, maxDelegationDepth: 4 });
  });

  it.each([['1', true], ['true', true], ['TRUE', true], ['0', false], ['false', false], ['', false]])('LEASH_ALLOW_PRIVATE_URLS=%j is %s', (value, expected) => {
    expect(loadConfig({ LEASH_ALLOW_PRIVATE_URLS: value }).allowPrivateUrls).toBe(expected);
  });

  it.each(['yes', 'on', '2'])('refuses LEASH_ALLOW_PRIVATE_URLS=%s rather than guess', (value) => {
    expect(() => loadConfig({ LEASH_ALLOW_PRIVATE_URLS: value })).toThrow(/LEASH_ALLOW_PRIVATE_URLS must be 1, true, 0 or false/);
  });

  it('takes LEASH_MAX_DELEGATION_DEPTH from 1 to 32', () => {
    expect(loadConfig({ LEASH_MAX_DELEGATION_DEPTH: '1' }).maxDelegationDepth).toBe(1);
    expect(loadConfig({ LEASH_MAX_DELEGATION_DEPTH: '32' }).maxDelegationDepth).toBe(32);
  });

  it.each(['0', '33', '2.5', 'deep', '-1'])('refuses LEASH_MAX_DELEGATION_DEPTH=%s', (value) => {
    expect(() => loadConfig({ LEASH_MAX_DELEGATION_DEPTH: value })).toThrow(/LEASH_MAX_DELEGATION_DEPTH must be a whole number of agents from 1 to 32/);
  });
});
