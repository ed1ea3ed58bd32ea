import { LeashError } from '../errors.ts';
import { assertNever, type CommandMetadata } from './agent.ts';
import { decideGrant, evolveGrants, type GrantEvent, type GrantRecord } from './grants.ts';

// Humans and groups: registered through the same log as agents, one stream each. A human's
// stream also holds the grants they give agents (grants.ts).

type HumanRegistered = { type: 'HumanRegistered'; data: { id: string; email: string; groups: string[]; displayName?: string } };
/** The groups a human is in, replaced: leaving a group takes away what it gave (and what the human's grants carried of it). */
type HumanGroupsChanged = { type: 'HumanGroupsChanged'; data: { groups: string[]; reason: string } };
export type HumanEvent = HumanRegistered | HumanGroupsChanged | GrantEvent;
export type HumanCommand =
  | { type: 'RegisterHuman'; data: HumanRegistered['data']; metadata: CommandMetadata }
  | { type: 'ChangeHumanGroups'; data: HumanGroupsChanged['data']; metadata: CommandMetadata }
  | { type: 'GrantDelegation'; data: Extract<GrantEvent, { type: 'DelegationGranted' }>['data']; metadata: CommandMetadata }
  | { type: 'RevokeDelegation'; data: Extract<GrantEvent, { type: 'DelegationRevoked' }>['data']; metadata: CommandMetadata };
export interface HumanRecord {
  id: string;
  email: string;
  groups: string[];
  displayName?: string;
  createdAt: string;
  /** On-behalf-of grants, oldest first (absent: none). */
  grants?: GrantRecord[];
}
export type HumanState = { status: 'none' } | ({ status: 'registered' } & HumanRecord);

export type GroupEvent = { type: 'GroupRegistered'; data: { id: string; parents: string[]; description?: string } };
export type GroupCommand = { type: 'RegisterGroup'; data: GroupEvent['data']; metadata: CommandMetadata };
export interface GroupRecord {
  id: string;
  parents: string[];
  description?: string;
  createdAt: string;
}
export type GroupState = { status: 'none' } | ({ status: 'registered' } & GroupRecord);

export const initialHumanState = (): HumanState => ({ status: 'none' });
export const initialGroupState = (): GroupState => ({ status: 'none' });

export function decideHuman(command: HumanCommand, state: HumanState): HumanEvent[] {
  switch (command.type) {
    case 'RegisterHuman':
      if (state.status !== 'none') throw new LeashError('ALREADY_EXISTS', `human ${state.id} is already registered`, { currentState: state.status });
      return [{ type: 'HumanRegistered', data: command.data }];
    case 'ChangeHumanGroups':
      if (state.status === 'none') throw new LeashError('HUMAN_NOT_FOUND', 'no such human');
      return [{ type: 'HumanGroupsChanged', data: command.data }];
    case 'GrantDelegation':
    case 'RevokeDelegation': {
      if (state.status === 'none') throw new LeashError('HUMAN_NOT_FOUND', 'no such human');
      const event: GrantEvent = command.type === 'GrantDelegation' ? { type: 'DelegationGranted', data: command.data } : { type: 'DelegationRevoked', data: command.data };
      return decideGrant(state.grants ?? [], state.id, event, command.metadata.now);
    }
    default:
      return assertNever(command);
  }
}

export function evolveHuman(state: HumanState, event: HumanEvent, at: Date): HumanState {
  switch (event.type) {
    case 'HumanRegistered':
      return { status: 'registered', ...event.data, createdAt: at.toISOString() };
    case 'HumanGroupsChanged':
      return state.status === 'none' ? state : { ...state, groups: event.data.groups };
    case 'DelegationGranted':
    case 'DelegationRevoked':
      if (state.status === 'none') return state;
      return { ...state, grants: evolveGrants(state.grants ?? [], event, at) };
    default:
      return assertNever(event);
  }
}

export function decideGroup(command: GroupCommand, state: GroupState): GroupEvent[] {
  switch (command.type) {
    case 'RegisterGroup':
      if (state.status !== 'none') throw new LeashError('ALREADY_EXISTS', `group ${state.id} is already registered`, { currentState: state.status });
      if (command.data.parents.includes(command.data.id)) throw new LeashError('VALIDATION_FAILED', 'a group cannot be its own parent');
      return [{ type: 'GroupRegistered', data: command.data }];
    default:
      return assertNever(command.type);
  }
}

export function evolveGroup(_state: GroupState, event: GroupEvent, at: Date): GroupState {
  switch (event.type) {
    case 'GroupRegistered':
      return { status: 'registered', ...event.data, createdAt: at.toISOString() };
    default:
      return assertNever(event.type);
  }
}
