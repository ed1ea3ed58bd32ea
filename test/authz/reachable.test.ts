import { describe, expect, it } from 'vitest';
import { entityKey, reachableEntities } from '../../src/authz/engine.ts';
import type { CedarEntity } from '../../src/registry/cedar-entities.ts';

// The details-beyond-ceiling check hands Cedar only the entities it can reach, so its verdict
// can be cached across the resources a token is used on. Leaving out an entity a policy could
// reach would change the answer: every way of reaching one must be followed.

const uid = (type: string, id: string) => ({ type, id });
const entity = (type: string, id: string, attrs: Record<string, unknown> = {}, parents: { type: string; id: string }[] = []): CedarEntity => ({ uid: uid(type, id), attrs, parents });

const all = [
  entity('Agent', 'bot', { owner: { __entity: uid('Human', 'alice') }, tags: ['x'] }, [uid('Group', 'agents')]),
  entity('Human', 'alice', { email: 'a@example.com' }, [uid('Group', 'finance')]),
  entity('Group', 'agents', {}, [uid('Group', 'all')]),
  entity('Group', 'finance'),
  entity('Group', 'all'),
  entity('Folder', 'invoices', {}, [uid('Folder', 'root')]),
  entity('Folder', 'root'),
  entity('Document', 'd1', {}, [uid('Folder', 'invoices')]),
  entity('Case', 'c1', { assignee: uid('Person', 'p1'), notes: [{ about: { __entity: uid('Person', 'p2') } }] }),
  entity('Person', 'p1'),
  entity('Person', 'p2'),
  entity('Person', 'p3'),
  entity('Folder', 'named-in-a-policy'),
];
const map = new Map(all.map((e) => [entityKey(e.uid), e]));
const ids = (es: CedarEntity[]) => es.map((e) => `${e.uid.type}::${e.uid.id}`).sort();

describe('the entities an evaluation can reach', () => {
  it('follows parents and references in attributes from the roots', () => {
    expect(ids(reachableEntities(map, [uid('Agent', 'bot'), uid('Folder', 'invoices')], {}, new Set()))).toEqual(
      ['Agent::bot', 'Folder::invoices', 'Folder::root', 'Group::agents', 'Group::all', 'Group::finance', 'Human::alice'],
    );
  });

  it('follows the context, explicit and implicit references, nested in records and sets, then their attributes', () => {
    const reached = ids(reachableEntities(map, [uid('Agent', 'bot')], { case: { __entity: uid('Case', 'c1') }, others: [{ type: 'Person', id: 'p3' }] }, new Set()));
    expect(reached).toEqual(expect.arrayContaining(['Case::c1', 'Person::p1', 'Person::p2', 'Person::p3']));
    expect(reached).not.toContain('Document::d1');
  });

  it('includes what the policies name literally, and nothing unreachable', () => {
    const reached = ids(reachableEntities(map, [uid('Agent', 'bot')], {}, new Set([entityKey(uid('Folder', 'named-in-a-policy')), entityKey(uid('Folder', 'not-in-the-request'))])));
    expect(reached).toContain('Folder::named-in-a-policy');
    expect(reached).not.toContain('Document::d1');
    expect(reached).not.toContain('Case::c1');
  });
});
