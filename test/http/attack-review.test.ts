import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freshPglite } from '../support/backends.ts';
import { startTestNode, type TestNode } from '../support/node.ts';

// Attack review of GET /v1/decisions and GET /metrics: each test names the attack and asserts
// the safe behaviour.

const METRICS_TOKEN = 'test-metrics-token-0123456789abcdef';
let node: TestNode;

beforeAll(async () => {
  node = await startTestNode(freshPglite(), { metricsToken: METRICS_TOKEN });
});
afterAll(async () => node?.close());

describe('time filters', () => {
  // The date-time format admits a leap second; Date does not, and the database refused the Invalid Date with a 500.
  it.each(['2026-12-31T23:59:60Z', '2026-06-30T23:59:60.5+00:00'])('GET /v1/decisions with a leap second (%s): a 400 naming the filter, never a 500', async (t) => {
    for (const key of ['since', 'until']) {
      const res = await node.api('GET', `/v1/decisions?${key}=${encodeURIComponent(t)}`);
      expect(res.status, key).toBe(400);
      expect(res.body).toMatchObject({ code: 'VALIDATION_FAILED', detail: expect.stringContaining(`querystring/${key}`) });
    }
  });

  it('POST /v1/audit/replay with a leap second: a 400, never a 500', async () => {
    for (const key of ['since', 'until']) {
      const res = await node.api('POST', '/v1/audit/replay', { [key]: '2026-12-31T23:59:60Z' });
      expect(res.status, key).toBe(400);
      expect(res.body.code).toBe('VALIDATION_FAILED');
    }
  });

  it.each(['2026-02-29T00:00:00Z', '10000-01-01T00:00:00Z', '2026-01-01T00:00:00+25:00', "2026-01-01T00:00:00Z' OR 1=1--"])('GET /v1/decisions?since=%s: refused by the schema', async (t) => {
    expect((await node.api('GET', `/v1/decisions?since=${encodeURIComponent(t)}`)).status).toBe(400);
  });

  it('before the epoch, and a cursor past 2^53: a page, not an error', async () => {
    expect((await node.api('GET', '/v1/decisions?since=1969-12-31T23:59:59Z')).status).toBe(200);
    expect((await node.api('GET', '/v1/decisions?after=9999999999999999&limit=1000')).status).toBe(200);
    expect((await node.api('GET', '/v1/decisions?limit=1001')).status).toBe(400);
  });
});

describe('GET /metrics', () => {
  it('the metrics token reads /metrics (GET, HEAD, an encoded path), and nothing else however the path or method is written', async () => {
    for (const [method, url] of [['GET', '/metrics'], ['HEAD', '/metrics'], ['GET', '/%6Detrics'], ['GET', '/metrics?x=1']] as const) {
      expect((await node.api(method, url, undefined, {}, METRICS_TOKEN)).status, `${method} ${url}`).toBe(200);
    }
    for (const [method, url] of [['GET', '/metrics/'], ['GET', '//metrics'], ['POST', '/metrics'], ['GET', '/v1/agents'], ['GET', '/v1/decisions'], ['GET', '/nope'], ['GET', '/v1/monitoring'], ['POST', '/access/v1/evaluation']] as const) {
      expect((await node.api(method, url, method === 'POST' ? {} : undefined, {}, METRICS_TOKEN)).status, `${method} ${url}`).toBe(401);
    }
  });

  it('no token reaches the metrics text', async () => {
    const text = (await node.api('GET', '/metrics')).body as unknown as string;
    expect(typeof text).toBe('string');
    expect(text).not.toContain(METRICS_TOKEN);
    expect(text).not.toContain('test-operator-token');
    expect(text).not.toContain('test-pep-token');
  });
});
