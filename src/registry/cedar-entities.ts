import type { AgentRecord } from './agent.ts';
import type { GroupRecord, HumanRecord } from './principals.ts';

// Registry records as Cedar entity JSON (cedar/schema.cedarschema), ready for the
// decision layer to hand to the engine without another lookup.

export interface EntityUid {
  type: string;
  id: string;
}

export interface CedarEntity {
  uid: EntityUid;
  attrs: Record<string, unknown>;
  parents: EntityUid[];
  /** Cedar entity tags (`hasTag`, `getTag`), for entities a caller describes. */
  tags?: Record<string, unknown>;
}

const group = (id: string): EntityUid => ({ type: 'Group', id });

export function agentEntity(a: AgentRecord): CedarEntity {
  return {
    uid: { type: 'Agent', id: a.id },
    attrs: {
      ...(a.owner ? { owner: { __entity: { type: 'Human', id: a.owner } } } : {}),
      status: a.status,
      trustScore: a.trustScore,
      purpose: a.purpose,
      provenance: a.provenance,
      tags: a.tags,
    },
    parents: a.groups.map(group),
  };
}

export function humanEntity(h: HumanRecord): CedarEntity {
  return { uid: { type: 'Human', id: h.id }, attrs: { email: h.email }, parents: h.groups.map(group) };
}

export function groupEntity(g: GroupRecord): CedarEntity {
  return { uid: { type: 'Group', id: g.id }, attrs: {}, parents: g.parents.map(group) };
}
