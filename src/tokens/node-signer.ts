import { calculateJwkThumbprint, exportJWK, generateKeyPair, SignJWT, type JWTPayload } from 'jose';
import type { LeashKeys } from './leash-keys.ts';
import { publicMembers, type SigningKeyPublished } from './signing-key-stream.ts';

// This node's own signing key. Generated at start (and again before it reaches its
// `signUntil`), its public half published as an event; the private half is a non-extractable
// CryptoKey held in a private field: it cannot be exported, and nothing ever writes it down,
// logs or serialises it.

/** Access tokens live this long (and never longer than the agent's `maxTokenLifetimeSeconds`). */
export const ACCESS_TOKEN_SECONDS = 300;

/** A key signs for at most this long, so a node that dies leaves a key that leaves the JWKS a day later. */
export const KEY_SIGNING_PERIOD_MS = 24 * 60 * 60_000;
/** A node moves to a new key this long before its current one's `signUntil`. */
const ROTATE_AHEAD_MS = 60 * 60_000;
const RETRY_MS = 30_000;

export interface NodeSignerOptions {
  nodeId: string;
  /** Appends the key's event and returns once this node's projection has applied it. */
  publish: (data: SigningKeyPublished['data'], now: Date) => Promise<void>;
  keys: LeashKeys;
  log: (fields: Record<string, unknown>, message: string) => void;
  periodMs?: number;
}

type PrivateKey = Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];

export class NodeSigner {
  #current: { kid: string; privateKey: PrivateKey; signUntil: number } | null = null;
  #timer: NodeJS.Timeout | null = null;
  #stopped = false;
  #warned = '';

  constructor(private readonly options: NodeSignerOptions) {}

  /** The id of the key this node signs with now (null before it has one). */
  get kid(): string | null {
    return this.#current?.kid ?? null;
  }

  /** Generates and publishes a new key, then signs with it; schedules the next rotation. */
  async rotate(now = new Date()): Promise<void> {
    const periodMs = this.options.periodMs ?? KEY_SIGNING_PERIOD_MS;
    // Not extractable: only the public key can be exported (jose always lets it be).
    const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: false });
    const exported = await exportJWK(publicKey);
    const kid = await calculateJwkThumbprint(exported);
    const signUntil = now.getTime() + periodMs;
    await this.options.publish({ nodeId: this.options.nodeId, jwk: publicMembers(exported, kid), signUntil: new Date(signUntil).toISOString(), maxTokenLifetimeSeconds: ACCESS_TOKEN_SECONDS }, now);
    this.#current = { kid, privateKey, signUntil };
    this.schedule(Math.max(periodMs - ROTATE_AHEAD_MS, periodMs / 2));
  }

  /**
   * Signs an access token (RFC 9068 header) with this node's key; null when it has no key it
   * may sign with: past its `signUntil` (rotation kept failing), or no longer its node's newest
   * key in the log (another process started with this node's id). `typ`: what else it signs
   * (an approval notice).
   */
  async sign(claims: JWTPayload, now = new Date(), typ = 'at+jwt'): Promise<string | null> {
    const key = this.#current;
    if (!key || now.getTime() >= key.signUntil || !this.options.keys.signable(key.kid, now.getTime())) {
      if (key && this.#warned !== key.kid) {
        this.#warned = key.kid;
        this.options.log({ nodeId: this.options.nodeId, kid: key.kid }, 'this node\'s signing key is no longer usable (past its signUntil, or another process published a key under this node id); no tokens are issued here');
      }
      return null;
    }
    return new SignJWT(claims).setProtectedHeader({ alg: 'ES256', typ, kid: key.kid }).sign(key.privateKey);
  }

  stop(): void {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
  }

  /** What a log line or an accidental serialisation shows: never the key. */
  toJSON(): { nodeId: string; kid: string | null } {
    return { nodeId: this.options.nodeId, kid: this.kid };
  }

  private schedule(ms: number): void {
    if (this.#stopped) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.rotate().catch((err: Error) => {
        this.options.log({ err: err.message }, 'signing key rotation failed; retrying');
        this.schedule(RETRY_MS);
      });
    }, ms);
    this.#timer.unref();
  }
}
