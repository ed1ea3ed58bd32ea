import { describe, expect, it } from 'vitest';
import { APPROVAL_RETENTION_MS, settle } from '../../src/approvals/gate.ts';
import type { StoredEvent } from '../../src/store/event-store.ts';
import { RegistryView } from '../../src/registry/registry-view.ts';

// An approval stays known to decisions (and to a node's memory) for a day past its expiry; after
// that, naming it names nothing, in a live decision and in replay alike (the same pure gate).

const request = { agent: 'pay-bot', human: 'alice', owner: 'alice', action: { type: 'Action', id: 'pay' }, resource: { type: 'Document', id: 'inv-1' }, resourceProperties: undefined };
const gate = { policies: ['large'], specs: ['owner' as const], ambiguous: false };

function viewWith(id: string, requestedAt: Date, answered: 'ApprovalGranted' | 'ApprovalDenied'): RegistryView {
  const view = new RegistryView();
  const asked = settle(view, { ...request, context: { amount: 1 } }, gate, requestedAt);
  if (asked.allow || !asked.ask) throw new Error('expected an approval to be asked for');
  const expiresAt = new Date(requestedAt.getTime() + 300_000).toISOString();
  const event = (position: number, type: string, data: unknown): StoredEvent => ({
    position, streamId: `approval/${id}`, streamType: 'approval', version: position, type, data, metadata: { actor: 'x' }, at: requestedAt, idempotencyKey: null, prevHash: '', hash: '',
  });
  view.apply(event(1, 'ApprovalRequested', { id, ...asked.ask.binding, approvers: asked.ask.approvers, policies: asked.ask.policies, expiresAt, decisionId: 'd' }));
  view.apply(event(2, answered, { approver: 'human:alice', reason: 'r' }));
  return view;
}

describe('an approval past its retention', () => {
  it('is refused as expired within the day after its expiry, then as naming nothing; and leaves the node\'s memory', () => {
    const requestedAt = new Date('2026-12-01T10:00:00Z');
    const view = viewWith('a1', requestedAt, 'ApprovalGranted');
    const at = (ms: number) => new Date(requestedAt.getTime() + 300_000 + ms);
    const named = { ...request, context: { amount: 1, approvalId: 'a1' } };
    expect(settle(view, named, gate, new Date(requestedAt.getTime() + 1_000))).toMatchObject({ allow: true });
    expect(settle(view, named, gate, at(1_000))).toMatchObject({ allow: false, code: 'APPROVAL_EXPIRED' });
    expect(settle(view, named, gate, at(APPROVAL_RETENTION_MS))).toMatchObject({ allow: false, code: 'APPROVAL_NOT_MATCHING' });
    expect(view.forgetApprovals(at(APPROVAL_RETENTION_MS - 1))).toBe(0);
    expect(view.forgetApprovals(at(APPROVAL_RETENTION_MS))).toBe(1);
    expect(view.approvals.has('a1')).toBe(false);
    expect(view.pendingApprovals('pay-bot').size).toBe(0);
  });

  it('a denied one likewise', () => {
    const requestedAt = new Date('2026-12-01T10:00:00Z');
    const view = viewWith('a2', requestedAt, 'ApprovalDenied');
    const named = { ...request, context: { amount: 1, approvalId: 'a2' } };
    expect(settle(view, named, gate, new Date(requestedAt.getTime() + 1_000))).toMatchObject({ allow: false, code: 'APPROVAL_DENIED' });
    expect(settle(view, named, gate, new Date(requestedAt.getTime() + 300_000 + APPROVAL_RETENTION_MS))).toMatchObject({ allow: false, code: 'APPROVAL_NOT_MATCHING' });
  });
});
