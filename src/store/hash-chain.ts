import { createHash } from 'node:crypto';
import { canonicalJson } from '../canonical-json.ts';
import type { StoredEvent } from './event-store.ts';

/** The hash the first event of the log chains to. */
export const GENESIS_HASH = '0'.repeat(64);

type Hashed = Omit<StoredEvent, 'hash' | 'prevHash'>;

/** sha-256 over the previous hash and the canonical form of the event (position included). */
export function eventHash(prevHash: string, e: Hashed): string {
  const body = canonicalJson({
    position: e.position,
    streamId: e.streamId,
    streamType: e.streamType,
    version: e.version,
    type: e.type,
    data: e.data,
    metadata: e.metadata,
    at: e.at.toISOString(),
    idempotencyKey: e.idempotencyKey,
  });
  return createHash('sha256').update(prevHash).update('\n').update(body).digest('hex');
}

export type ChainCheck =
  | { ok: true; lastPosition: number; lastHash: string }
  | { ok: false; position: number; reason: 'hash_mismatch' | 'broken_link' | 'position_gap' };

/**
 * Checks a run of consecutive events: each links to the one before, positions have no
 * gap, and each hash matches its content. Detects edited, deleted and reordered events.
 */
export function verifyChain(
  events: Iterable<StoredEvent>,
  start: { position: number; hash: string } = { position: 0, hash: GENESIS_HASH },
): ChainCheck {
  let { position, hash } = start;
  for (const e of events) {
    if (e.position !== position + 1) return { ok: false, position: e.position, reason: 'position_gap' };
    if (e.prevHash !== hash) return { ok: false, position: e.position, reason: 'broken_link' };
    if (eventHash(e.prevHash, e) !== e.hash) return { ok: false, position: e.position, reason: 'hash_mismatch' };
    position = e.position;
    hash = e.hash;
  }
  return { ok: true, lastPosition: position, lastHash: hash };
}
