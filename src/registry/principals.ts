import { LeashError } from '../errors.ts';
import { assertNever, type CommandMetadata } from './agent.ts';

// Humans and groups: registered through the same log as agents, one stream each.

export type HumanEvent = { type: 'HumanRegistered'; data: { id: string; email: string; groups: string[]; displayName?: string } };
export type HumanCommand = { type: 'RegisterHuman'; data: HumanEvent['data']; metadata: CommandMetadata };
export interface HumanRecord {
  id: string;
  email: string;
  groups: string[];
  displayName?: string;
  createdAt: string;
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
    default:
      return assertNever(command.type);
  }
}

export function evolveHuman(_state: HumanState, event: HumanEvent, at: Date): HumanState {
  switch (event.type) {
    case 'HumanRegistered':
      return { status: 'registered', ...event.data, createdAt: at.toISOString() };
    default:
      return assertNever(event.type);
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
