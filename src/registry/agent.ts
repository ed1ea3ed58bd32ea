import { LeashError } from '../errors.ts';

// The agent aggregate: events, state, decide, evolve. Pure: no I/O, no clock, no ids.

export type AgentStatus = 'discovered' | 'registered' | 'active' | 'suspended' | 'revoked' | 'quarantined' | 'retired';
export const agentStatuses: readonly AgentStatus[] = ['discovered', 'registered', 'active', 'suspended', 'revoked', 'quarantined', 'retired'];

export type RevocationMode = 'immediate' | 'graceful' | 'quarantine';

/** A graceful revocation without `gracePeriodSeconds` lets in-flight work finish within this. */
export const DEFAULT_GRACE_SECONDS = 60;

export interface Provenance {
  model: string;
  modelVersion: string;
  environment: 'production' | 'staging' | 'sandbox';
}

/** What an agent's bearer JWTs must satisfy (SPEC §2). Keys are public JWKs or a JWKS URL. */
export interface CredentialPins {
  issuer: string;
  audience: string | string[];
  algorithms: string[];
  clockSkewSeconds: number;
  maxTokenLifetimeSeconds: number;
  jwks?: { keys: Record<string, unknown>[] };
  jwksUri?: string;
}

/** A Cedar template linked to this agent with slot values. */
export interface TemplateLink {
  template: string;
  values: Record<string, unknown>;
}

export type AgentEvent =
  | { type: 'AgentDiscovered'; data: { id: string; source: string; fingerprint: string; firstSeen: string; lastSeen: string; seenBy?: string } }
  | {
      type: 'AgentRegistered';
      data: {
        id: string;
        owner: string;
        purpose: string;
        provenance: Provenance;
        trustScore: number;
        groups: string[];
        tags: string[];
        credentials: CredentialPins;
        ceiling: TemplateLink | null;
      };
    }
  | { type: 'AgentAuthorized'; data: { grants: TemplateLink[]; tokensNotBefore: string } }
  | { type: 'AgentSuspended'; data: { reason: string } }
  | { type: 'CredentialRotated'; data: { credentials: CredentialPins; tokensNotBefore: string } }
  | { type: 'AgentRevoked'; data: { mode: RevocationMode; reason: string; gracePeriodSeconds?: number; tokensNotBefore: string } }
  | { type: 'AgentRetired'; data: { reason: string } }
  /** A detector's finding (monitoring/): what it saw, how bad, and what was done about it. */
  | { type: 'AnomalyDetected'; data: Finding }
  /** A person (or the operator) looked into a finding and cleared it; the trust score it took is given back. */
  | { type: 'FindingCleared'; data: { detector: string; reason: string } }
  /** Policies read the score (`principal.trustScore`): a finding lowers it, clearing the finding restores it. */
  | { type: 'TrustScoreChanged'; data: { from: number; to: number; reason: string } };

/** A monitoring finding, as recorded on the agent's stream. */
export interface Finding {
  detector: string;
  severity: 'low' | 'medium' | 'high' | 'critical';
  /** What the detector counted: e.g. `{"denies": 20, "windowSeconds": 60}`. */
  evidence: Record<string, number | string>;
  /** What the configuration says to do: `alert`, `suspend` or `quarantine`. */
  response: 'alert' | 'suspend' | 'quarantine';
  /** How much the finding moved the trust score (0 or less), given back when it is cleared. */
  trustScoreChange?: number;
}

export type AgentEventType = AgentEvent['type'];

export interface CommandMetadata {
  now: Date;
}

export type AgentCommand =
  | { type: 'DiscoverAgent'; data: { id: string; source: string; fingerprint: string; seenBy?: string }; metadata: CommandMetadata }
  | { type: 'RegisterAgent'; data: AgentRegistration; metadata: CommandMetadata }
  | { type: 'AuthorizeAgent'; data: { grants: TemplateLink[] }; metadata: CommandMetadata }
  | { type: 'SuspendAgent'; data: { reason: string }; metadata: CommandMetadata }
  | { type: 'RotateCredentials'; data: { credentials: CredentialPins }; metadata: CommandMetadata }
  | { type: 'RevokeAgent'; data: { mode: RevocationMode; reason: string; gracePeriodSeconds?: number }; metadata: CommandMetadata }
  | { type: 'RetireAgent'; data: { reason: string }; metadata: CommandMetadata }
  | { type: 'RecordFinding'; data: Omit<Finding, 'trustScoreChange'> & { windowSeconds: number; trustScoreDelta: number }; metadata: CommandMetadata }
  | { type: 'ClearFinding'; data: { detector: string; reason: string }; metadata: CommandMetadata };

