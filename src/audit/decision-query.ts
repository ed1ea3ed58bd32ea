import { sql, type Kysely } from 'kysely';
import type { Database } from '../store/events.table.ts';

// The decision log as an operator browses it: newest first, filtered by agent, outcome and
// time, a page at a time (keyset: each page ends with the sequence number the next starts
// below, so a page costs the same however deep it is). Only what the database holds: decisions
// moved to an archive are read with `leash audit` from there.

export interface DecisionFilter {
  /** The subject's id (an agent's, or a person's for their admin calls). */
  agent?: string;
  decision?: boolean;
  /** Recorded at or after / before. */
  since?: Date;
  until?: Date;
  /** Only decisions with a sequence number below this (the previous page's `next`). */
  before?: number;
  limit: number;
}

export interface DecisionSummary {
  id: string;
  seq: number;
  at: string;
  nodeId: string;
  subject: { type: string; id: string } | null;
  action: string | null;
  resource: { type: string; id: string } | null;
  decision: boolean;
  layer: string;
  code: string | null;
  reasons: string[];
  policyVersion: number;
}

const ref = (x: unknown): { type: string; id: string } | null => {
  const { type, id } = (x ?? {}) as { type?: unknown; id?: unknown };
  return typeof type === 'string' && typeof id === 'string' ? { type, id } : null;
};

/** One page, newest first, and where the next one starts (null: none left). */
export async function listDecisions(db: Kysely<Database>, f: DecisionFilter): Promise<{ decisions: DecisionSummary[]; next: number | null }> {
  let q = db.selectFrom('decisions')
    .select(['id', 'seq', 'recorded_at', 'node_id', 'decision', 'layer', 'code', 'reasons', 'policy_version'])
    .select([
      sql<unknown>`request -> 'subject'`.as('subject'),
      sql<unknown>`request #>> '{action,name}'`.as('action'),
      sql<unknown>`request -> 'resource'`.as('resource'),
    ]);
  if (f.agent !== undefined) q = q.where(sql<string>`request #>> '{subject,id}'`, '=', f.agent);
  if (f.decision !== undefined) q = q.where('decision', '=', f.decision);
  if (f.since) q = q.where('recorded_at', '>=', f.since);
  if (f.until) q = q.where('recorded_at', '<', f.until);
  if (f.before !== undefined) q = q.where('seq', '<', String(f.before));
  const rows = await q.orderBy('seq', 'desc').limit(f.limit + 1).execute();
  const page = rows.slice(0, f.limit).map((r) => ({
    id: r.id, seq: Number(r.seq), at: (r.recorded_at instanceof Date ? r.recorded_at : new Date(r.recorded_at)).toISOString(), nodeId: r.node_id,
    subject: ref(r.subject), action: typeof r.action === 'string' ? r.action : null, resource: ref(r.resource),
    decision: r.decision, layer: r.layer, code: r.code, reasons: r.reasons as string[], policyVersion: r.policy_version,
  }));
  return { decisions: page, next: rows.length > f.limit ? page[page.length - 1]!.seq : null };
}

/** A decision as the detectors learn a baseline from it. */
export interface PastDecision {
  at: Date;
  decision: boolean;
  layer: string;
  code: string | null;
  request: unknown;
}

/** A subject's latest `limit` decisions recorded in [since, until), oldest first. */
export async function recentDecisionsOf(db: Kysely<Database>, subject: string, since: Date, until: Date, limit: number): Promise<PastDecision[]> {
  const rows = await db.selectFrom('decisions').select(['recorded_at', 'decision', 'layer', 'code', 'request'])
    .where(sql<string>`request #>> '{subject,id}'`, '=', subject)
    .where('recorded_at', '>=', since).where('recorded_at', '<', until)
    .orderBy('seq', 'desc').limit(limit).execute();
  return rows.reverse().map((r) => ({ at: r.recorded_at instanceof Date ? r.recorded_at : new Date(r.recorded_at), decision: r.decision, layer: r.layer, code: r.code, request: r.request }));
}
