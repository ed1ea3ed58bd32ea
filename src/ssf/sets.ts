import type { StoredEvent } from '../store/event-store.ts';
import { REVOKED_TOKEN_STREAM_TYPE, TOKEN_REVOKED_EVENT, type TokenRevoked } from '../tokens/revoked-token-stream.ts';
import { SSF_STREAM_TYPE, type StreamConfig } from './stream.ts';

// Which events of the log a receiver of security events hears about, and as what: CAEP's
// session-revoked (an agent revoked, suspended or retired, the kill switch, one token revoked),
// credential-change (an agent's key pins rotated), token-claims-change (its trust score, its
// grants, a human's delegation to it), and two types of Leash's own (a monitoring finding; an
// approval asked for or answered). The subject (`sub_id`) is the agent, by its Leash id; a
// revoked token is named by its issuer and jti. What an event says is bounded by what its
// command accepted, and never holds a secret: the log holds none.

export const SESSION_REVOKED = 'https://schemas.openid.net/secevent/caep/event-type/session-revoked';
export const CREDENTIAL_CHANGE = 'https://schemas.openid.net/secevent/caep/event-type/credential-change';
export const TOKEN_CLAIMS_CHANGE = 'https://schemas.openid.net/secevent/caep/event-type/token-claims-change';
export const ANOMALY = 'urn:leash:secevent:anomaly';
export const APPROVAL = 'urn:leash:secevent:approval';
export const VERIFICATION = 'https://schemas.openid.net/secevent/ssf/event-type/verification';

/** What a stream can ask for (the verification event comes whenever the receiver asks for it). */
export const EVENTS_SUPPORTED = [SESSION_REVOKED, CREDENTIAL_CHANGE, TOKEN_CLAIMS_CHANGE, ANOMALY, APPROVAL] as const;

/** The types a stream with this configuration gets: those it asked for that Leash sends (all of them when it did not say). */
export const eventsDelivered = (config: Pick<StreamConfig, 'events_requested'>): string[] =>
  config.events_requested === null ? [...EVENTS_SUPPORTED] : EVENTS_SUPPORTED.filter((t) => config.events_requested!.includes(t));

export type SubjectId = { format: 'opaque'; id: string } | { format: 'jwt_id'; iss: string; jti: string };

/** One security event, before the stream's own claims (iss, aud, jti, iat) and the signature. */
export interface SecurityEvent {
  type: string;
  subject: SubjectId;
  event: Record<string, unknown>;
  /** The same for every SET one log event becomes (SSF `txn`). */
  txn: string;
}

/** A log stream's events (to find the agent an approval or a grant was for, when the event answering it does not say). */
export type History = (streamId: string) => Promise<StoredEvent[]>;

const agentSubject = (id: string): SubjectId => ({ format: 'opaque', id });
const seconds = (at: Date) => Math.floor(at.getTime() / 1000);

/** CAEP's `initiating_entity`, from who the event says caused it. */
function initiator(actor: unknown): 'admin' | 'user' | 'policy' | 'system' {
  if (typeof actor !== 'string') return 'system';
  if (actor === 'operator' || actor.startsWith('operator:') || actor.startsWith('human:')) return 'admin';
  if (actor === 'monitor') return 'policy';
  if (actor.startsWith('agent:')) return 'user';
  return 'system';
}

const reason = (text: unknown) => (typeof text === 'string' && text.length > 0 ? { reason_admin: { en: text } } : {});

const STATUS_OF: Record<string, string> = { AgentRevoked: 'revoked', AgentSuspended: 'suspended', AgentRetired: 'retired' };