export type AgentRegistration = Extract<AgentEvent, { type: 'AgentRegistered' }>['data'];

export interface AgentRecord extends Omit<AgentRegistration, 'owner' | 'credentials'> {
  status: AgentStatus;
  /** Absent while the agent is only discovered (a shadow agent). */
  owner: string | null;
  credentials: CredentialPins | null;
  grants: TemplateLink[];
  /** Tokens issued (`iat`, whole seconds) before this instant never verify (authorize, rotate, revoke move it). */
  tokensNotBefore: string | null;
  /** How it was found: `source` (`decision-api` for a PEP asking about it), and for those, which caller asked (`seenBy`). */
  discovery: { source: string; fingerprint: string; firstSeen: string; lastSeen: string; seenBy?: string } | null;
  revocation: { mode: RevocationMode; reason: string; gracePeriodSeconds?: number; at: string } | null;
  suspension: { reason: string; at: string } | null;
  retirement: { reason: string; at: string } | null;
  /** Each detector's latest finding on this agent (absent: none yet). */
  findings?: Record<string, Finding & { at: string }>;
  createdAt: string;
  updatedAt: string;
}

export type AgentState = { status: 'none' } | AgentRecord;

export const initialAgentState = (): AgentState => ({ status: 'none' });

/** The SPEC §2 transition table: which states each command may start from. */
export const allowedFrom: Record<AgentCommand['type'], readonly (AgentStatus | 'none')[]> = {
  DiscoverAgent: ['none'],
  RegisterAgent: ['none', 'discovered'],
  AuthorizeAgent: ['registered', 'suspended', 'quarantined', 'revoked'],
  SuspendAgent: ['active'],
  RotateCredentials: ['registered', 'active'],
  RevokeAgent: ['discovered', 'registered', 'active', 'suspended', 'quarantined'],
  RetireAgent: ['discovered', 'registered', 'active', 'suspended', 'revoked', 'quarantined'],
  RecordFinding: ['active', 'suspended', 'quarantined', 'revoked'],
  ClearFinding: ['registered', 'active', 'suspended', 'quarantined', 'revoked', 'retired'],
};

/**
 * A token's `iat` has whole seconds, so one issued in the second of a rotation or an immediate
 * revocation cannot be told from one issued just before it: containment refuses that whole
 * second (tokens must be issued from the next second on). Authorize keeps the instant itself.
 */
const fromNextSecond = (now: Date): string => new Date((Math.floor(now.getTime() / 1000) + 1) * 1000).toISOString();

const laterOf = (bound: string | null, at: string): string => (bound && Date.parse(bound) > Date.parse(at) ? bound : at);

export function decideAgent(command: AgentCommand, state: AgentState): AgentEvent[] {
  const from = state.status;
  if (!allowedFrom[command.type].includes(from)) throw refused(command.type, from);
  const at = command.metadata.now.toISOString();

  switch (command.type) {
    case 'DiscoverAgent':
      return [{ type: 'AgentDiscovered', data: { ...command.data, firstSeen: at, lastSeen: at } }];
    case 'RegisterAgent':
      return [{ type: 'AgentRegistered', data: command.data }];
    case 'AuthorizeAgent':
      // Never earlier than a revocation's or rotation's bound: authorizing again within the
      // second of an immediate revoke must not bring back a token issued before it.
      return [{ type: 'AgentAuthorized', data: { grants: command.data.grants, tokensNotBefore: laterOf(state.status === 'none' ? null : state.tokensNotBefore, at) } }];
    case 'SuspendAgent':
      return [{ type: 'AgentSuspended', data: command.data }];
    case 'RotateCredentials':
      return [{ type: 'CredentialRotated', data: { credentials: command.data.credentials, tokensNotBefore: fromNextSecond(command.metadata.now) } }];
    case 'RevokeAgent':
      // Quarantining an agent that is already quarantined changes nothing: refuse it.
      if (command.data.mode === 'quarantine' && from === 'quarantined') throw refused(command.type, from);
      // immediate: every token dies now. graceful: tokens issued before now finish their
      // work within the grace period, no new one starts. quarantine: tokens still verify, so
      // the decision log shows what the agent tries, but every answer is deny.
      if (command.data.mode === 'immediate') return [{ type: 'AgentRevoked', data: { ...command.data, tokensNotBefore: fromNextSecond(command.metadata.now) } }];
      return [{
        type: 'AgentRevoked',
        data: {
          ...command.data,
          ...(command.data.mode === 'graceful' ? { gracePeriodSeconds: command.data.gracePeriodSeconds ?? DEFAULT_GRACE_SECONDS } : {}),
          tokensNotBefore: (state.status === 'none' ? null : state.tokensNotBefore) ?? at,
        },
      }];
    case 'RetireAgent':
      return [{ type: 'AgentRetired', data: command.data }];
    case 'RecordFinding': {
      // One finding per detector per window, however many nodes saw it cross the line.
      const { windowSeconds, trustScoreDelta, ...finding } = command.data;
      if (state.status === 'none') throw refused(command.type, from);
      const last = state.findings?.[finding.detector];
      if (last && command.metadata.now.getTime() - Date.parse(last.at) < windowSeconds * 1000) {
        throw new LeashError('ALREADY_EXISTS', `${finding.detector} was already found on this agent at ${last.at}`);
      }
      const to = Math.max(0, state.trustScore + Math.min(0, trustScoreDelta));
      const found: AgentEvent = { type: 'AnomalyDetected', data: { ...finding, trustScoreChange: to - state.trustScore } };
      if (to === state.trustScore) return [found];
      return [found, { type: 'TrustScoreChanged', data: { from: state.trustScore, to, reason: `${finding.detector} (${finding.severity})` } }];
    }
    case 'ClearFinding': {
      if (state.status === 'none') throw refused(command.type, from);
      const finding = state.findings?.[command.data.detector];
      if (!finding) throw new LeashError('FINDING_NOT_FOUND', `this agent has no ${command.data.detector} finding to clear`);
      const cleared: AgentEvent = { type: 'FindingCleared', data: command.data };
      const to = Math.min(100, state.trustScore - (finding.trustScoreChange ?? 0));
      if (to === state.trustScore) return [cleared];
      return [cleared, { type: 'TrustScoreChanged', data: { from: state.trustScore, to, reason: `${command.data.detector} cleared` } }];
    }
    default:
      return assertNever(command);
  }
}

