import { readFileSync } from 'node:fs';
import * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import { describe, expect, it } from 'vitest';
import { RegistryView } from '../../src/registry/registry-view.ts';
import type { StoredEvent } from '../../src/store/event-store.ts';

const schema = readFileSync(new URL('../../cedar/schema.cedarschema', import.meta.url), 'utf8');
const at = new Date('2026-11-23T10:00:00.000Z');

let position = 0;
const versions = new Map<string, number>();
function stored(streamType: string, id: string, type: string, data: Record<string, unknown>): StoredEvent {
  const streamId = `${streamType}/${id}`;
  const version = (versions.get(streamId) ?? 0) + 1;
  versions.set(streamId, version);
  return { position: ++position, streamId, streamType, version, type, data, metadata: {}, at, idempotencyKey: null, prevHash: '', hash: '' };
}

const log: StoredEvent[] = [
  stored('group', 'finance', 'GroupRegistered', { id: 'finance', parents: [] }),
  stored('group', 'finance-agents', 'GroupRegistered', { id: 'finance-agents', parents: ['finance'] }),
  stored('human', 'alice', 'HumanRegistered', { id: 'alice', email: 'alice@example.com', groups: ['finance'] }),
  stored('agent', 'shadow', 'AgentDiscovered', { id: 'shadow', source: 'proxy', fingerprint: 'fp', firstSeen: at.toISOString(), lastSeen: at.toISOString() }),
  stored('agent', 'bot', 'AgentRegistered', {
    id: 'bot', owner: 'alice', purpose: 'pay', provenance: { model: 'm', modelVersion: '1', environment: 'staging' }, trustScore: 70,
    groups: ['finance-agents'], tags: ['finance', 'payments'], credentials: { issuer: 'i', audience: 'a', algorithms: ['ES256'], clockSkewSeconds: 0, maxTokenLifetimeSeconds: 60, jwksUri: 'https://i/jwks' }, ceiling: null,
  }),
  stored('agent', 'bot', 'AgentAuthorized', { grants: [], tokensNotBefore: at.toISOString() }),
  stored('policy', 'set', 'PolicySetPublished', { note: 'a stream type this view does not fold' }),
];

describe('registry view', () => {
  it('folds the log into agents, humans and groups with their stream versions', () => {
    const view = new RegistryView();
    log.forEach((e) => view.apply(e));
    expect(view.position).toBe(log.length);
    expect(view.agents.get('bot')).toMatchObject({ version: 2, record: { status: 'active', owner: 'alice' } });
    expect(view.agents.get('shadow')?.record.status).toBe('discovered');
    expect(view.humans.get('alice')?.record.groups).toEqual(['finance']);
    expect(view.listAgents({ tag: 'payments' }).map((a) => a.record.id)).toEqual(['bot']);
  });

  it('ignores events it has already applied (a catch-up that overlaps)', () => {
    const view = new RegistryView();
    log.forEach((e) => view.apply(e));
    view.apply(log[5]!); // AgentAuthorized again
    expect(view.agents.get('bot')?.version).toBe(2);
  });

  it('projects Cedar entities that conform to cedar/schema.cedarschema', () => {
    const view = new RegistryView();
    log.forEach((e) => view.apply(e));
    const entities = view.entities();
    expect(cedar.checkParseEntities({ entities: entities as never, schema })).toEqual({ type: 'success' });
    expect(view.agents.get('bot')?.entity).toEqual({
      uid: { type: 'Agent', id: 'bot' },
      attrs: { owner: { __entity: { type: 'Human', id: 'alice' } }, status: 'active', trustScore: 70, purpose: 'pay', provenance: { model: 'm', modelVersion: '1', environment: 'staging' }, tags: ['finance', 'payments'] },
      parents: [{ type: 'Group', id: 'finance-agents' }],
    });
    // The schema is what makes this test able to fail: a wrong attribute type is refused.
    const broken = entities.map((e) => (e.uid.type === 'Agent' ? { ...e, attrs: { ...e.attrs, trustScore: 'high' } } : e));
    expect(cedar.checkParseEntities({ entities: broken as never, schema }).type).toBe('failure');
  });
});
