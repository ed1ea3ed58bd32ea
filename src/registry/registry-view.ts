import type { StoredEvent } from '../store/event-store.ts';
import type { AgentEvent, AgentRecord, AgentStatus } from './agent.ts';
import type { GroupRecord, HumanRecord } from './principals.ts';
import { agentEntity, groupEntity, humanEntity, type CedarEntity } from './cedar-entities.ts';
import { agentAggregate, groupAggregate, humanAggregate, type Aggregate } from './streams.ts';
import { approvalAggregate, type ApprovalEvent, type ApprovalRecord } from '../approvals/approval.ts';
import { bindingKey, pastRetention } from '../approvals/gate.ts';

/** A record at a stream version; its Cedar entity is built on first use, not on every event. */
export class Versioned<T> {
  private cached: CedarEntity | undefined;

  constructor(
    readonly record: T,
    readonly version: number,
    private readonly toEntity: (record: T) => CedarEntity,
  ) {}

  get entity(): CedarEntity {
    return (this.cached ??= this.toEntity(this.record));
  }
}

/** What a decision reads from the registry: the live view, or the registry as of a past position (replay). */
export interface RegistryState {
  readonly position: number;
  readonly agents: Lookup<AgentRecord>;
  readonly humans: Lookup<HumanRecord>;
  readonly groups: Lookup<GroupRecord>;
  /** Approvals of agents' requests (approvals/approval.ts), every state they pass through. */
  readonly approvals: Lookup<ApprovalRecord>;
}

export interface Lookup<T> {
  get(id: string): Versioned<T> | undefined;
  has(id: string): boolean;
}

export interface AgentFilter {
  status?: AgentStatus;
  owner?: string;
  tag?: string;
}

/**
 * The registry as of `position`: every agent, human and group, folded from the log with
 * the same `evolve` functions the deciders use. Pure and in memory; the caller feeds it
 * events in log order.
 */
export class RegistryView implements RegistryState {
  position = 0;
  readonly agents = new Map<string, Versioned<AgentRecord>>();
  readonly humans = new Map<string, Versioned<HumanRecord>>();
  readonly groups = new Map<string, Versioned<GroupRecord>>();
  readonly approvals = new Map<string, Versioned<ApprovalRecord>>();
  /** The latest approval asked for each bound request (gate.ts bindingKey): a repeated request reuses it while it is pending. */
  private readonly approvalsByBinding = new Map<string, string>();
  /** Each agent's approvals not yet answered (approval-service.ts prunes the expired ones). */
  private readonly pendingByAgent = new Map<string, Set<string>>();
  private readonly approvalListeners = new Set<(approval: ApprovalRecord) => void>();
  private readonly agentListeners = new Set<(id: string) => void>();
  /** Whose each grant is, by grant id (a token exchange names a grant by its id alone). */
  private readonly grantHolders = new Map<string, string>();

  /** The human who gave the grant with this id, if any did. */
  grantHolder(grantId: string): string | undefined {
    return this.grantHolders.get(grantId);
  }

  /** The latest approval asked for this bound request, whatever its state. */
  approvalFor(key: string): ApprovalRecord | undefined {
    const id = this.approvalsByBinding.get(key);
    return id === undefined ? undefined : this.approvals.get(id)?.record;
  }

  /** The ids of this agent's approvals not yet answered or used (some may have expired). */
  pendingApprovals(agent: string): Set<string> {
    let ids = this.pendingByAgent.get(agent);
    if (!ids) this.pendingByAgent.set(agent, (ids = new Set()));
    return ids;
  }

  /**
   * Forgets the approvals past their retention (gate.ts): no decision reads them any more, and
   * their streams keep them. Bounds what a node holds to a day's worth of approvals.
   */
  forgetApprovals(now: Date): number {
    let n = 0;
    for (const [id, a] of this.approvals) {
      if (!pastRetention(a.record, now)) continue;
      this.approvals.delete(id);
      const key = bindingKey(a.record);
      if (this.approvalsByBinding.get(key) === id) this.approvalsByBinding.delete(key);
      this.pendingByAgent.get(a.record.agent)?.delete(id);
      if (this.pendingByAgent.get(a.record.agent)?.size === 0) this.pendingByAgent.delete(a.record.agent);
      n++;
    }
    return n;
  }

  /** Called with an approval after each event of its stream is folded (long polls wait on it). */
  onApprovalChange(listener: (approval: ApprovalRecord) => void): () => void {
    this.approvalListeners.add(listener);
    return () => this.approvalListeners.delete(listener);
  }

  /** Called with an agent's id after each event of its stream is folded. */
  onAgentChange(listener: (id: string) => void): () => void {
    this.agentListeners.add(listener);
    return () => this.agentListeners.delete(listener);
  }

