import { contextEntitiesCost, type EvaluationRequest } from '../../authz/engine.ts';
import { APPROVAL_ID } from '../../approvals/gate.ts';
import { LeashError } from '../../errors.ts';

// What one call to the decision API may ask for, checked before anything is decided: the log
// space its records would take, the work its entities would cost, the shape of what it names.

/** `context.approvalId`, when given, is an approval's id: a string, not anything else. */
export function checkApprovalIds(requests: EvaluationRequest[]): void {
  for (const r of requests) {
    const id = r.context?.[APPROVAL_ID];
    if (id !== undefined && (typeof id !== 'string' || id.length === 0 || id.length > 64)) {
      throw new LeashError('VALIDATION_FAILED', `/context/${APPROVAL_ID} must be the id of an approval (a string of at most 64 characters)`);
    }
  }
}

/** What one request may add to the decision log, in bytes of JSON (its records' requests). */
export const MAX_LOG_BYTES_PER_REQUEST = 2 * 1024 * 1024;

/**
 * Every item of a batch is its own record. A shared context is recorded once, but each record
 * holds its subject, action and resource: a 44 KB subject shared by 1,000 empty items would
 * write 44 MB for a 45 KB request. Refused up front (nothing decided, nothing written).
 */
export function checkLogBytes(requests: EvaluationRequest[]): void {
  const sizes = new Map<unknown, number>();
  const sizeOf = (v: unknown) => {
    if (v === undefined) return 0;
    let n = sizes.get(v);
    if (n === undefined) sizes.set(v, (n = Buffer.byteLength(JSON.stringify(v))));
    return n;
  };
  let total = 0;
  const counted = new Set<unknown>();
  for (const r of requests) {
    // A context object shared by items is recorded once (see decideAndRecord); the rest per item.
    total += sizeOf(r.subject) + sizeOf(r.action) + sizeOf(r.resource) + (counted.has(r.context) ? 64 : sizeOf(r.context));
    counted.add(r.context);
    if (total > MAX_LOG_BYTES_PER_REQUEST) {
      throw new LeashError('PAYLOAD_TOO_LARGE', `this batch would write more than ${MAX_LOG_BYTES_PER_REQUEST} bytes to the decision log (every item is recorded with its subject, action, resource and context); split it, or send less context`);
    }
  }
}

/** Items × what their entities cost each Cedar call (see contextEntitiesCost), per batch. */
export const MAX_BATCH_WORK = 20_000;

/**
 * A batch shares its context among its items, so a deep hierarchy of entities in 6 KB could
 * cost every one of 1,000 items a slow Cedar call (seen: 3.7 s of CPU for one request).
 * Refused whole, before anything is decided.
 */
export function checkBatchWork(requests: EvaluationRequest[]): void {
  const costs = new Map<unknown, number>();
  let work = 0;
  for (const r of requests) {
    const extra = r.context?.entities;
    let cost = costs.get(extra);
    if (cost === undefined) costs.set(extra, (cost = contextEntitiesCost(extra)));
    work += 1 + cost;
    if (work > MAX_BATCH_WORK) {
      throw new LeashError('VALIDATION_FAILED', `this batch asks for too much work (items × the entities and parent links each reads, over ${MAX_BATCH_WORK}); split it, or send fewer entities`);
    }
  }
}

/** Each evaluation needs a subject, action and resource, from itself or the defaults. */
export function complete(r: Partial<EvaluationRequest>): EvaluationRequest {
  const missing = (['subject', 'action', 'resource'] as const).filter((k) => r[k] === undefined);
  if (missing.length > 0) {
    throw new LeashError('VALIDATION_FAILED', `an evaluation lacks ${missing.join(', ')} (in the item or at the top level)`);
  }
  return r as EvaluationRequest;
}
