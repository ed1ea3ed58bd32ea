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

  get size(): number {
    return this.entries.size;
  }
}
