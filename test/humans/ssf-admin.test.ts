import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readDecisions } from '../../src/audit/decision-reads.ts';
import { peoplePins, personToken } from '../support/people.ts';
import { seedPrincipals, startTestNode, type TestNode } from '../support/node.ts';

// The security event streams (Shared Signals) with a person's token: their three admin verbs
// (read-streams, manage-streams, poll-events on Leash::"ssf") are declared in the schema, so a
// deployment can grant them; the example policies grant none, so until it does, nobody may.

let node: TestNode;
const as = async (human: string, method: string, url: string, body?: unknown) => node.api(method, url, body, {}, await personToken(human));
const lastAdmin = async () => (await readDecisions(node.connection.db, 0, 100_000)).filter((d) => d.layer === 'admin').at(-1);
const STREAM = { delivery: { method: 'urn:ietf:rfc:8936' }, events_requested: ['https://schemas.openid.net/secevent/caep/event-type/session-revoked'] };

beforeAll(async () => {
  node = await startTestNode({ kind: 'pglite', dataDir: null }, { humanPins: peoplePins });
  await seedPrincipals(node);
  for (const [url, body] of [['/v1/groups', { id: 'security', parents: [] }], ['/v1/humans', { id: 'sam', email: 'sam@example.com', groups: ['security'] }]] as const) {
    expect((await node.api('POST', url, body)).status).toBe(201);
  }
});
afterAll(async () => node?.close());

describe('the security event streams with a person\'s token', () => {
  it('are nobody\'s under the example policies: each verb is a recorded admin denial, the stream\'s existence not told', async () => {
    const created = await node.api('POST', '/ssf/stream', STREAM);
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const id = created.body.stream_id as string;
    for (const [method, url, body, verb] of [
      ['GET', '/ssf/stream', undefined, 'admin:read-streams'],
      ['GET', `/ssf/stream?stream_id=${id}`, undefined, 'admin:read-streams'],
      ['POST', '/ssf/stream', STREAM, 'admin:manage-streams'],
      ['DELETE', `/ssf/stream?stream_id=${id}`, undefined, 'admin:manage-streams'],
      ['POST', `/ssf/poll/${id}`, { returnImmediately: true }, 'admin:poll-events'],
      ['POST', `/ssf/poll/${crypto.randomUUID()}`, { returnImmediately: true }, 'admin:poll-events'],
    ] as const) {
      const res = await as('sam', method, url, body);
      expect(res.status, `${method} ${url}: ${JSON.stringify(res.body)}`).toBe(403);
      expect(res.body).toMatchObject({ code: 'FORBIDDEN', layer: 'admin', decisionCode: 'ADMIN_DENIED' });
      expect(await lastAdmin()).toMatchObject({ decision: false, code: 'ADMIN_DENIED', request: { subject: { id: 'sam' }, action: { name: verb }, resource: { type: 'Leash', id: 'ssf' } } });
    }
    // The stream is still there, untouched.
    expect((await node.api('GET', `/ssf/stream?stream_id=${id}`)).status).toBe(200);
  });

  it('are readable by whom a policy names, and only for what it names', async () => {
    const current = (await node.api('GET', '/v1/policy-set')).body;
    const grant = `
@id("security-team-reads-streams")
@layer("admin")
permit (principal in Group::"security", action == Action::"admin:read-streams", resource == Leash::"ssf");
`;
    const published = await node.api('PUT', '/v1/policy-set', { schema: current.schema, policies: `${current.policies}\n${grant}` });
    expect(published.status, JSON.stringify(published.body)).toBe(200);
    const read = await as('sam', 'GET', '/ssf/stream');
    expect(read.status, JSON.stringify(read.body)).toBe(200);
    expect(await lastAdmin()).toMatchObject({ decision: true, reasons: ['security-team-reads-streams'] });
    // Reading is not managing, nor polling; and someone outside the group reads nothing.
    expect((await as('sam', 'POST', '/ssf/stream', STREAM)).status).toBe(403);
    expect((await as('sam', 'POST', `/ssf/poll/${crypto.randomUUID()}`, { returnImmediately: true })).status).toBe(403);
    expect((await as('alice', 'GET', '/ssf/stream')).status).toBe(403);
  });
});
