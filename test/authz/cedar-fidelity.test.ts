import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { actionUid } from '../../src/authz/engine.ts';
import { freshPglite } from '../support/backends.ts';
import { PEP_TOKEN, startTestNode, type TestNode } from '../support/node.ts';

// For entities Leash does not own, the decision API decides what Cedar accepts as Cedar does:
// empty ids and action names are Cedar values like any other, and a namespaced schema's
// actions are named by their full uid.

const schema = `
namespace Shop {
  entity User;
  entity Item;
  action buy, "" appliesTo { principal: [User], resource: [Item] };
}
entity Human;
entity Doc;
action read appliesTo { principal: [Human], resource: [Doc] };
`;
const policies = `
@id("anyone-buys-the-empty-item") permit (principal, action == Shop::Action::"buy", resource == Shop::Item::"");
@id("the-empty-action") permit (principal == Shop::User::"", action == Shop::Action::"", resource);
@id("reads") permit (principal, action == Action::"read", resource);
`;

let node: TestNode;
beforeAll(async () => {
  node = await startTestNode(freshPglite());
  const published = await node.api('PUT', '/v1/policy-set', { schema, policies });
  expect(published.status, JSON.stringify(published.body)).toBe(200);
});
afterAll(async () => node?.close());

const decide = async (subject: { type: string; id: string }, action: string, resource: { type: string; id: string }) => {
  const res = await node.api('POST', '/access/v1/evaluation', { subject, action: { name: action }, resource }, {}, PEP_TOKEN);
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body as { decision: boolean; context: { reasons: string[] } };
};

describe('Cedar fidelity for entities Leash does not own', () => {
  it('an empty entity id is an id like any other', async () => {
    expect(await decide({ type: 'Shop::User', id: 'u' }, 'Shop::Action::"buy"', { type: 'Shop::Item', id: '' })).toMatchObject({ decision: true, context: { reasons: ['anyone-buys-the-empty-item'] } });
    expect(await decide({ type: 'Shop::User', id: 'u' }, 'Shop::Action::"buy"', { type: 'Shop::Item', id: 'x' })).toMatchObject({ decision: false });
  });

  it('an empty action name, and an empty principal id, as Cedar reads them', async () => {
    expect(await decide({ type: 'Shop::User', id: '' }, 'Shop::Action::""', { type: 'Shop::Item', id: 'x' })).toMatchObject({ decision: true, context: { reasons: ['the-empty-action'] } });
    expect(await decide({ type: 'Shop::User', id: 'u' }, 'Shop::Action::""', { type: 'Shop::Item', id: 'x' })).toMatchObject({ decision: false });
  });

  it('a plain action name is an action of the schema\'s root: `read` is Action::"read"', async () => {
    expect(await decide({ type: 'Human', id: 'h' }, 'read', { type: 'Doc', id: 'd' })).toMatchObject({ decision: true });
    expect(await decide({ type: 'Human', id: 'h' }, 'Action::"read"', { type: 'Doc', id: 'd' })).toMatchObject({ decision: true });
  });

  it('a namespaced action named by its bare name is not found in the schema (a 400 naming it)', async () => {
    const res = await node.api('POST', '/access/v1/evaluation', { subject: { type: 'Shop::User', id: 'u' }, action: { name: 'buy' }, resource: { type: 'Shop::Item', id: '' } }, {}, PEP_TOKEN);
    expect(res.status).toBe(400);
    expect(res.body.detail).toContain('Action::"buy"');
  });

  it('reads an action uid with escapes in its id, and anything else as a plain name', () => {
    expect(actionUid('A::B::Action::"x\\"y"')).toEqual({ type: 'A::B::Action', id: 'x"y' });
    expect(actionUid('Action::"a b"')).toEqual({ type: 'Action', id: 'a b' });
    expect(actionUid('Action::"unterminated')).toEqual({ type: 'Action', id: 'Action::"unterminated' });
    expect(actionUid('pay')).toEqual({ type: 'Action', id: 'pay' });
    expect(actionUid('')).toEqual({ type: 'Action', id: '' });
  });
});
