import type { StoredEvent } from '../store/event-store.ts';
import { MAX_CLOCK_SKEW_SECONDS } from './pins.ts';
import { REVOKED_TOKEN_STREAM_TYPE, TOKEN_REVOKED_EVENT, type TokenRevoked } from './revoked-token-stream.ts';

// The jtis of revoked Leash tokens, folded from `TokenRevoked` events. Memory stays bounded: a
// revocation is kept only while its token could still be accepted somewhere, its `exp` plus
// the largest leeway pins allow; past that the token is refused as expired anyway.

const PRUNE_EVERY_MS = 60_000;

export class RevokedTokens {
  /** jti → until when it must be remembered (ms) and the log position of its revocation. */
  private readonly revoked = new Map<string, { until: number; position: number }>();
  private prunedAt = 0;

  apply(e: StoredEvent): void {
    if (e.streamType !== REVOKED_TOKEN_STREAM_TYPE || e.type !== TOKEN_REVOKED_EVENT) return;
    const { jti, exp } = (e as StoredEvent<TokenRevoked['data']>).data;
    const at = e.at.getTime();
    const until = (exp + MAX_CLOCK_SKEW_SECONDS) * 1000;
    if (until > at) this.revoked.set(jti, { until, position: e.position });
    if (at - this.prunedAt >= PRUNE_EVERY_MS) this.prune(at);
  }

  /** The log position of the jti's revocation, or undefined when it is not (or no longer need be) revoked. */
  positionOf(jti: string, nowMs: number): number | undefined {
    if (nowMs - this.prunedAt >= PRUNE_EVERY_MS) this.prune(nowMs); // also when no event comes for a while
    const hit = this.revoked.get(jti);
    if (!hit) return undefined;
    if (hit.until <= nowMs) {
      this.revoked.delete(jti);
      return undefined;
    }
    return hit.position;
  }

  has(jti: string, nowMs: number): boolean {
    return this.positionOf(jti, nowMs) !== undefined;
  }

  /** Forgets every revocation whose token has expired by `nowMs`. */
  prune(nowMs: number): number {
    this.prunedAt = nowMs;
    let n = 0;
    for (const [jti, { until }] of this.revoked) if (until <= nowMs && this.revoked.delete(jti)) n++;
    return n;
  }

  get size(): number {
    return this.revoked.size;
  }
}
