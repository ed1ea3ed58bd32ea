import { decideAgent, evolveAgent, initialAgentState, type AgentCommand, type AgentEvent, type AgentState } from './agent.ts';
import {
  decideGroup, decideHuman, evolveGroup, evolveHuman, initialGroupState, initialHumanState,
  type GroupCommand, type GroupEvent, type GroupState, type HumanCommand, type HumanEvent, type HumanState,
} from './principals.ts';

/** A decider in the emmett sense, plus where its streams live. */
export interface Aggregate<C, E, S> {
  streamType: string;
  initialState: () => S;
  decide: (command: C, state: S) => E[];
  evolve: (state: S, event: E, at: Date) => S;
}

export const agentAggregate: Aggregate<AgentCommand, AgentEvent, AgentState> = {
  streamType: 'agent',
  initialState: initialAgentState,
  decide: decideAgent,
  evolve: evolveAgent,
};

export const humanAggregate: Aggregate<HumanCommand, HumanEvent, HumanState> = {
  streamType: 'human',
  initialState: initialHumanState,
  decide: decideHuman,
  evolve: evolveHuman,
};

export const groupAggregate: Aggregate<GroupCommand, GroupEvent, GroupState> = {
  streamType: 'group',
  initialState: initialGroupState,
  decide: decideGroup,
  evolve: evolveGroup,
};

/** Ids never contain `/` (SPEC §2), so `type/id` is unambiguous. */
export const streamId = (streamType: string, id: string): string => `${streamType}/${id}`;

export function fold<E, S>(aggregate: Pick<Aggregate<never, E, S>, 'initialState' | 'evolve'>, events: { type: string; data: unknown; at: Date }[]): S {
  return events.reduce((state, e) => aggregate.evolve(state, { type: e.type, data: e.data } as E, e.at), aggregate.initialState());
}