/** The security event a log event is, whichever stream it goes out on; null: none. */
export async function securityEventOf(e: StoredEvent, issuer: string, history: History): Promise<SecurityEvent | null> {
  const common = { event_timestamp: seconds(e.at), initiating_entity: initiator(e.metadata.actor) };
  const txn = String(e.position);
  const data = e.data as Record<string, unknown>;
  if (e.streamType === 'agent') {
    const agent = e.streamId.slice('agent/'.length);
    switch (e.type) {
      case 'AgentRevoked':
      case 'AgentSuspended':
      case 'AgentRetired':
        return { type: SESSION_REVOKED, subject: agentSubject(agent), txn, event: { ...common, ...reason(data.reason), agent_status: STATUS_OF[e.type] } };
      case 'CredentialRotated':
        return { type: CREDENTIAL_CHANGE, subject: agentSubject(agent), txn, event: { ...common, credential_type: 'jwk', change_type: 'update' } };
      case 'TrustScoreChanged':
        return { type: TOKEN_CLAIMS_CHANGE, subject: agentSubject(agent), txn, event: { ...common, ...reason(data.reason), claims: { trust_score: data.to } } };
      case 'AgentAuthorized':
        return { type: TOKEN_CLAIMS_CHANGE, subject: agentSubject(agent), txn, event: { ...common, claims: { grants: data.grants } } };
      case 'AnomalyDetected':
        return {
          type: ANOMALY, subject: agentSubject(agent), txn,
          event: { ...common, detector: data.detector, severity: data.severity, response: data.response, evidence: data.evidence, trust_score_change: data.trustScoreChange ?? 0 },
        };
      default:
        return null;
    }
  }
  if (e.streamType === 'human' && (e.type === 'DelegationGranted' || e.type === 'DelegationRevoked')) {
    // A grant names its agent when given; its withdrawal names the grant only.
    const human = e.streamId.slice('human/'.length);
    if (e.type === 'DelegationGranted') {
      return {
        type: TOKEN_CLAIMS_CHANGE, subject: agentSubject(String(data.agent)), txn,
        event: { ...common, claims: { delegation: { grant: data.id, human, status: 'active', authorization_details: data.authorization_details, expires_at: data.expiresAt } } },
      };
    }
    const granted = (await history(e.streamId)).find((g) => g.type === 'DelegationGranted' && (g.data as { id?: unknown }).id === data.id);
    const agent = granted ? String((granted.data as { agent: unknown }).agent) : null;
    return {
      type: TOKEN_CLAIMS_CHANGE, subject: agent ? agentSubject(agent) : { format: 'opaque', id: `grant:${String(data.id)}` }, txn,
      event: { ...common, ...reason(data.reason), claims: { delegation: { grant: data.id, human, status: 'revoked' } } },
    };
  }
  if (e.streamType === REVOKED_TOKEN_STREAM_TYPE && e.type === TOKEN_REVOKED_EVENT) {
    const revoked = data as TokenRevoked['data'];
    return { type: SESSION_REVOKED, subject: { format: 'jwt_id', iss: issuer, jti: revoked.jti }, txn, event: { ...common, initiating_entity: initiator(revoked.revokedBy) } };
  }
  if (e.streamType === 'approval') {
    const approval = e.streamId.slice('approval/'.length);
    const status = { ApprovalRequested: 'pending', ApprovalGranted: 'approved', ApprovalDenied: 'denied', ApprovalUsed: 'used' }[e.type];
    if (!status) return null;
    const requested = e.type === 'ApprovalRequested' ? e : (await history(e.streamId)).find((r) => r.type === 'ApprovalRequested');
    const agent = requested ? String((requested.data as { agent: unknown }).agent) : null;
    const details = e.type === 'ApprovalRequested'
      ? { human: data.human, action: data.action, resource: data.resource, approvers: data.approvers, expires_at: data.expiresAt, decision: data.decisionId }
      : e.type === 'ApprovalUsed' ? { decision: data.decisionId } : { approver: data.approver, ...reason(data.reason) };
    return { type: APPROVAL, subject: agent ? agentSubject(agent) : { format: 'opaque', id: `approval:${approval}` }, txn, event: { ...common, approval, status, ...details } };
  }
  return null;
}

/** The verification event a stream's receiver asked for: on that stream only, its subject the stream. */
export function verificationOf(e: StoredEvent): SecurityEvent | null {
  if (e.streamType !== SSF_STREAM_TYPE || e.type !== 'VerificationRequested') return null;
  const state = (e.data as { state: string | null }).state;
  return { type: VERIFICATION, subject: { format: 'opaque', id: e.streamId.slice(SSF_STREAM_TYPE.length + 1) }, txn: String(e.position), event: state === null ? {} : { state } };
}

/** The claims of the SET an event becomes on one stream (RFC 8417, SSF §4: no `sub`, no `exp`). */
export function setClaims(streamId: string, issuer: string, aud: string, position: number, at: Date, event: SecurityEvent): Record<string, unknown> {
  return { iss: issuer, jti: setJti(streamId, position), iat: seconds(at), aud, txn: event.txn, sub_id: event.subject, events: { [event.type]: event.event } };
}

/** A SET's id: the stream and the log position it came from, so a resent SET keeps its id (receivers drop the copy). */
export const setJti = (streamId: string, position: number): string => `${streamId}.${position}`;

/** The log position a SET id of this stream names; null for anything else. */
export function positionOfJti(streamId: string, jti: string): number | null {
  if (!jti.startsWith(`${streamId}.`)) return null;
  const rest = jti.slice(streamId.length + 1);
  return /^[1-9][0-9]{0,15}$/.test(rest) ? Number(rest) : null;
}
