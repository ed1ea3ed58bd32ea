import { randomUUID } from 'node:crypto';
import type { Decision } from '../authz/engine.ts';
import { LeashError } from '../errors.ts';
import type { RegistryView } from '../registry/registry-view.ts';
import type { CommandHandler } from '../service/command-handler.ts';
import type { Follower } from '../store/follower.ts';
import { approvalAggregate, approvalStatus, type ApprovalRecord } from './approval.ts';
import { askedOfTheSame, bindingKey } from './gate.ts';

// What a node does with a decision the approval gate took (gate.ts): record the approval a
// request needs (reusing the pending one for the same request, so a retrying PEP does not flood
// the approvers), or spend an approved one, once across all nodes, before the allow is given.

/** Pending approvals one agent may have at a time: beyond it, its requests are refused without asking anyone. */
export const MAX_PENDING_PER_AGENT = 100;

export interface ApprovalServiceOptions {
  view: RegistryView;
  commands: CommandHandler;
  follower: Follower;
  /** `LEASH_APPROVAL_TTL_SECONDS`: how long an approval may be answered and used. */
  ttlSeconds: number;
  /** Told of every approval this node records (NATS, the webhook). */
  notify: (approval: ApprovalRecord) => void;
}

/**
 * How a gated decision ended on this node: as decided (with `durable`, the approval it asked
 * for being appended: the answer waits for it, beside the decision's own record), or lost the
 * race to spend its approval (decide again).
 */
export type Resolved = { decision: Decision; durable?: Promise<void> } | { lostRace: true };

export class ApprovalService {
  /** Approvals this node is appending, by the request they are bound to: a batch repeating a request asks once. */
  private readonly appending = new Map<string, ApprovalRecord>();

  private forgotAt = 0;

  constructor(private readonly options: ApprovalServiceOptions) {}

  async resolve(d: Decision, decisionId: string, now: Date): Promise<Resolved> {
    const ask = d.approval;
    if (!ask) return { decision: d };
    // Now and then, what no decision can read any more leaves memory.
    if (now.getTime() - this.forgotAt > 60_000) {
      this.forgotAt = now.getTime();
      this.options.view.forgetApprovals(now);
    }
    if (ask.outcome === 'pending') return { decision: d };
    const { commands, view } = this.options;
    const actor = `agent:${ask.binding.agent}`;
    if (ask.outcome === 'use') {
      try {
        await commands.handle(approvalAggregate, ask.id!, { type: 'UseApproval', data: { decisionId }, metadata: { now } }, { now, actor });
      } catch (err) {
        // Another request (on any node) spent it first. This node's view may not show that
        // yet: catch up, then the caller decides the request again.
        if (err instanceof LeashError && err.code === 'INVALID_TRANSITION') {
          await this.options.follower.sync();
          return { lostRace: true };
        }
        throw err;
      }
      return { decision: d };
    }
    // A pending, unexpired approval for this same request, asked of the same approvers for the
    // same permits, is the one to answer (being appended here, or in the view).
    const key = bindingKey(ask.binding);
    const earlier = this.appending.get(key) ?? view.approvalFor(key);
    if (earlier && approvalStatus(earlier, now) === 'pending' && askedOfTheSame(earlier, ask)) {
      return { decision: { ...d, approval: { ...ask, outcome: 'pending', id: earlier.id, expiresAt: earlier.expiresAt, approvers: earlier.approvers } } };
    }
    if (this.pendingOf(ask.binding.agent, now) >= MAX_PENDING_PER_AGENT) {
      const { approval: _ask, ...rest } = d;
      return { decision: { ...rest, code: 'APPROVAL_LIMIT_REACHED' } };
    }
    const id = randomUUID();
    const expiresAt = new Date(now.getTime() + this.options.ttlSeconds * 1000).toISOString();
    const data = { id, ...ask.binding, approvers: ask.approvers, policies: ask.policies, expiresAt, decisionId };
    this.appending.set(key, { ...data, status: 'pending', requestedAt: now.toISOString() });
    const durable = commands.handle(approvalAggregate, id, { type: 'RequestApproval', data, metadata: { now } }, { now, actor }).then((result) => {
      if (result.state.status !== 'none') this.options.notify(result.state);
    }).finally(() => {
      if (this.appending.get(key)?.id === id) this.appending.delete(key);
    });
    durable.catch(() => {}); // handled where it is awaited; never an unhandled rejection meanwhile
    return { decision: { ...d, approval: { ...ask, id, expiresAt } }, durable };
  }

  /** This agent's approvals still waiting for an answer (those being appended too); the expired ones leave the view's index (none can be answered again). */
  private pendingOf(agent: string, now: Date): number {
    const ids = this.options.view.pendingApprovals(agent);
    for (const id of ids) {
      const a = this.options.view.approvals.get(id)?.record;
      if (!a || approvalStatus(a, now) !== 'pending') ids.delete(id);
    }
    let appending = 0;
    for (const a of this.appending.values()) if (a.agent === agent && !ids.has(a.id)) appending++;
    return ids.size + appending;
  }
}
