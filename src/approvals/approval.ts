import { LeashError } from '../errors.ts';
import { assertNever, type CommandMetadata } from '../registry/agent.ts';
import type { Aggregate } from '../registry/streams.ts';

// An approval: one human decision about one request an agent made (SPEC §5.3). A permit marked
// `@approval(...)` allows only with it. Each approval is its own stream, `approval/<id>`:
// requested (bound to the agent, action, resource and a digest of the context), then approved or
// denied by a designated approver, then used once. Single use across nodes is the stream's
// expected version: two nodes that both try to use it append at the same version, and one loses.

/** What an approval allows: exactly this request, and no other. */
export interface ApprovalBinding {
  agent: string;
  /** The human the agent acts for (its owner, or a grantor). */
  human: string;
  /** The Cedar action, as `pay` for the root namespace's, else `NS::Action::"pay"`. */
  action: string;
  resource: { type: string; id: string };
  /** sha256 of what else Cedar decides on: the context (canonical JSON, without `approvalId`) and the resource's `properties`. */
  contextDigest: string;
}

export interface ApprovalRecord extends ApprovalBinding {
  id: string;
  /** Resolved approvers: `human:<id>` (the owner) or `group:<id>`. */
  approvers: string[];
  /** The `@approval` permits that asked for it. */
  policies: string[];
  requestedAt: string;
  expiresAt: string;
  /** The decision that asked for it. */
  decisionId: string;
  status: 'pending' | 'approved' | 'denied' | 'used';
  /** Who answered (`human:<id>`), and when and why. */
  answeredBy?: string;
  answeredAt?: string;
  reason?: string;
  /** The decision that used it. */
  usedBy?: string;
  usedAt?: string;
}

export type ApprovalEvent =
  | { type: 'ApprovalRequested'; data: Omit<ApprovalRecord, 'status' | 'requestedAt' | 'answeredBy' | 'answeredAt' | 'reason' | 'usedBy' | 'usedAt'> }
  | { type: 'ApprovalGranted'; data: { approver: string; reason: string } }
  | { type: 'ApprovalDenied'; data: { approver: string; reason: string } }
  | { type: 'ApprovalUsed'; data: { decisionId: string } };

export type ApprovalCommand =
  | { type: 'RequestApproval'; data: Extract<ApprovalEvent, { type: 'ApprovalRequested' }>['data']; metadata: CommandMetadata }
  | { type: 'AnswerApproval'; approve: boolean; data: { approver: string; reason: string }; metadata: CommandMetadata }
  | { type: 'UseApproval'; data: { decisionId: string }; metadata: CommandMetadata };

export type ApprovalState = { status: 'none' } | ApprovalRecord;

export const APPROVAL_STREAM_TYPE = 'approval';

const expired = (a: ApprovalRecord, now: Date) => now.getTime() >= Date.parse(a.expiresAt);

/** As a caller sees it: `expired` once past its expiry while still pending or approved. */
export const approvalStatus = (a: ApprovalRecord, now: Date): ApprovalRecord['status'] | 'expired' =>
  (a.status === 'pending' || a.status === 'approved') && expired(a, now) ? 'expired' : a.status;

export function decideApproval(command: ApprovalCommand, state: ApprovalState): ApprovalEvent[] {
  if (command.type === 'RequestApproval') {
    if (state.status !== 'none') throw new LeashError('ALREADY_EXISTS', `approval ${command.data.id} exists`);
    return [{ type: 'ApprovalRequested', data: command.data }];
  }
  if (state.status === 'none') throw new LeashError('APPROVAL_NOT_FOUND', 'no such approval');
  const now = command.metadata.now;
  const current = approvalStatus(state, now);
  switch (command.type) {
    case 'AnswerApproval':
      if (current === 'expired') throw new LeashError('APPROVAL_EXPIRED', `approval ${state.id} expired at ${state.expiresAt}`, { currentState: current });
      if (current !== 'pending') throw new LeashError('INVALID_TRANSITION', `approval ${state.id} is already ${current}`, { currentState: current });
      return [{ type: command.approve ? 'ApprovalGranted' : 'ApprovalDenied', data: command.data }];
    case 'UseApproval':
      if (current !== 'approved') throw new LeashError('INVALID_TRANSITION', `approval ${state.id} is ${current}`, { currentState: current });
      return [{ type: 'ApprovalUsed', data: command.data }];
    default:
      return assertNever(command);
  }
}

export function evolveApproval(state: ApprovalState, event: ApprovalEvent, at: Date): ApprovalState {
  if (event.type === 'ApprovalRequested') return { ...event.data, status: 'pending', requestedAt: at.toISOString() };
  if (state.status === 'none') return state;
  switch (event.type) {
    case 'ApprovalGranted':
    case 'ApprovalDenied':
      return { ...state, status: event.type === 'ApprovalGranted' ? 'approved' : 'denied', answeredBy: event.data.approver, answeredAt: at.toISOString(), reason: event.data.reason };
    case 'ApprovalUsed':
      return { ...state, status: 'used', usedBy: event.data.decisionId, usedAt: at.toISOString() };
    default:
      return assertNever(event);
  }
}

export const approvalAggregate: Aggregate<ApprovalCommand, ApprovalEvent, ApprovalState> = {
  streamType: APPROVAL_STREAM_TYPE,
  initialState: () => ({ status: 'none' }),
  decide: decideApproval,
  evolve: evolveApproval,
};
