import { createServer, request as httpRequest, type Server, type ServerResponse } from 'node:http';
import { Writable } from 'node:stream';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { cursorOf, takeLease } from '../../src/ssf/delivery-store.ts';
import { freshPostgres } from '../support/backends.ts';
import { ADMIN_TOKEN, agentBody, seedPrincipals, startTestNode, type TestNode } from '../support/node.ts';
import { eventually } from './receiver.ts';

// Attack review of the Shared Signals transmitter: each test names what a caller or a receiver
// could do, and asserts the safe behaviour.

const PUSH = 'urn:ietf:rfc:8935';
const SESSION_REVOKED = 'https://schemas.openid.net/secevent/caep/event-type/session-revoked';


/** A receiver whose every answer `respond` writes; keeps the SETs it was sent, and the Authorization header each came with. */
async function receiverAnswering(respond: (res: ServerResponse) => void): Promise<{ url: string; sets: string[]; authorizations: (string | undefined)[]; server: Server }> {
  const sets: string[] = [];
  const authorizations: (string | undefined)[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      sets.push(body);
      authorizations.push(req.headers.authorization);
      respond(res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}/events`, sets, authorizations, server };
}

const jtiOf = (set: string) => (decodeJwt(set) as { jti: string }).jti;

const closeServer = (server: Server) => {
  server.closeAllConnections();
  return new Promise<void>((resolve) => server.close(() => resolve()));
};

describe('a push receiver that took the SET but answers oddly', () => {
  let node: TestNode;
  beforeAll(async () => {
    node = await startTestNode(await freshPostgres(), { ssf: { backoffMs: () => 50 } });
    await seedPrincipals(node);
  });
  afterAll(async () => node?.close());

  // A receiver's 2xx with a body over the 4 KB cap (an HTML page), or one that never ends, was a
  // failed push: the SET was sent again every backoff, forever, and nothing after it went out.
  it.each([
    ['a 200 with a 10 KB page', (res: ServerResponse) => res.writeHead(200, { 'content-type': 'text/html' }).end('x'.repeat(10_000))],
    ['a 202 whose body never ends', (res: ServerResponse) => {
      res.writeHead(202, { 'content-type': 'text/plain' });
      res.write('still going');
    }],
  ])('%s: delivered once, and the next SET follows', async (name, respond) => {
    const receiver = await receiverAnswering(respond);
    try {
      const stream = (await node.api('POST', '/ssf/stream', { delivery: { method: PUSH, endpoint_url: receiver.url }, events_requested: [SESSION_REVOKED] })).body.stream_id;
      const agents = name.startsWith('a 200') ? ['odd-1', 'odd-2'] : ['odd-3', 'odd-4'];
      for (const id of agents) {
        expect((await node.api('POST', '/v1/agents', agentBody({ id }))).status).toBe(201);
        expect((await node.api('POST', `/v1/agents/${id}/revoke`, { mode: 'immediate', reason: 'x' })).status).toBe(200);
      }
      // (Within the push timeout of 5 s: a body that never ends would have timed the first out.)
      await eventually(() => receiver.sets.length >= 2, 3000);
      // With backoff at 50 ms, a SET taken for a failure would have come back many times by now.
      await new Promise((r) => setTimeout(r, 1000));
      expect(receiver.sets.length).toBe(2);
      expect(new Set(receiver.sets.map(jtiOf)).size).toBe(2);
      await node.api('DELETE', `/ssf/stream?stream_id=${stream}`);
    } finally {
      await closeServer(receiver.server);
    }
  }, 20_000);
});

describe('node.close() with a poll waiting', () => {
  // A poll without returnImmediately waits up to the long-poll time; it held node.close() (and
  // the process's shutdown) that long, plus the idle keep-alive after it. Once the transmitter
  // stopped, nextCommit no longer waited, so a poll still waiting would have spun on the
  // database until its deadline.
  it('answers the waiting poll at once and closes promptly', async () => {
    const node = await startTestNode(await freshPostgres(), { ssf: { longPollMs: 8000 } });
    const stream = (await node.api('POST', '/ssf/stream', {})).body.stream_id;
    await node.app.listen({ port: 0, host: '127.0.0.1' });
    const port = (node.app.server.address() as { port: number }).port;
    const answered = new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = httpRequest({ host: '127.0.0.1', port, method: 'POST', path: `/ssf/poll/${stream}`, headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' } }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      req.end('{}');
    });
    await new Promise((r) => setTimeout(r, 300));
    const started = performance.now();
    await node.close();
    expect(performance.now() - started).toBeLessThan(2000);
    const res = await answered;
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body)).toEqual({ sets: {}, moreAvailable: false });
  }, 20_000);

  it('closes promptly while a push is retrying against a receiver that never answers', async () => {
    const hanging = createServer(() => {});
    await new Promise<void>((resolve) => hanging.listen(0, '127.0.0.1', resolve));
    const node = await startTestNode(await freshPostgres(), { ssf: { backoffMs: () => 10 } });
    try {
      await seedPrincipals(node);
      const url = `http://127.0.0.1:${(hanging.address() as { port: number }).port}/events`;
      await node.api('POST', '/ssf/stream', { delivery: { method: PUSH, endpoint_url: url }, events_requested: [SESSION_REVOKED] });
      await node.api('POST', '/v1/agents', agentBody({ id: 'hang-1' }));
      await node.api('POST', '/v1/agents/hang-1/revoke', { mode: 'immediate', reason: 'x' });
      await new Promise((r) => setTimeout(r, 500));
    } finally {
      const started = performance.now();
      await node.close();
      expect(performance.now() - started).toBeLessThan(2000);
      await closeServer(hanging);
    }
  }, 20_000);
});

