import { createHash } from 'node:crypto';
import type { JWTPayload } from 'jose';

type Claims = JWTPayload & Record<string, unknown>;

/**
 * Signature and claim checks already passed, by token hash (never the raw token) and the
 * agent's stream version: any lifecycle change (rotate, revoke, suspend…) bumps the version,
 * so an entry can never outlive the pins it was verified against. Entries end at `exp`
 * (plus the agent's clock-skew leeway); the oldest go first when the cache is full.
 */
export class VerifiedTokenCache {
  private readonly entries = new Map<string, { claims: Claims; until: number }>();

  constructor(private readonly max = 10_000) {}

  static key(token: string, agentId: string, agentVersion: number): string {
    return `${agentId}\u0000${agentVersion}\u0000${createHash('sha256').update(token).digest('base64url')}`;
  }

  get(key: string, nowMs: number): Claims | undefined {
    const hit = this.entries.get(key);
    if (!hit) return undefined;
    if (hit.until <= nowMs) {
      this.entries.delete(key);
      return undefined;
    }
    return hit.claims;
  }

  set(key: string, claims: Claims, untilMs: number): void {
    if (this.entries.size >= this.max) this.entries.delete(this.entries.keys().next().value!);
    this.entries.set(key, { claims, until: untilMs });
  }

  /**
   * Drops every entry for `agentId` and every token whose delegation chain (`act`) passes
   * through it: what a node does when that agent's state changes (SPEC §6). Entries for an
   * older version could never be used again anyway; this frees them at once.
   */
  forget(agentId: string): number {
    let dropped = 0;
    const prefix = `${agentId}\u0000`;
    for (const [key, { claims }] of this.entries) {
      if (key.startsWith(prefix) || actsThrough(claims, agentId)) {
        this.entries.delete(key);
        dropped++;
      }
    }
    return dropped;
  }

  get size(): number {
    return this.entries.size;
  }
}

/** Whether `agentId` is anywhere in the token's `act` chain (RFC 8693 nesting). */
function actsThrough(claims: Claims, agentId: string): boolean {
  let act = claims.act as Record<string, unknown> | undefined;
  for (let depth = 0; act && typeof act === 'object' && depth < 16; depth++) {
    if (act.sub === agentId) return true;
    act = act.act as Record<string, unknown> | undefined;
  }
  return false;
}
