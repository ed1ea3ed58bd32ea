import { afterEach, describe, expect, it } from 'vitest';
import { actors, readActChain } from '../../src/tokens/act-chain.ts';
import { configureTokens } from '../../src/tokens/settings.ts';
import { VerifiedTokenCache } from '../../src/tokens/token-cache.ts';
import { recordedTokenVerifier, verifyAgentToken, type TokenCheck } from '../../src/tokens/verify.ts';
import { agent, mint, nowSeconds, registryOf } from './harness.ts';

// Claims that are each well formed but do not add up, and delegation chains (`act`, RFC 8693)
// that are malformed or too long: refused with a stable code, never read as far as they go.
// Past the signature, a refusal keeps the claims (the decision log shows them, replay
// decides them again), and replay comes to the same answer.

afterEach(() => configureTokens());

const registry = registryOf(agent('bot'));
const verify = async (claims: Record<string, unknown>, cache?: VerifiedTokenCache) => verifyAgentToken(await mint(claims), 'bot', registry, new Date(), cache);
/** What replay makes of the claims a decision recorded. */
const replayed = (check: TokenCheck) => recordedTokenVerifier(check.ok ? null : check.code)({ claims: check.claims }, 'bot', registry, new Date());

/** `{act: {sub: agents[0], act: {sub: agents[1], …}}}` */
const chainOf = (agents: string[]): Record<string, unknown> | undefined => (agents.length === 0 ? undefined : { sub: agents[0], ...(agents.length > 1 ? { act: chainOf(agents.slice(1)) } : {}) });

describe('time claims', () => {
  it('exp before iat is TOKEN_LIFETIME_INVALID (it used to pass: exp - iat is below any maximum)', async () => {
    const iat = nowSeconds() + 10; // within the 30 s leeway, so not "issued in the future"
    const check = await verify({ sub: 'bot', iat, exp: iat - 5 });
    expect(check).toMatchObject({ ok: false, code: 'TOKEN_LIFETIME_INVALID', claims: { sub: 'bot', iat, exp: iat - 5 } });
    expect(await replayed(check)).toMatchObject({ ok: false, code: 'TOKEN_LIFETIME_INVALID' });
  });

  it('exp equal to iat is a zero lifetime, not a contradiction', async () => {
    const iat = nowSeconds();
    expect(await verify({ sub: 'bot', iat, exp: iat })).toMatchObject({ ok: true }); // within the leeway
  });

  it('iat (or nbf) that is not a number is TOKEN_MALFORMED, not TOKEN_NOT_YET_VALID', async () => {
    expect(await verify({ sub: 'bot', iat: String(nowSeconds()) })).toMatchObject({ ok: false, code: 'TOKEN_MALFORMED', detail: 'iat is not a number' });
    expect(await verify({ sub: 'bot', nbf: 'yesterday' })).toMatchObject({ ok: false, code: 'TOKEN_MALFORMED', detail: 'nbf is not a number' });
    // What the codes are for stays: a future iat or nbf is not yet valid.
    expect(await verify({ sub: 'bot', iat: nowSeconds() + 120, exp: nowSeconds() + 180 })).toMatchObject({ code: 'TOKEN_NOT_YET_VALID' });
    expect(await verify({ sub: 'bot', nbf: nowSeconds() + 120 })).toMatchObject({ code: 'TOKEN_NOT_YET_VALID' });
  });
});

describe('a malformed act claim', () => {
  it.each<[string, Record<string, unknown>]>([
    ['act null', { sub: 'bot', act: null }],
    ['act an array', { sub: 'bot', act: [{ sub: 'bot' }] }],
    ['act a string', { sub: 'alice', act: 'bot' }],
    ['act without sub', { sub: 'bot', act: {} }],
    ['act.sub empty', { sub: 'bot', act: { sub: '' } }],
    ['act.sub a number', { sub: 'bot', act: { sub: 7 } }],
    ['a nested act that is not an object', { sub: 'alice', act: { sub: 'bot', act: 'bot-parent' } }],
    ['a nested act that is null', { sub: 'alice', act: { sub: 'bot', act: null } }],
    ['a nested act that is an array', { sub: 'alice', act: { sub: 'bot', act: [] } }],
    ['a nested sub that is not a string', { sub: 'alice', act: { sub: 'bot', act: { sub: 5 } } }],
    ['a deeper sub that is missing', { sub: 'alice', act: { sub: 'bot', act: { sub: 'p1', act: { iss: 'x' } } } }],
  ])('%s is TOKEN_MALFORMED, with the claims kept, in replay too', async (_name, claims) => {
    const check = await verify(claims);
    expect(check).toMatchObject({ ok: false, code: 'TOKEN_MALFORMED', detail: expect.stringMatching(/^act/), claims, agentVersion: 2 });
    expect(await replayed(check)).toMatchObject({ ok: false, code: 'TOKEN_MALFORMED', claims });
  });

  it('the cache does not change the answer', async () => {
    const cache = new VerifiedTokenCache();
    const token = await mint({ sub: 'alice', act: { sub: 'bot', act: { sub: 5 } } });
    for (let i = 0; i < 2; i++) expect(await verifyAgentToken(token, 'bot', registry, new Date(), cache)).toMatchObject({ code: 'TOKEN_MALFORMED' });
  });
});