describe('a deleted stream', () => {
  // DELETE dropped the stream's cursor row; a node whose view had not applied the deletion yet
  // (another node, a moment behind) took the lease, which made the row again at the stream's
  // creation: it pushed every SET since then a second time, to a stream that no longer exists,
  // and left the row behind for good. The cursor now stays, moved past every position.
  it('stays ended for a node that has not heard of its deletion yet', async () => {
    const node = await startTestNode(await freshPostgres());
    const receiver = await receiverAnswering((res) => res.writeHead(202).end());
    try {
      await seedPrincipals(node);
      const stream = (await node.api('POST', '/ssf/stream', { delivery: { method: PUSH, endpoint_url: receiver.url, authorization_header: 'Bearer gone-4711' }, events_requested: [SESSION_REVOKED] })).body.stream_id;
      await node.api('POST', '/v1/agents', agentBody({ id: 'del-1' }));
      await node.api('POST', '/v1/agents/del-1/revoke', { mode: 'immediate', reason: 'x' });
      await eventually(() => receiver.sets.length === 1, 3000);
      const createdAt = (await node.store.readStream(`ssf-stream/${stream}`))[0]!.position;
      expect((await node.api('DELETE', `/ssf/stream?stream_id=${stream}`)).status).toBe(204);
      const db = node.connection.db;
      // What a lagging node's push loop and poll do first.
      expect(await takeLease(db, stream, createdAt, 'lagging-node', 10_000)).toBeNull();
      expect(await cursorOf(db, stream, createdAt)).toBeGreaterThan(await node.eventCount());
      expect(await db.selectFrom('ssf_push_credentials').selectAll().execute()).toEqual([]);
    } finally {
      await node.close();
      await closeServer(receiver.server);
    }
  });
});

describe('a poll far behind', () => {
  // A poll looks at 10,000 log events at most. When they held nothing for the stream, the poll
  // said moreAvailable, but a long poll first waited out its whole wait for a commit, though
  // there was more to read at once: a receiver 100,000 events behind waited ten long polls.
  it('answers moreAvailable at once, without the long-poll wait, and the next poll reads on', async () => {
    const node = await startTestNode(await freshPostgres(), { ssf: { longPollMs: 4000 } });
    try {
      const stream = (await node.api('POST', '/ssf/stream', { events_requested: [SESSION_REVOKED] })).body.stream_id;
      // Events no stream hears of, appended as they are: quicker than 10,500 commands.
      for (let i = 0; i < 6; i++) {
        await node.store.append({ streamId: `noise/${i}`, streamType: 'noise', expectedVersion: 0, at: new Date(), events: Array.from({ length: 1750 }, (_, n) => ({ type: 'Noise', data: { n } })) });
      }
      await node.follower.sync();
      const started = performance.now();
      const first = await node.api('POST', `/ssf/poll/${stream}`, {});
      expect(first.body).toEqual({ sets: {}, moreAvailable: true });
      expect(performance.now() - started).toBeLessThan(2000);
      const second = await node.api('POST', `/ssf/poll/${stream}`, { returnImmediately: true });
      expect(second.body).toEqual({ sets: {}, moreAvailable: false });
    } finally {
      await node.close();
    }
  }, 30_000);
});