export function evolveAgent(state: AgentState, event: AgentEvent, at: Date): AgentState {
  const when = at.toISOString();
  if (event.type === 'AgentDiscovered') {
    const { id, ...discovery } = event.data;
    return {
      id,
      status: 'discovered',
      owner: null,
      purpose: '',
      provenance: { model: '', modelVersion: '', environment: 'sandbox' },
      trustScore: 0,
      groups: [],
      tags: [],
      credentials: null,
      ceiling: null,
      grants: [],
      tokensNotBefore: null,
      discovery,
      revocation: null,
      suspension: null,
      retirement: null,
      createdAt: when,
      updatedAt: when,
    };
  }
  if (event.type === 'AgentRegistered') {
    const discovery = state.status === 'none' ? null : state.discovery;
    const createdAt = state.status === 'none' ? when : state.createdAt;
    return {
      ...event.data,
      status: 'registered',
      grants: [],
      tokensNotBefore: when,
      discovery,
      revocation: null,
      suspension: null,
      retirement: null,
      createdAt,
      updatedAt: when,
    };
  }
  if (state.status === 'none') return state; // cannot happen in a valid stream
  const next = { ...state, updatedAt: when };
  switch (event.type) {
    case 'AgentAuthorized':
      return { ...next, status: 'active', grants: event.data.grants, tokensNotBefore: event.data.tokensNotBefore, revocation: null, suspension: null };
    case 'AgentSuspended':
      return { ...next, status: 'suspended', suspension: { reason: event.data.reason, at: when } };
    case 'CredentialRotated':
      return { ...next, credentials: event.data.credentials, tokensNotBefore: event.data.tokensNotBefore };
    case 'AgentRevoked': {
      const { tokensNotBefore, ...revocation } = event.data;
      return {
        ...next,
        status: event.data.mode === 'quarantine' ? 'quarantined' : 'revoked',
        tokensNotBefore,
        revocation: { ...revocation, at: when },
      };
    }
    case 'AgentRetired':
      return { ...next, status: 'retired', retirement: { reason: event.data.reason, at: when } };
    case 'AnomalyDetected':
      return { ...next, findings: { ...state.findings, [event.data.detector]: { ...event.data, at: when } } };
    case 'FindingCleared': {
      const { [event.data.detector]: _cleared, ...findings } = state.findings ?? {};
      return { ...next, findings };
    }
    case 'TrustScoreChanged':
      return { ...next, trustScore: event.data.to };
    default:
      return assertNever(event);
  }
}

function refused(command: AgentCommand['type'], from: AgentStatus | 'none'): LeashError {
  if (from === 'none') return new LeashError('AGENT_NOT_FOUND', `no agent with this id (${command} needs an existing agent)`);
  return new LeashError('INVALID_TRANSITION', `${command} is not allowed for an agent that is ${from}`, {
    currentState: from,
    command,
  });
}

export function assertNever(x: never): never {
  throw new Error(`unhandled case: ${JSON.stringify(x)}`);
}
