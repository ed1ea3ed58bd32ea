import { LeashError } from '../errors.ts';

// On-behalf-of grants: a human's explicit consent that one agent may act for them, within the
// authorization details named, until an expiry, for a stated purpose. Grants live on the
// human's stream (`DelegationGranted`, `DelegationRevoked`), so the consent and its withdrawal
// are in the audit trail with who gave them, and every node folds them into its registry.

export interface GrantRecord {
  id: string;
  agent: string;
  authorization_details: unknown[];
  expiresAt: string;
  purpose: string;
  /** Who consented: `human:<id>` (their own token) or the operator acting for them. */
  consentedBy: string;
  grantedAt: string;
  status: 'active' | 'revoked';
  revokedAt?: string;
  revokedBy?: string;
  reason?: string;
}

export type GrantEvent =
  | { type: 'DelegationGranted'; data: Omit<GrantRecord, 'status' | 'grantedAt' | 'revokedAt' | 'revokedBy' | 'reason'> }
  | { type: 'DelegationRevoked'; data: { id: string; revokedBy: string; reason: string } };

/**
 * A human has at most this many grants in force, and the record every node holds keeps at most
 * this many: a new grant pushes out the longest-ended ones (revoked or expired; their events
 * stay in the log). A grant a human gives every day never runs into the limit.
 */
export const MAX_GRANTS_PER_HUMAN = 200;

export function decideGrant(grants: readonly GrantRecord[], human: string, command: GrantEvent, now: Date): GrantEvent[] {
  if (command.type === 'DelegationGranted') {
    if (grants.some((g) => g.id === command.data.id)) throw new LeashError('ALREADY_EXISTS', `grant ${command.data.id} exists`);
    if (grants.filter((g) => grantInForce(g, now)).length >= MAX_GRANTS_PER_HUMAN) throw new LeashError('LIMIT_EXCEEDED', `${human} already has ${MAX_GRANTS_PER_HUMAN} grants in force`);
    return [command];
  }
  const grant = grants.find((g) => g.id === command.data.id);
  if (!grant) throw new LeashError('GRANT_NOT_FOUND', `${human} has no grant ${command.data.id}`);
  if (grant.status !== 'active') throw new LeashError('INVALID_TRANSITION', `grant ${grant.id} is already ${grant.status}`, { currentState: grant.status });
  return [command];
}

export function evolveGrants(grants: readonly GrantRecord[], event: GrantEvent, at: Date): GrantRecord[] {
  if (event.type === 'DelegationGranted') {
    const added = [...grants, { ...event.data, grantedAt: at.toISOString(), status: 'active' as const }];
    if (added.length <= MAX_GRANTS_PER_HUMAN) return added;
    // Over the limit: the ended grants that ended first go (at most as many as needed).
    const ended = added.filter((g) => !grantInForce(g, at)).sort((a, b) => endOf(a) - endOf(b)).slice(0, added.length - MAX_GRANTS_PER_HUMAN);
    const gone = new Set(ended);
    return added.filter((g) => !gone.has(g));
  }
  const { id, revokedBy, reason } = event.data;
  return grants.map((g) => (g.id === id ? { ...g, status: 'revoked', revokedAt: at.toISOString(), revokedBy, reason } : g));
}

/** When a grant ended: its revocation, else its expiry. */
const endOf = (g: GrantRecord): number => Date.parse(g.revokedAt ?? g.expiresAt);

/** Active and not past its expiry at `now`. */
export const grantInForce = (g: GrantRecord, now: Date): boolean => g.status === 'active' && now.getTime() < Date.parse(g.expiresAt);

/** As a caller sees a grant: `expired` once past its expiry (the record keeps `active`). */
export const grantStatus = (g: GrantRecord, now: Date): 'active' | 'revoked' | 'expired' => (g.status === 'revoked' ? 'revoked' : grantInForce(g, now) ? 'active' : 'expired');