describe('a push receiver that refuses the stream rather than the SET', () => {
  // A 400 was taken as the receiver refusing that SET for good, whatever it named. RFC 8935's
  // invalid_key is what a receiver says while it has not fetched the signing key yet (each node
  // signs with its own: a lease moving to another node brings a new one), and
  // authentication_failed while the stream's header is stale: every SET meanwhile was dropped.
  it.each(['invalid_key', 'authentication_failed', 'invalid_audience'])('400 %s: the SET waits and is delivered once the receiver takes it; invalid_request still drops it', async (code) => {
    const node = await startTestNode(await freshPostgres(), { ssf: { backoffMs: () => 50 } });
    let refusing = 3;
    const receiver = await receiverAnswering((res) => {
      if (refusing > 0) {
        refusing--;
        res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ err: code, description: 'not yet' }));
      } else res.writeHead(202).end();
    });
    try {
      await seedPrincipals(node);
      await node.api('POST', '/ssf/stream', { delivery: { method: PUSH, endpoint_url: receiver.url }, events_requested: [SESSION_REVOKED] });
      for (const id of ['ref-1', 'ref-2']) {
        await node.api('POST', '/v1/agents', agentBody({ id }));
        await node.api('POST', `/v1/agents/${id}/revoke`, { mode: 'immediate', reason: 'x' });
      }
      // Three refusals, then both SETs: the first was retried, not dropped.
      await eventually(() => receiver.sets.length >= 5, 5000);
      const jtis = receiver.sets.map(jtiOf);
      expect(new Set(jtis.slice(0, 4)).size).toBe(1);
      expect(jtis[4]).not.toBe(jtis[0]);
      // A refusal of the SET itself still moves on.
      const before = receiver.sets.length;
      refusing = 1;
      code = 'invalid_request';
      await node.api('POST', '/v1/agents', agentBody({ id: 'ref-3' }));
      await node.api('POST', '/v1/agents/ref-3/revoke', { mode: 'immediate', reason: 'x' });
      await node.api('POST', '/v1/agents', agentBody({ id: 'ref-4' }));
      await node.api('POST', '/v1/agents/ref-4/revoke', { mode: 'immediate', reason: 'x' });
      await eventually(() => receiver.sets.length >= before + 2, 5000);
      await new Promise((r) => setTimeout(r, 300));
      expect(receiver.sets.length).toBe(before + 2);
      expect(jtiOf(receiver.sets[before]!)).not.toBe(jtiOf(receiver.sets[before + 1]!));
    } finally {
      await node.close();
      await closeServer(receiver.server);
    }
  }, 20_000);
});

describe('a poll waiting on a stream that goes away', () => {
  // A long poll on a stream deleted meanwhile kept its connection until the long-poll wait ran
  // out; on one made a push stream it went on handing out SETs the push loop now delivers.
  it.each(['deleted', 'made a push stream'])('answers at once when the stream is %s', async (what) => {
    const node = await startTestNode(await freshPostgres(), { ssf: { longPollMs: 5000 } });
    const receiver = await receiverAnswering((res) => res.writeHead(202).end());
    try {
      await seedPrincipals(node);
      const stream = (await node.api('POST', '/ssf/stream', { events_requested: [SESSION_REVOKED] })).body.stream_id;
      await node.api('POST', '/v1/agents', agentBody({ id: 'gone-1' }));
      const waiting = node.api('POST', `/ssf/poll/${stream}`, {});
      await new Promise((r) => setTimeout(r, 300));
      const started = performance.now();
      if (what === 'deleted') expect((await node.api('DELETE', `/ssf/stream?stream_id=${stream}`)).status).toBe(204);
      else expect((await node.api('PATCH', '/ssf/stream', { stream_id: stream, delivery: { method: PUSH, endpoint_url: receiver.url } })).status).toBe(200);
      await node.api('POST', '/v1/agents/gone-1/revoke', { mode: 'immediate', reason: 'x' });
      const res = await waiting;
      expect(performance.now() - started).toBeLessThan(2000);
      expect(res.body).toEqual({ sets: {}, moreAvailable: false });
    } finally {
      await node.close();
      await closeServer(receiver.server);
    }
  }, 20_000);
});

