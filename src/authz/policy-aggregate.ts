import { assertNever, type CommandMetadata } from '../registry/agent.ts';
import type { Aggregate } from '../registry/streams.ts';
import { POLICY_PUBLISHED, POLICY_STREAM_TYPE } from './policy-view.ts';
import type { PolicySetSource } from './policy-set.ts';

// The policy set is one stream; each published version is an event, so every decision can
// name the version it used and replay can rebuild it.

export type PolicyCommand = { type: 'PublishPolicySet'; data: PolicySetSource & { sha256: string }; metadata: CommandMetadata };
export type PolicyEvent = { type: typeof POLICY_PUBLISHED; data: PolicySetSource & { sha256: string } };
export type PolicyState = { version: number; sha256: string | null };

export const policyAggregate: Aggregate<PolicyCommand, PolicyEvent, PolicyState> = {
  streamType: POLICY_STREAM_TYPE,
  initialState: () => ({ version: 0, sha256: null }),
  decide: (command) => {
    switch (command.type) {
      case 'PublishPolicySet':
        return [{ type: POLICY_PUBLISHED, data: command.data }];
      default:
        return assertNever(command.type);
    }
  },
  evolve: (state, event) => ({ version: state.version + 1, sha256: event.data.sha256 }),
};
