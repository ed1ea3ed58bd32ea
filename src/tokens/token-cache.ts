import { hash } from 'node:crypto';
import type { JWTPayload } from 'jose';
import { KeyIndex } from '../authz/key-index.ts';
import { readActChain } from './act-chain.ts';
import { tokenSettings } from './settings.ts';

type Claims = JWTPayload & Record<string, unknown>;

/** Tokens a node keeps verified: enough for every agent of a large node to keep its own. */
export const MAX_CACHED_TOKENS = 100_000;
/**
 * What they may add up to, counted in characters of the tokens: a token can be 16 KB, and what
 * a token says must cost bounded memory, so this bound, not the count, holds once tokens are
 * longer than 671 characters on average (4,096 of the largest tokens fill it).
 */
export const MAX_CACHED_TOKEN_CHARS = 64 * 2 ** 20;

/**
 * Signature and claim checks already passed, by token hash (never the raw token) and the
 * agent's stream version: any lifecycle change (rotate, revoke, suspend…) bumps the version,
 * so an entry can never outlive the pins it was verified against. Entries end at `exp`
 * (plus the agent's clock-skew leeway); the oldest go first when the cache is full, by count
 * or by the tokens' size.
 */
export class VerifiedTokenCache {
  private readonly entries = new Map<string, { claims: Claims; until: number; agents: string[]; chars: number }>();
  /** Entries by the agent they were verified for and by every agent in their `act` chain. */
  private readonly index = new KeyIndex();
  private chars = 0;

  /** Lookups answered from here, and those that were not (read by the metrics at scrape). */
  hits = 0;
  misses = 0;

  constructor(private readonly max = MAX_CACHED_TOKENS, private readonly maxChars = MAX_CACHED_TOKEN_CHARS) {}

  static key(token: string, agentId: string, agentVersion: number): string {
    return `${agentId}\u0000${agentVersion}\u0000${hash('sha256', token, 'base64url')}`;
  }

  get(key: string, nowMs: number): Claims | undefined {
    const hit = this.entries.get(key);
    if (!hit || hit.until <= nowMs) {
      if (hit) this.delete(key);
      this.misses++;
      return undefined;
    }
    this.hits++;
    return hit.claims;
  }

  /** `chars`: the token's length, what the entry counts for against the size bound. */
  set(key: string, claims: Claims, untilMs: number, chars: number): void {
    this.delete(key);
    if (chars > this.maxChars) return;
    while (this.entries.size > 0 && (this.entries.size >= this.max || this.chars + chars > this.maxChars)) this.delete(this.entries.keys().next().value!);
    const cut = key.indexOf('\u0000');
    const agents = [...new Set([cut < 0 ? key : key.slice(0, cut), ...chainOf(claims)])];
    this.entries.set(key, { claims, until: untilMs, agents, chars });
    this.chars += chars;
    for (const agent of agents) this.index.add(agent, key);
  }

  /**
   * Drops every entry for `agentId` and every token whose delegation chain (`act`) passes
   * through it: what a node does when that agent's state changes (SPEC §6). Entries for an
   * older version could never be used again anyway; this frees them at once, at the cost of
   * that agent's entries only.
   */
  forget(agentId: string): number {
    const keys = this.index.take(agentId);
    for (const key of keys) this.delete(key);
    return keys.length;
  }

  get size(): number {
    return this.entries.size;
  }

  /** The characters of the tokens held (what the size bound counts). */
  get tokenChars(): number {
    return this.chars;
  }

  private delete(key: string): void {
    const entry = this.entries.get(key);
    if (!entry) return;
    this.entries.delete(key);
    this.chars -= entry.chars;
    for (const agent of entry.agents) this.index.remove(agent, key);
  }
}

/**
 * The agents in the token's `act` chain (RFC 8693 nesting), the acting one first, read as
 * verification reads it. A chain that verification refuses (malformed, too deep) gives none:
 * such an entry only ever leads to a refusal, so no change of those agents need drop it.
 */
function chainOf(claims: Claims): string[] {
  const read = readActChain(claims, tokenSettings().maxDelegationDepth);
  if (!read.ok || claims.act === undefined) return [];
  return [read.acting!, ...read.chain];
}