describe('poll acknowledgements of ids never handed out', () => {
  // An acknowledgement was kept for any position up to the node's head: a receiver stuck on one
  // SET (or anyone allowed to poll) could store one row per log event, 1,000 a request, and
  // every later poll read them all. A poll hands out nothing past 10,000 positions from the cursor.
  it('keeps none past what a poll can have handed out', async () => {
    const node = await startTestNode(await freshPostgres());
    try {
      const stream = (await node.api('POST', '/ssf/stream', { events_requested: [SESSION_REVOKED] })).body.stream_id;
      const cursor = (await node.store.readStream(`ssf-stream/${stream}`))[0]!.position;
      for (let i = 0; i < 6; i++) {
        await node.store.append({ streamId: `noise/${i}`, streamType: 'noise', expectedVersion: 0, at: new Date(), events: Array.from({ length: 1750 }, (_, n) => ({ type: 'Noise', data: { n } })) });
      }
      await node.follower.sync();
      // Paused, so the poll moves no cursor over them: what it keeps stays to be seen.
      await node.api('POST', '/ssf/status', { stream_id: stream, status: 'paused' });
      const near = Array.from({ length: 10 }, (_, i) => `${stream}.${cursor + 9_991 + i}`);
      const far = Array.from({ length: 500 }, (_, i) => `${stream}.${cursor + 10_001 + i}`);
      expect((await node.api('POST', `/ssf/poll/${stream}`, { ack: [...near, ...far], maxEvents: 0 })).status).toBe(200);
      const kept = await node.connection.db.selectFrom('ssf_acks').select('position').where('stream_id', '=', stream).execute();
      expect(kept.map((r) => Number(r.position)).sort((a, b) => a - b)).toEqual(near.map((j) => Number(j.split('.')[1])));
    } finally {
      await node.close();
    }
  }, 30_000);
});

describe('PATCH of a push stream\'s delivery', () => {
  // PATCH changes only what it names (SSF 1.0 §8.1.1.3), but a delivery given again as it was
  // (to change nothing, or beside another member) silently dropped the receiver's header: every
  // push after it went without, and the receiver refused them. The header is kept for the same
  // URL, and still never follows the stream to another one.
  it('keeps the header for the same URL, and drops it for another', async () => {
    const node = await startTestNode(await freshPostgres());
    const ok = (res: ServerResponse) => res.writeHead(202).end();
    const first = await receiverAnswering(ok);
    const second = await receiverAnswering(ok);
    try {
      await seedPrincipals(node);
      const stream = (await node.api('POST', '/ssf/stream', { delivery: { method: PUSH, endpoint_url: first.url, authorization_header: 'Bearer kept-4711' }, events_requested: [SESSION_REVOKED] })).body.stream_id;
      const revoke = async (id: string) => {
        await node.api('POST', '/v1/agents', agentBody({ id }));
        await node.api('POST', `/v1/agents/${id}/revoke`, { mode: 'immediate', reason: 'x' });
      };
      expect((await node.api('PATCH', '/ssf/stream', { stream_id: stream, delivery: { method: PUSH, endpoint_url: first.url }, description: 'renamed' })).status).toBe(200);
      await revoke('patch-1');
      await eventually(() => first.sets.length === 1, 3000);
      expect(first.authorizations).toEqual(['Bearer kept-4711']);
      expect((await node.api('PATCH', '/ssf/stream', { stream_id: stream, delivery: { method: PUSH, endpoint_url: second.url } })).status).toBe(200);
      await revoke('patch-2');
      await eventually(() => second.sets.length === 1, 3000);
      expect(second.authorizations).toEqual([undefined]);
      expect(await node.connection.db.selectFrom('ssf_push_credentials').selectAll().execute()).toEqual([]);
    } finally {
      await node.close();
      await closeServer(first.server);
      await closeServer(second.server);
    }
  }, 20_000);
});

