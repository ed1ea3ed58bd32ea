import type { CedarEntity, EntityUid } from '../registry/cedar-entities.ts';
import { actionUid, entityKey } from './engine.ts';

// A token's RFC 9396 `authorization_details`, read as Leash's built-in entry type:
//   {"type": "leash:cedar", "actions": ["read"], "resource": {"type": "Document", "id": "d1"}}
// or "resourceIn" instead of "resource" (the target and everything under it). The token is
// the agent's (or an attacker's) to write, so everything in it is bounded: the entries, the
// distinct (target, action) pairs the ceiling is asked about, and the shape of each target.

export interface CedarDetail {
  type: 'leash:cedar';
  actions: string[];
  /** The same actions as Cedar uids (read once with the token, not at every decision). */
  actionUids: EntityUid[];
  resource?: EntityUid;
  resourceIn?: EntityUid;
}

/** At most this many entries, and this many distinct (target, action) pairs over all of them. */
export const MAX_DETAIL_ENTRIES = 32;
export const MAX_DETAIL_PAIRS = 32;

const ENTITY_TYPE = /^[A-Za-z_][A-Za-z0-9_]*(::[A-Za-z_][A-Za-z0-9_]*)*$/;
const MAX_NAME = 1024;

export type ParsedDetails = { ok: true; details: CedarDetail[]; pairs: { target: EntityUid; action: string }[] } | { ok: false; code: 'DETAILS_MISSING' | 'DETAILS_MALFORMED' | 'DETAILS_UNSUPPORTED_TYPE'; detail: string };

const malformed = (detail: string): ParsedDetails => ({ ok: false, code: 'DETAILS_MALFORMED', detail });

/** A target is exactly `{type, id}`: a Cedar entity type and a bounded id, nothing nested. */
function targetOf(v: unknown): EntityUid | null {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return null;
  const { type, id, ...rest } = v as Record<string, unknown>;
  if (Object.keys(rest).length > 0) return null;
  if (typeof type !== 'string' || type.length > 256 || !ENTITY_TYPE.test(type)) return null;
  if (typeof id !== 'string' || id.length > MAX_NAME) return null;
  return { type, id };
}

const parsedDetails = new WeakMap<object, ParsedDetails>();

/** The token's details, read once per verified token (the claims object is cached with it). */
export function detailsOf(raw: unknown): ParsedDetails {
  if (typeof raw !== 'object' || raw === null) return parseDetails(raw);
  let parsed = parsedDetails.get(raw);
  if (!parsed) parsedDetails.set(raw, (parsed = parseDetails(raw)));
  return parsed;
}

function parseDetails(raw: unknown): ParsedDetails {
  if (raw === undefined) return { ok: false, code: 'DETAILS_MISSING', detail: 'the token has no authorization_details' };
  if (!Array.isArray(raw) || raw.length === 0) return malformed('authorization_details must be a non-empty array');
  if (raw.length > MAX_DETAIL_ENTRIES) return malformed(`authorization_details has more than ${MAX_DETAIL_ENTRIES} entries`);
  const details: CedarDetail[] = [];
  const pairs = new Map<string, { target: EntityUid; action: string }>();
  for (const d of raw as unknown[]) {
    if (typeof d !== 'object' || d === null || Array.isArray(d)) return malformed('an authorization_details entry is not an object');
    const entry = d as Record<string, unknown>;
    // An entry Leash cannot read cannot be shown to lie within the ceiling: refuse the token.
    if (entry.type !== 'leash:cedar') return { ok: false, code: 'DETAILS_UNSUPPORTED_TYPE', detail: 'an entry is not of type leash:cedar' };
    const actions = entry.actions;
    if (!Array.isArray(actions) || actions.length === 0) return malformed('an entry needs a non-empty actions array');
    if (!actions.every((a) => typeof a === 'string' && a.length > 0 && a.length <= MAX_NAME)) return malformed('an entry\'s actions must be action names');
    if ((entry.resource === undefined) === (entry.resourceIn === undefined)) return malformed('an entry needs exactly one of resource or resourceIn');
    const target = targetOf(entry.resource ?? entry.resourceIn);
    if (!target) return malformed('an entry\'s target must be {"type": <Cedar entity type>, "id": <string>} and nothing else');
    const unique = [...new Set(actions as string[])];
    for (const action of unique) {
      const key = `${entityKey(target)}\n${action}`;
      if (!pairs.has(key)) pairs.set(key, { target, action });
      if (pairs.size > MAX_DETAIL_PAIRS) return malformed(`authorization_details names more than ${MAX_DETAIL_PAIRS} (target, action) pairs`);
    }
    details.push({ type: 'leash:cedar', actions: unique, actionUids: unique.map(actionUid), ...(entry.resource !== undefined ? { resource: target } : { resourceIn: target }) });
  }
  return { ok: true, details, pairs: [...pairs.values()] };
}

/** Keys of every entity reachable through `uid`'s parents in this request's entities (not itself). */
export function ancestorsOf(entities: Map<string, CedarEntity>, uid: EntityUid): Set<string> {
  const seen = new Set<string>();
  const pending = [...(entities.get(entityKey(uid))?.parents ?? [])];
  while (pending.length > 0) {
    const k = entityKey(pending.pop()!);
    if (seen.has(k)) continue;
    seen.add(k);
    pending.push(...(entities.get(k)?.parents ?? []));
  }
  return seen;
}

/** Is `ancestor` the entity itself or reachable through its parents in this request's entities? */
export function within(entities: Map<string, CedarEntity>, uid: EntityUid, ancestor: EntityUid): boolean {
  return entityKey(uid) === entityKey(ancestor) || ancestorsOf(entities, uid).has(entityKey(ancestor));
}
