import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { POLICY_PUBLISHED, POLICY_STREAM_ID, POLICY_STREAM_TYPE, PolicyView } from '../../src/authz/policy-view.ts';
import { checkPolicySet } from '../../src/authz/policy-set.ts';
import type { StoredEvent } from '../../src/store/event-store.ts';

const schema = readFileSync(new URL('../../cedar/schema.cedarschema', import.meta.url), 'utf8');
const published = (version: number, policies: string): StoredEvent => ({
  position: version, streamId: POLICY_STREAM_ID, streamType: POLICY_STREAM_TYPE, version, type: POLICY_PUBLISHED,
  data: { schema, policies, sha256: 'x' }, metadata: {}, at: new Date(), idempotencyKey: null, prevHash: '', hash: '',
});

describe('policy view', () => {
  it('compiles only the latest version of a batch folded at once', async () => {
    const checked: string[] = [];
    const view = new PolicyView(async (source) => {
      checked.push(source.policies);
      return checkPolicySet(source);
    });
    expect(view.current()).toBeNull();
    view.apply(published(1, '@id("a") permit (principal, action == Action::"read", resource);'));
    view.apply(published(2, '@id("b") permit (principal, action == Action::"write", resource);'));
    await view.settled();
    expect(view.current()).toMatchObject({ version: 2, policyIds: ['b'] });
    expect(checked).toHaveLength(1);
  });

  it('decides with the version in force until the next one is compiled, then switches in one step', async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const view = new PolicyView(async (source) => {
      if (source.policies.includes('"b"')) await gate;
      return checkPolicySet(source);
    });
    const switched: number[] = [];
    view.switched = (v) => switched.push(v);
    view.apply(published(1, '@id("a") permit (principal, action == Action::"read", resource);'));
    await view.settled();
    const first = view.current();
    view.apply(published(2, '@id("b") permit (principal, action == Action::"write", resource);'));
    await new Promise((resolve) => setTimeout(resolve, 20));
    // Published, not yet in force: the old set decides meanwhile.
    expect(view.version).toBe(2);
    expect(view.versionInForce).toBe(1);
    expect(view.current()).toBe(first);
    release();
    await view.settled();
    expect(view.current()).toMatchObject({ version: 2, policyIds: ['b'] });
    expect(switched).toEqual([1, 2]);
  });

  it('a published set this node cannot load leaves it with none (deny everything) and says why', async () => {
    const view = new PolicyView();
    view.apply(published(1, '@id("a") permit (principal, action == Action::"read", resource);'));
    await view.settled();
    expect(view.current()?.version).toBe(1);
    view.apply(published(2, 'permit (principal, action == Action::"teleport", resource);'));
    await view.settled();
    expect(view.current()).toBeNull();
    expect(view.versionInForce).toBe(2);
    expect(view.error).toMatch(/version 2 cannot be loaded/);
  });
});
