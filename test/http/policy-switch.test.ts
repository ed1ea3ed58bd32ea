import { describe, expect, it } from 'vitest';
import { readPolicyFiles } from '../../src/authz/policy-files.ts';
import { checkPolicySet, type PolicySetSource } from '../../src/authz/policy-set.ts';
import { freshPglite, freshPostgres } from '../support/backends.ts';
import { CEDAR_DIR, PEP_TOKEN, seedPrincipals, startTestNode, type TestNode } from '../support/node.ts';
import { SharedBus } from '../support/shared-bus.ts';

// A new policy set is checked off the event loop, then put in force in one step: until then
// the node decides with the set before it, and the publishing call returns only once every
// live node decides with the new one.

const base = readPolicyFiles(CEDAR_DIR);
const WRITES = '\n@id("finance-writes-invoices") permit (principal in Group::"finance", action == Action::"write", resource in Folder::"invoices");\n';
const withWrites: PolicySetSource = { ...base, policies: base.policies + WRITES };

/** May alice (finance) write a document in the invoices folder? Only the second set says yes. */
async function aliceWrites(node: TestNode): Promise<boolean> {
  const res = await node.api('POST', '/access/v1/evaluation', {
    subject: { type: 'human', id: 'alice' }, action: { name: 'write' }, resource: { type: 'Document', id: 'd1' },
    context: { entities: [{ uid: { type: 'Folder', id: 'invoices' }, attrs: {}, parents: [] }, { uid: { type: 'Document', id: 'd1' }, attrs: {}, parents: [{ type: 'Folder', id: 'invoices' }] }] },
  }, {}, PEP_TOKEN);
  expect(res.status).toBe(200);
  return res.body.decision;
}

/** A check that holds the sets naming finance-writes-invoices until `open()`; `arm()` holds the next ones again. */
function heldCheck() {
  let open = () => {};
  let gate = Promise.resolve();
  let held = 0;
  const arm = () => {
    gate = new Promise<void>((resolve) => (open = resolve));
  };
  arm();
  return {
    check: async (source: PolicySetSource) => {
      if (source.policies.includes('finance-writes-invoices')) {
        held++;
        await gate;
      }
      return checkPolicySet(source);
    },
    open: () => open(),
    arm,
    held: () => held,
  };
}

const until = async (check: () => boolean) => {
  for (let i = 0; !check(); i++) {
    if (i > 500) throw new Error('not within 5 s');
    await new Promise((r) => setTimeout(r, 10));
  }
};

describe('switching policy sets', () => {
  it('decides with the old set while the new one compiles, and the publish returns once the new one decides', async () => {
    const held = heldCheck();
    const node = await startTestNode(freshPglite(), { policyCheck: held.check });
    try {
      await seedPrincipals(node);
      expect(await aliceWrites(node)).toBe(false);
      let answered = false;
      const publishing = node.api('PUT', '/v1/policy-set', withWrites).then((res) => {
        answered = true;
        return res;
      });
      await until(() => held.held() > 0);
      // Published (the event is folded) but not in force: the old set decides, and says so.
      expect(node.policies.version).toBe(2);
      expect(await aliceWrites(node)).toBe(false);
      expect((await node.api('GET', '/v1/policy-set')).body.version).toBe(1);
      expect((await node.api('GET', '/healthz')).status).toBe(200);
      expect(answered).toBe(false);
      // A decision begun with the old set and still on its way out holds the call until it has left.
      const inFlight = await node.cluster.admit();
      held.open();
      await until(() => node.policies.versionInForce === 2);
      await new Promise((r) => setTimeout(r, 50));
      expect(answered).toBe(false);
      node.cluster.release(inFlight);
      const res = await publishing;
      expect(res.status).toBe(200);
      expect(res.body).toMatchObject({ version: 2, nodesConfirmed: 1, nodesExpected: 1, nodesMissing: [] });
      // In force everywhere by the time the call returns: the very next decision uses it.
      expect(await aliceWrites(node)).toBe(true);
      expect((await node.api('GET', '/v1/policy-set')).body.version).toBe(2);
    } finally {
      await node.close();
    }
  });

  it('the publishing call waits for the other nodes to switch too, and names a node that has not in time', async () => {
    const backend = await freshPostgres();
    const bus = new SharedBus();
    const held = heldCheck();
    const a = await startTestNode(backend, { nodeId: 'a', bus: bus.for('a'), heartbeatMs: 50, stalenessMs: 500 });
    const b = await startTestNode(backend, { nodeId: 'b', bus: bus.for('b'), heartbeatMs: 50, stalenessMs: 500, policyCheck: held.check });
    try {
      await seedPrincipals(a);
      await until(() => a.cluster.liveNodes().length === 2 && b.cluster.liveNodes().length === 2);
      // b takes longer than the call waits: the call says so, naming b, which meanwhile
      // decides with the old set (and is live: its heartbeats go on).
      const late = await a.api('PUT', '/v1/policy-set', withWrites);
      expect(late.status).toBe(200);
      expect(late.body).toMatchObject({ version: 2, nodesConfirmed: 1, nodesExpected: 2, nodesMissing: ['b'] });
      expect(await aliceWrites(a)).toBe(true);
      expect(await aliceWrites(b)).toBe(false);
      held.open();
      await until(() => b.policies.versionInForce === 2);
      expect(await aliceWrites(b)).toBe(true);

      // b switches within the wait: the call returns once it has, and b decides with the new set.
      held.arm();
      const heldBefore = held.held();
      let answered = false;
      const publishing = a.api('PUT', '/v1/policy-set', { ...withWrites, policies: `${withWrites.policies}\n@id("no-writes-now") forbid (principal, action == Action::"write", resource);\n` }).then((res) => {
        answered = true;
        return res;
      });
      await until(() => held.held() > heldBefore);
      await new Promise((r) => setTimeout(r, 100));
      expect(answered).toBe(false);
      expect(await aliceWrites(b)).toBe(true);
      held.open();
      const res = await publishing;
      expect(res.body).toMatchObject({ version: 3, nodesConfirmed: 2, nodesExpected: 2, nodesMissing: [] });
      expect(await aliceWrites(b)).toBe(false);
    } finally {
      held.open();
      await Promise.all([a.close(), b.close()]);
    }
  });
});