describe('delegation depth (LEASH_MAX_DELEGATION_DEPTH, default 4 agents, the acting one included)', () => {
  it('up to 4 agents pass; a fifth is DELEGATION_TOO_DEEP with the claims kept, in replay too', async () => {
    const four = await verify({ sub: 'alice', act: chainOf(['bot', 'p1', 'p2', 'p3']) });
    expect(four).toMatchObject({ ok: true, actingAgent: 'bot', onBehalfOf: 'alice', chain: ['p1', 'p2', 'p3'] });
    const claims = { sub: 'alice', act: chainOf(['bot', 'p1', 'p2', 'p3', 'p4']) };
    const five = await verify(claims);
    expect(five).toMatchObject({ ok: false, code: 'DELEGATION_TOO_DEEP', detail: 'the delegation chain has more than 4 agents', claims });
    expect(await replayed(five)).toMatchObject({ ok: false, code: 'DELEGATION_TOO_DEEP' });
  });

  it('a chain past the old silent cut-off of 16 is refused, not truncated', async () => {
    const agents = ['bot', ...Array.from({ length: 19 }, (_, i) => `p${i}`)];
    expect(await verify({ sub: 'alice', act: chainOf(agents) })).toMatchObject({ ok: false, code: 'DELEGATION_TOO_DEEP' });
  });

  it('follows the configured bound', async () => {
    configureTokens({ maxDelegationDepth: 2 });
    expect(await verify({ sub: 'alice', act: chainOf(['bot', 'p1']) })).toMatchObject({ ok: true, chain: ['p1'] });
    expect(await verify({ sub: 'alice', act: chainOf(['bot', 'p1', 'p2']) })).toMatchObject({ ok: false, code: 'DELEGATION_TOO_DEEP', detail: 'the delegation chain has more than 2 agents' });
    configureTokens({ maxDelegationDepth: 1 });
    expect(await verify({ sub: 'alice', act: { sub: 'bot' } })).toMatchObject({ ok: true, actingAgent: 'bot', chain: [] });
    expect(await verify({ sub: 'bot' })).toMatchObject({ ok: true, actingAgent: 'bot' });
    expect(() => configureTokens({ maxDelegationDepth: 0 })).toThrow(/maxDelegationDepth/);
  });
});

describe('reading the chain', () => {
  it('counts agents: the acting one and those above it; never the human in sub', () => {
    expect(readActChain({ sub: 'bot' }, 1)).toEqual({ ok: true, acting: 'bot', onBehalfOf: null, chain: [] });
    expect(readActChain({ sub: 'alice', act: { sub: 'bot' } }, 1)).toEqual({ ok: true, acting: 'bot', onBehalfOf: 'alice', chain: [] });
    expect(readActChain({ sub: 'alice', act: chainOf(['bot', 'p1']) }, 1)).toMatchObject({ ok: false, code: 'DELEGATION_TOO_DEEP' });
    // Past the bound nothing is read: a malformed level beyond it does not change the answer.
    expect(readActChain({ sub: 'alice', act: { sub: 'bot', act: { sub: 'p1', act: 42 } } }, 2)).toMatchObject({ code: 'DELEGATION_TOO_DEEP' });
    expect(readActChain({ sub: 'alice', act: { sub: 'bot', act: { sub: 'p1', act: 42 } } }, 3)).toMatchObject({ code: 'TOKEN_MALFORMED', detail: 'act.act.act is not an object' });
  });

  it('shows a refused chain as far as it is well formed (the audit trace of a recorded refusal)', () => {
    expect(actors({ sub: 'alice', act: { sub: 'bot', act: { sub: 'p1', act: { sub: 5 } } } })).toEqual({ acting: 'bot', onBehalfOf: 'alice', chain: ['p1'] });
    expect(actors({ sub: 'alice', act: chainOf(['bot', 'p1', 'p2', 'p3', 'p4', 'p5']) })).toEqual({ acting: 'bot', onBehalfOf: 'alice', chain: ['p1', 'p2', 'p3', 'p4', 'p5'] });
    expect(actors({ sub: 'bot' })).toEqual({ acting: 'bot', onBehalfOf: null, chain: [] });
  });
});