describe('a node that cannot sign', () => {
  // A node with no signing key it may use (past its signUntil, or another process published a
  // key under its node id) kept the push lease, renewing it at every retry, while the nodes that
  // could sign stood by: the stream's SETs went nowhere for as long as that node ran.
  it('leaves the stream to a node that can (real PostgreSQL, two nodes)', async () => {
    const backend = await freshPostgres();
    const receiver = await receiverAnswering((res) => res.writeHead(202).end());
    const a = await startTestNode(backend, { nodeId: 'a', ssf: { backoffMs: () => 50 } });
    let b: TestNode | undefined;
    try {
      await seedPrincipals(a);
      await a.api('POST', '/ssf/stream', { delivery: { method: PUSH, endpoint_url: receiver.url }, events_requested: [SESSION_REVOKED] });
      await a.api('POST', '/v1/agents', agentBody({ id: 'sign-1' }));
      await a.api('POST', '/v1/agents/sign-1/revoke', { mode: 'immediate', reason: 'x' });
      await eventually(() => receiver.sets.length === 1, 3000);
      b = await startTestNode(backend, { nodeId: 'b', ssf: { backoffMs: () => 50 } });
      // What NodeSigner.sign answers when the node's key may not be used.
      a.signer.sign = async () => null;
      await a.api('POST', '/v1/agents', agentBody({ id: 'sign-2' }));
      await a.api('POST', '/v1/agents/sign-2/revoke', { mode: 'immediate', reason: 'x' });
      await eventually(() => receiver.sets.length === 2, 8000);
      expect(decodeProtectedHeader(receiver.sets[1]!).kid).toBe(b.signer.kid);
    } finally {
      await b?.close();
      await a.close();
      await closeServer(receiver.server);
    }
  }, 30_000);
});

describe('the push lease between nodes whose clocks differ', () => {
  // The lease was written and checked by each node's own clock: a node whose clock ran a lease's
  // length ahead saw every lease as run out, took it from the node pushing, and both pushed.
  // (PostgreSQL: PGlite runs in this process and would read the faked clock too.)
  it('a node whose clock runs ahead does not take a lease another node holds (real PostgreSQL)', async () => {
    const node = await startTestNode(await freshPostgres());
    try {
      const stream = (await node.api('POST', '/ssf/stream', {})).body.stream_id;
      const db = node.connection.db;
      expect(await takeLease(db, stream, 1, 'on-time', 10_000)).not.toBeNull();
      vi.useFakeTimers({ toFake: ['Date'] });
      vi.setSystemTime(Date.now() + 60_000);
      expect(await takeLease(db, stream, 1, 'ahead', 10_000)).toBeNull();
      vi.useRealTimers();
      expect(await takeLease(db, stream, 1, 'on-time', 10_000)).not.toBeNull();
    } finally {
      vi.useRealTimers();
      await node.close();
    }
  });
});

describe('many polls waiting at once', () => {
  // Every commit woke every waiting poll, and each read the stream, its acknowledgements and the
  // log again: a caller holding open a thousand polls made each commit a thousand rounds of
  // queries on the database the decisions use. A few may wait on a stream; the rest answer at once.
  it('past four waiting on a stream, a poll answers at once', async () => {
    const node = await startTestNode(await freshPostgres(), { ssf: { longPollMs: 2500 } });
    try {
      const stream = (await node.api('POST', '/ssf/stream', {})).body.stream_id;
      const other = (await node.api('POST', '/ssf/stream', {})).body.stream_id;
      const started = performance.now();
      const answeredAt: number[] = [];
      const polls = Array.from({ length: 10 }, () => node.api('POST', `/ssf/poll/${stream}`, {}).then((res) => {
        answeredAt.push(performance.now() - started);
        return res;
      }));
      // Another stream's poll still waits: the bound is per stream.
      const elsewhere = node.api('POST', `/ssf/poll/${other}`, {}).then(() => performance.now() - started);
      const answers = await Promise.all(polls);
      expect(answers.every((a) => a.status === 200)).toBe(true);
      expect(answeredAt.filter((t) => t < 1500)).toHaveLength(6);
      expect(answeredAt.filter((t) => t >= 2300)).toHaveLength(4);
      expect(await elsewhere).toBeGreaterThanOrEqual(2300);
      // Once they answered, polls wait again.
      const again = performance.now();
      await node.api('POST', `/ssf/poll/${stream}`, { maxEvents: 1 });
      expect(performance.now() - again).toBeGreaterThanOrEqual(2300);
    } finally {
      await node.close();
    }
  }, 30_000);
});