  apply(e: StoredEvent): void {
    if (e.position <= this.position) return; // already folded
    const id = e.streamId.slice(e.streamType.length + 1);
    switch (e.streamType) {
      case agentAggregate.streamType: {
        const prev = this.agents.get(id)?.record ?? agentAggregate.initialState();
        const next = agentAggregate.evolve(prev, e as unknown as AgentEvent, e.at);
        if (next.status !== 'none') this.agents.set(id, new Versioned(next, e.version, agentEntity));
        for (const listener of this.agentListeners) listener(id);
        break;
      }
      case humanAggregate.streamType:
        foldPrincipal(this.humans, humanAggregate, id, e, humanEntity);
        if (e.type === 'DelegationGranted') this.grantHolders.set((e.data as { id: string }).id, id);
        break;
      case groupAggregate.streamType:
        foldPrincipal(this.groups, groupAggregate, id, e, groupEntity);
        break;
      case approvalAggregate.streamType: {
        const prev = this.approvals.get(id)?.record ?? approvalAggregate.initialState();
        const next = approvalAggregate.evolve(prev, e as unknown as ApprovalEvent, e.at);
        if (next.status === 'none') break;
        this.approvals.set(id, new Versioned(next, e.version, noEntity));
        if (e.type === 'ApprovalRequested') {
          this.approvalsByBinding.set(bindingKey(next), id);
          this.pendingApprovals(next.agent).add(id);
        } else this.pendingByAgent.get(next.agent)?.delete(id);
        for (const listener of this.approvalListeners) listener(next);
        break;
      }
      default:
        break; // streams of later features (policies, decisions) are folded elsewhere
    }
    this.position = e.position;
  }

  /** Every agent, human and group as Cedar entities. */
  entities(): CedarEntity[] {
    return [...this.groups.values(), ...this.humans.values(), ...this.agents.values()].map((v) => v.entity);
  }

  listAgents(filter: AgentFilter): Versioned<AgentRecord>[] {
    const out: Versioned<AgentRecord>[] = [];
    for (const a of this.agents.values()) {
      const r = a.record;
      if (filter.status && r.status !== filter.status) continue;
      if (filter.owner && r.owner !== filter.owner) continue;
      if (filter.tag && !r.tags.includes(filter.tag)) continue;
      out.push(a);
    }
    return out.sort((x, y) => (x.record.id < y.record.id ? -1 : x.record.id > y.record.id ? 1 : 0));
  }
}

/** An approval is no Cedar entity: policies never read it. */
const noEntity = (): CedarEntity => {
  throw new Error('an approval is not a Cedar entity');
};

/** Humans and groups fold alike: the record is the registered state without its status. */
function foldPrincipal<R, E>(
  map: Map<string, Versioned<R>>,
  aggregate: Aggregate<never, E, { status: 'none' } | ({ status: 'registered' } & R)>,
  id: string,
  e: StoredEvent,
  toEntity: (record: R) => CedarEntity,
): void {
  const prev = map.get(id);
  const next = aggregate.evolve(prev ? { status: 'registered', ...prev.record } : { status: 'none' }, e as unknown as E, e.at);
  if (next.status !== 'none') map.set(id, new Versioned(withoutStatus(next) as R, e.version, toEntity));
}

function withoutStatus<T extends { status: string }>(s: T): Omit<T, 'status'> {
  const { status: _status, ...rest } = s;
  return rest;
}

type Kind = 'agents' | 'humans' | 'groups' | 'approvals';
const kinds: Record<string, Kind> = {
  [agentAggregate.streamType]: 'agents', [humanAggregate.streamType]: 'humans', [groupAggregate.streamType]: 'groups', [approvalAggregate.streamType]: 'approvals',
};

/** Each state a record has had, with the position it took effect; the first may be "none". */
class Timeline<T> implements Lookup<T> {
  constructor(
    private readonly states: Map<string, { positions: number[]; values: (Versioned<T> | undefined)[] }>,
    private readonly at: number,
  ) {}

  get(id: string): Versioned<T> | undefined {
    const t = this.states.get(id);
    if (!t) return undefined;
    // The last state that took effect at or before `at` (binary search: positions ascend).
    let lo = 0;
    let hi = t.positions.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (t.positions[mid]! <= this.at) {
        found = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return found < 0 ? undefined : t.values[found];
  }

  has(id: string): boolean {
    return this.get(id) !== undefined;
  }
}

/**
 * The registry at every position (SPEC §8 replay): folded once from the log with the same
 * view, keeping each state a record passes through, so `at(p)` is the registry exactly as a
 * node saw it at log position p, in any order and without refolding.
 */
export class RegistryHistory {
  private readonly view = new RegistryView();
  private readonly states: Record<Kind, Map<string, { positions: number[]; values: (Versioned<never> | undefined)[] }>> = {
    agents: new Map(), humans: new Map(), groups: new Map(), approvals: new Map(),
  };

  get position(): number {
    return this.view.position;
  }

  apply(e: StoredEvent): void {
    if (e.position <= this.view.position) return;
    this.view.apply(e);
    const kind = kinds[e.streamType];
    if (!kind) return;
    const id = e.streamId.slice(e.streamType.length + 1);
    let t = this.states[kind].get(id);
    if (!t) this.states[kind].set(id, (t = { positions: [], values: [] }));
    t.positions.push(e.position);
    t.values.push(this.view[kind].get(id) as Versioned<never> | undefined);
  }

  /** The registry as of `position` (clamped to what has been folded). */
  at(position: number): RegistryState {
    const p = Math.min(position, this.view.position);
    return {
      position: p,
      agents: new Timeline<AgentRecord>(this.states.agents as never, p),
      humans: new Timeline<HumanRecord>(this.states.humans as never, p),
      groups: new Timeline<GroupRecord>(this.states.groups as never, p),
      approvals: new Timeline<ApprovalRecord>(this.states.approvals as never, p),
    };
  }
}
