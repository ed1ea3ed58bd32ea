import { hash } from 'node:crypto';
import { canonicalJson } from '../canonical-json.ts';
import type { StoredEvent } from './event-store.ts';

/** The hash the first event of the log chains to. */
export const GENESIS_HASH = '0'.repeat(64);

type Hashed = Omit<StoredEvent, 'hash' | 'prevHash'>;

/** sha-256 over the previous hash and the canonical form of the event (position included). */
export function eventHash(prevHash: string, e: Hashed): string {
  return chainHash(prevHash, eventBody(e));
}

/** How every chain links: sha-256 over the previous hash, a newline and the record's canonical body. */
export function chainHash(prevHash: string, body: string): string {
  return hash('sha256', `${prevHash}\n${body}`, 'hex');
}

/** The canonical form of an event that its hash covers. */
export function eventBody(e: Hashed): string {
  return canonicalJson({
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
}

export type LinkCheck =
  | { ok: true; at: number; hash: string }
  /** `after`: the last record that passed (0 before the first). */
  | { ok: false; at: number; after: number; reason: 'position_gap' | 'broken_link' | 'hash_mismatch' };

/**
 * Any hash chain (events by position, decisions by sequence number): each record is numbered
 * one after the one before, links to its hash, and its own hash matches its content. The first
 * record that fails is named, with what failed. `start` is where the run continues from.
 */
export function checkChain<R extends { prevHash: string; hash: string }>(
  records: Iterable<R>,
  key: (r: R) => number,
  recompute: (r: R) => string,
  start: { at: number; hash: string },
): LinkCheck {
  let { at, hash } = start;
  for (const r of records) {
    if (key(r) !== at + 1) return { ok: false, at: key(r), after: at, reason: 'position_gap' };
    if (r.prevHash !== hash) return { ok: false, at: key(r), after: at, reason: 'broken_link' };
    if (recompute(r) !== r.hash) return { ok: false, at: key(r), after: at, reason: 'hash_mismatch' };
    at = key(r);
    hash = r.hash;
  }
  return { ok: true, at, hash };
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
  const c = checkChain(events, (e) => e.position, (e) => eventHash(e.prevHash, e), { at: start.position, hash: start.hash });
  return c.ok ? { ok: true, lastPosition: c.at, lastHash: c.hash } : { ok: false, position: c.at, reason: c.reason };
}
