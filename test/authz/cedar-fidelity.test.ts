import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyAudit } from '../../src/audit/verify.ts';
import { actionUid } from '../../src/authz/engine.ts';
import { freshPostgres } from '../support/backends.ts';
import { PEP_TOKEN, startTestNode, type TestNode } from '../support/node.ts';

// For entities Leash does not own, the decision API decides what Cedar accepts as Cedar does:
// empty ids and action names are Cedar values like any other, a namespaced schema's actions
// are named by their full uid, strings may hold NUL and integers are 64-bit. The decision log
// (a real PostgreSQL, whose jsonb holds neither NUL nor such integers as JavaScript reads
// them) keeps them escaped, and replay decides them again the same.

const schema = `
namespace Shop {
  entity User;
  entity Item;
  action buy, "" appliesTo { principal: [User], resource: [Item] };
}
entity Human;
entity Doc { n?: Long };
entity Box tags Long;
action read appliesTo { principal: [Human], resource: [Doc] };
action open appliesTo { principal: [Human], resource: [Box] };
action count appliesTo { principal: [Human], resource: [Doc], context: { n?: Long, s?: String } };
`;
const policies = `
@id("anyone-buys-the-empty-item") permit (principal, action == Shop::Action::"buy", resource == Shop::Item::"");
@id("the-empty-action") permit (principal == Shop::User::"", action == Shop::Action::"", resource);
@id("reads") permit (principal, action == Action::"read", resource);
@id("just-past-2^53") permit (principal, action == Action::"count", resource) when { context has n && context.n == 9007199254740993 };
@id("the-largest-long") permit (principal, action == Action::"count", resource) when { context has n && context.n == 9223372036854775807 };
@id("a-nul-inside") permit (principal, action == Action::"count", resource) when { context has s && context.s == "a\\0b" };
@id("ends-like-an-escape") permit (principal, action == Action::"count", resource) when { context has s && context.s like "*n:9007199254740993" };
@id("a-nul-id") permit (principal, action == Action::"count", resource == Doc::"x\\0y");
@id("a-tag") permit (principal, action == Action::"open", resource) when { resource.hasTag("k") && resource.getTag("k") == 9007199254740993 };
@id("an-exact-attribute") permit (principal, action == Action::"count", resource) when { resource has n && resource.n == -9007199254740993 };
`;

let node: TestNode;
beforeAll(async () => {
  node = await startTestNode(await freshPostgres());
  const published = await node.api('PUT', '/v1/policy-set', { schema, policies });
  expect(published.status, JSON.stringify(published.body)).toBe(200);
});
afterAll(async () => node?.close());

const decide = async (subject: { type: string; id: string }, action: string, resource: { type: string; id: string }) => {
  const res = await node.api('POST', '/access/v1/evaluation', { subject, action: { name: action }, resource }, {}, PEP_TOKEN);
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body as { decision: boolean; context: { reasons: string[] } };
};

/** A `count` request as JSON text, so integers JavaScript cannot hold go as written. */
const countText = (context: string, resource = '{"type":"Doc","id":"d"}') =>
  `{"subject":{"type":"Human","id":"h"},"action":{"name":"count"},"resource":${resource},"context":${context}}`;
