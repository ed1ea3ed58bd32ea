import { errors, importJWK, type JWTVerifyGetKey } from 'jose';
import type { StoredEvent } from '../store/event-store.ts';
import { MAX_CLOCK_SKEW_SECONDS } from './pins.ts';
import { SIGNING_KEY_PUBLISHED, SIGNING_KEY_STREAM_TYPE, type PublicSigningJwk, type SigningKeyPublished } from './signing-key-stream.ts';

// Leash's JWKS: the public keys of every node, folded from `SigningKeyPublished` events, so
// every node (and a node that restarts) knows every key any node may have signed with.

interface KeyEntry {
  jwk: PublicSigningJwk;
  nodeId: string;
  publishedAt: number;
  signUntil: number;
  maxTokenLifetimeSeconds: number;
  /** When its node published its next key (a restart or a rotation); null while it is the newest. */
  supersededAt: number | null;
  imported?: Promise<Awaited<ReturnType<typeof importJWK>>>;
}

/**
 * When a key may leave the JWKS (ms since the epoch): once every token it may have signed has
 * expired. A key signs from its publication until it is retired, at its `signUntil` or when
 * its node publishes a newer key, whichever comes first. A token signed at the last instant
 * lives at most `maxTokenLifetimeSeconds` and is accepted for up to MAX_CLOCK_SKEW_SECONDS (the
 * largest leeway pins can give) past its `exp`. So:
 *
 *   keepUntil = min(signUntil, supersededAt) + (maxTokenLifetimeSeconds + MAX_CLOCK_SKEW_SECONDS) s
 */
export function keepUntil(entry: Pick<KeyEntry, 'signUntil' | 'supersededAt' | 'maxTokenLifetimeSeconds'>): number {
  const retiredAt = Math.min(entry.signUntil, entry.supersededAt ?? Number.POSITIVE_INFINITY);
  return retiredAt + (entry.maxTokenLifetimeSeconds + MAX_CLOCK_SKEW_SECONDS) * 1000;
}

/** An unknown `kid` reads the log again at most this often (a key published on another node a moment ago). */
export const REFRESH_COOLDOWN_MS = 1_000;

export class LeashKeys {
  private readonly keys = new Map<string, KeyEntry>();
  /** Node id → the kid of its newest key. */
  private readonly newest = new Map<string, string>();
  private refreshedAt = 0;
  private refresh: () => Promise<void> = async () => {};

  /** How to catch up with the log when a token names a key this view does not know (the node's follower). */
  onUnknownKey(refresh: () => Promise<void>): void {
    this.refresh = refresh;
  }

  apply(e: StoredEvent): void {
    if (e.streamType !== SIGNING_KEY_STREAM_TYPE || e.type !== SIGNING_KEY_PUBLISHED) return;
    const { nodeId, jwk, signUntil, maxTokenLifetimeSeconds } = (e as StoredEvent<SigningKeyPublished['data']>).data;
    const at = e.at.getTime();
    const previous = this.newest.get(nodeId);
    const superseded = previous === undefined ? undefined : this.keys.get(previous);
    if (superseded) superseded.supersededAt = at;
    this.keys.set(jwk.kid, { jwk, nodeId, publishedAt: at, signUntil: Date.parse(signUntil), maxTokenLifetimeSeconds, supersededAt: null });
    this.newest.set(nodeId, jwk.kid);
    // Keys whose tokens have all expired by this event's time are of no use to anyone now.
    for (const [kid, entry] of this.keys) if (keepUntil(entry) <= at) this.keys.delete(kid);
  }

  /** The JWKS document: every key some token that has not expired may have been signed with. */
  jwks(now = Date.now()): { keys: PublicSigningJwk[] } {
    return { keys: [...this.keys.values()].filter((k) => keepUntil(k) > now).map((k) => k.jwk) };
  }

  /** May a node sign with this key now: known here, the newest of its node, and before its `signUntil`? */
  signable(kid: string, now = Date.now()): boolean {
    const entry = this.keys.get(kid);
    return entry !== undefined && entry.supersededAt === null && now < entry.signUntil;
  }

  /** For jose's `jwtVerify`: the key the token's header names, if it is in the JWKS. */
  readonly getKey: JWTVerifyGetKey = async (header) => {
    const kid = header.kid;
    if (typeof kid !== 'string' || header.alg !== 'ES256') throw new errors.JWKSNoMatchingKey();
    let entry = this.usable(kid);
    if (!entry && Date.now() - this.refreshedAt >= REFRESH_COOLDOWN_MS) {
      this.refreshedAt = Date.now();
      await this.refresh().catch(() => {});
      entry = this.usable(kid);
    }
    if (!entry) throw new errors.JWKSNoMatchingKey();
    return (entry.imported ??= importJWK(entry.jwk, 'ES256'));
  };

  private usable(kid: string): KeyEntry | undefined {
    const entry = this.keys.get(kid);
    return entry && keepUntil(entry) > Date.now() ? entry : undefined;
  }
}