describe('the push receiver\'s header, wherever it might surface', () => {
  // Not a fix: a check that the secret stays in its table through everything that logs or
  // answers: creation, an update with a new header, a refused header, and pushes that fail
  // every way (5xx, 400s, a refused connection), with the log at its most verbose.
  it('is in no log line, no answer and no event', async () => {
    const lines: string[] = [];
    const stream = new Writable({ write(chunk, _enc, done) { lines.push(String(chunk)); done(); } });
    const node = await startTestNode(await freshPostgres(), { logger: { level: 'trace', stream } as never, ssf: { backoffMs: () => 20 } });
    const answers = [503, 400, 401, 302];
    const receiver = await receiverAnswering((res) => {
      const status = answers.shift();
      if (status === 400) res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ err: 'invalid_key', description: `echo ${receiver.authorizations.at(-1)}` }));
      else if (status === 302) res.writeHead(302, { location: `https://evil.example/?${receiver.authorizations.at(-1)}` }).end();
      else res.writeHead(status ?? 202).end(status ? `echo ${receiver.authorizations.at(-1)}` : undefined);
    });
    const seen: unknown[] = [];
    const api = async (method: string, url: string, body?: unknown) => {
      const res = await node.api(method, url, body);
      seen.push(res.headers, res.body);
      return res;
    };
    try {
      await seedPrincipals(node);
      const created = await api('POST', '/ssf/stream', { delivery: { method: PUSH, endpoint_url: receiver.url, authorization_header: 'Bearer first-secret-4711' }, events_requested: [SESSION_REVOKED] });
      const id = created.body.stream_id;
      await api('PATCH', '/ssf/stream', { stream_id: id, delivery: { method: PUSH, endpoint_url: receiver.url, authorization_header: 'Bearer second-secret-4712' } });
      await api('PATCH', '/ssf/stream', { stream_id: id, delivery: { method: PUSH, endpoint_url: receiver.url, authorization_header: 'Bearer bad-secret-4713\nX: 1' } });
      await api('POST', '/ssf/stream', { delivery: { method: PUSH, endpoint_url: 'ftp://x', authorization_header: 'Bearer refused-secret-4714' } });
      await node.api('POST', '/v1/agents', agentBody({ id: 'leak-1' }));
      await node.api('POST', '/v1/agents/leak-1/revoke', { mode: 'immediate', reason: 'x' });
      await eventually(() => receiver.sets.length >= 5, 5000);
      expect(receiver.authorizations.at(-1)).toBe('Bearer second-secret-4712');
      // And a receiver gone: connection refused.
      await closeServer(receiver.server);
      await node.api('POST', '/v1/agents', agentBody({ id: 'leak-2' }));
      await node.api('POST', '/v1/agents/leak-2/revoke', { mode: 'immediate', reason: 'x' });
      await new Promise((r) => setTimeout(r, 300));
      await api('GET', '/ssf/stream');
      await api('GET', `/ssf/stream?stream_id=${id}`);
      const events = await node.connection.db.selectFrom('events').selectAll().execute();
      const everything = JSON.stringify([lines, seen, events]);
      expect(lines.join('')).toContain('security event push failed');
      for (const secret of ['first-secret', 'second-secret', 'bad-secret', 'refused-secret']) expect(everything).not.toContain(secret);
    } finally {
      await node.close();
      await closeServer(receiver.server);
    }
  }, 30_000);
});
