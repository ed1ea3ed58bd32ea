import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { POLICY_PUBLISHED, POLICY_STREAM_ID, POLICY_STREAM_TYPE, PolicyView } from '../../src/authz/policy-view.ts';
import type { StoredEvent } from '../../src/store/event-store.ts';

const schema = readFileSync(new URL('../../cedar/schema.cedarschema', import.meta.url), 'utf8');
const published = (version: number, policies: string): StoredEvent => ({
  position: version, streamId: POLICY_STREAM_ID, streamType: POLICY_STREAM_TYPE, version, type: POLICY_PUBLISHED,
  data: { schema, policies, sha256: 'x' }, metadata: {}, at: new Date(), idempotencyKey: null, prevHash: '', hash: '',
});

describe('policy view', () => {
  it('compiles only the latest version, on first use', () => {
    const view = new PolicyView();
    expect(view.current()).toBeNull();
    view.apply(published(1, '@id("a") permit (principal, action == Action::"read", resource);'));
    view.apply(published(2, '@id("b") permit (principal, action == Action::"write", resource);'));
    expect(view.current()).toMatchObject({ version: 2, policyIds: ['b'] });
  });

  it('a published set this node cannot load leaves it with none (deny everything) and says why', () => {
    const view = new PolicyView();
    view.apply(published(1, '@id("a") permit (principal, action == Action::"read", resource);'));
    expect(view.current()?.version).toBe(1);
    view.apply(published(2, 'permit (principal, action == Action::"teleport", resource);'));
    expect(view.current()).toBeNull();
    expect(view.error).toMatch(/version 2 cannot be loaded/);
  });
});