const count = (context: string, resource?: string) => node.api('POST', '/access/v1/evaluation', countText(context, resource), {}, PEP_TOKEN);
const reasons = async (context: string, resource?: string) => {
  const res = await count(context, resource);
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return (res.body as { context: { reasons: string[] } }).context.reasons;
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

describe('values JavaScript or PostgreSQL cannot hold, as Cedar reads them', () => {
  it('an integer beyond 2^53 is the integer it says, to the last digit', async () => {
    expect(await reasons('{"n":9007199254740993}')).toEqual(['just-past-2^53']);
    expect(await reasons('{"n":9007199254740992}')).toEqual([]);
    expect(await reasons('{"n":9007199254740994}')).toEqual([]);
    expect(await reasons('{"n":9223372036854775807}')).toEqual(['the-largest-long']);
    expect(await reasons('{}', '{"type":"Doc","id":"d","properties":{"n":-9007199254740993}}')).toEqual(['an-exact-attribute']);
    expect(await reasons('{}', '{"type":"Doc","id":"d","properties":{"n":-9007199254740992}}')).toEqual([]);
  });

  it('an integer beyond Cedar\'s 64 bits, or one JSON parsing has already rounded, is a 400 as Cedar\'s own parser refuses it', async () => {
    expect((await count('{"n":9223372036854775808}')).status).toBe(400);
    const rounded = await count('{"n":9.007199254740993e15}');
    expect(rounded.status).toBe(400);
    expect(rounded.body.detail).toMatch(/^\/context\/n .*write its digits/);
  });

  it('a string holding NUL, in the context and in an id', async () => {
    expect(await reasons('{"s":"a\\u0000b"}')).toEqual(['a-nul-inside']);
    expect(await reasons('{"s":"ab"}')).toEqual([]);
    expect(await reasons('{}', '{"type":"Doc","id":"x\\u0000y"}')).toEqual(['a-nul-id']);
    expect(await reasons('{}', '{"type":"Doc","id":"xy"}')).toEqual([]);
  });

  it('a string that looks like an escaped value is the string it is', async () => {
    // Were it taken for the escaped integer, the schema (s: String) would refuse the request.
    expect(await reasons('{"s":"\uFDD0n:9007199254740993"}')).toEqual(['ends-like-an-escape']);
    expect(await reasons('{"s":"%00"}')).toEqual([]);
  });

  it('entity tags described in context.entities are the tags Cedar reads', async () => {
    const open = (tags: string) => node.api('POST', '/access/v1/evaluation', `{"subject":{"type":"Human","id":"h"},"action":{"name":"open"},"resource":{"type":"Box","id":"b"},"context":{"entities":[{"uid":{"type":"Box","id":"b"},"attrs":{},"parents":[],"tags":${tags}}]}}`, {}, PEP_TOKEN);
    expect((await open('{"k":9007199254740993}')).body).toMatchObject({ decision: true, context: { reasons: ['a-tag'] } });
    expect((await open('{"k":9007199254740992}')).body).toMatchObject({ decision: false });
    expect((await open('{}')).body).toMatchObject({ decision: false });
  });

  it('an unpaired surrogate is a 400 naming where: no Cedar string holds one', async () => {
    const res = await count('{}', '{"type":"Doc","id":"x\\ud800"}');
    expect(res.status).toBe(400);
    expect(res.body.detail).toMatch(/^\/resource\/id .*unpaired surrogate/);
  });

  it('the log keeps each of them escaped, its chain verifies, and replay decides every record the same', async () => {
    const res = await count('{"n":9007199254740993,"s":"a\\u0000b"}', '{"type":"Doc","id":"x\\u0000y"}');
    expect(res.body.context.reasons).toEqual(['a-nul-id', 'a-nul-inside', 'just-past-2^53']);
    const [row] = await node.connection.db.selectFrom('decisions').select('request').where('id', '=', res.body.context.id).execute();
    expect(row!.request).toMatchObject({ resource: { id: '\uFDD0s:x%00y' }, context: { n: '\uFDD0n:9007199254740993', s: '\uFDD0s:a%00b' } });
    expect(await verifyAudit(node.connection.db)).toMatchObject({ ok: true });
    const replayed = await node.api('POST', '/v1/audit/replay', {});
    expect(replayed.body).toMatchObject({ mode: 'replay', differing: 0 });
    expect(replayed.body.decisions).toBeGreaterThan(15);
  });

  it('elsewhere (the registry, policy sets) NUL and U+FDD0 are refused, naming where', async () => {
    for (const name of ['a\u0000b', 'a\uFDD0b']) {
      const res = await node.api('POST', '/v1/humans', { id: 'h1', name });
      expect(res.status).toBe(400);
      expect(res.body.detail).toMatch(/^\/name /);
    }
  });
});

