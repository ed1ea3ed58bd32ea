// Security event delivery (docs/operations.md): a node on PostgreSQL with one push stream to a
// receiver on loopback; agents revoked one at a time; for each, the time from the commit of
// its revocation (the node's own commit listener) to the receiver holding the SET. Baseline,
// in the same run to the same receiver: the outbound POST alone (a body of the same size),
// what any delivery costs before Leash does anything of its own. Not a test: it asserts nothing.
import { createServer } from 'node:http';
import { performance } from 'node:perf_hooks';
import { startNode } from '../../src/node.ts';
import { outboundPost } from '../../src/tokens/outbound-fetch.ts';
import type { Spread } from './monitoring.ts';

const ADMIN = 'bench-operator-token-0123456789';
const SESSION_REVOKED = 'https://schemas.openid.net/secevent/caep/event-type/session-revoked';

const spread = (xs: number[]): Spread => {
  const s = [...xs].sort((a, b) => a - b);
  return { median: s[Math.floor(s.length / 2)] ?? NaN, p99: s[Math.min(s.length - 1, Math.floor(s.length * 0.99))] ?? NaN };
};

export interface SetDeliveryRun {
  delivery: Spread;
  baseline: Spread;
  sets: number;
}

export async function benchSetDelivery(databaseUrl: string, cedarDir: string, count: number): Promise<SetDeliveryRun> {
  const arrived = new Map<number, number>();
  let size = 0;
  const receiver = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const set = Buffer.concat(chunks).toString();
      if (set.includes('.')) {
        // A SET (the baseline's bodies are not): note when the event at its log position arrived.
        size = set.length;
        const jti = JSON.parse(Buffer.from(set.split('.')[1]!, 'base64url').toString()).jti as string;
        arrived.set(Number(jti.slice(jti.lastIndexOf('.') + 1)), performance.now());
      }
      res.writeHead(202).end();
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  const endpoint = `http://127.0.0.1:${(receiver.address() as { port: number }).port}/events`;
  const node = await startNode({ backend: { kind: 'postgres', url: databaseUrl }, adminToken: ADMIN, nodeId: 'bench', cedarDir, allowPrivateUrls: true, monitoring: null });
  const committed = new Map<number, number>();
  node.store.onCommit((_, events) => {
    const at = performance.now();
    for (const e of events) if (e.type === 'AgentRevoked') committed.set(e.position, at);
  });
  const api = async (method: string, url: string, body: unknown) => {
    const res = await node.app.inject({ method: method as 'POST', url, headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' }, payload: JSON.stringify(body) });
    if (res.statusCode >= 300) throw new Error(`${method} ${url}: ${res.statusCode} ${res.body}`);
    return JSON.parse(res.body);
  };
  try {
    await api('POST', '/v1/humans', { id: 'alice', email: 'alice@example.com', groups: [] });
    await api('POST', '/ssf/stream', { delivery: { method: 'urn:ietf:rfc:8935', endpoint_url: endpoint }, events_requested: [SESSION_REVOKED] });
    const agent = (id: string) => ({
      id, owner: 'alice', purpose: 'bench', provenance: { model: 'm', modelVersion: '1', environment: 'production' }, trustScore: 50,
      credentials: { issuer: 'https://idp.example', audience: 'leash', algorithms: ['ES256'], clockSkewSeconds: 30, maxTokenLifetimeSeconds: 300, jwksUri: 'https://idp.example/jwks.json' },
      ceiling: { template: 'ceiling-folder', values: { '?resource': { type: 'Folder', id: 'f' } } },
    });
    for (let i = 0; i < count + 20; i++) await api('POST', '/v1/agents', agent(`a${i}`));
    // One at a time, each once the previous SET has arrived: the latency of one delivery, not a queue's.
    for (let i = 0; i < count + 20; i++) {
      const before = arrived.size;
      await api('POST', `/v1/agents/a${i}/revoke`, { mode: 'immediate', reason: 'bench' });
      while (arrived.size === before) await new Promise((r) => setImmediate(r));
    }
    const delivery = [...committed].filter(([position]) => arrived.has(position)).map(([position, at]) => arrived.get(position)! - at).slice(20);
    const body = 'x'.repeat(size);
    const baseline: number[] = [];
    for (let i = 0; i < count + 20; i++) {
      const t = performance.now();
      await outboundPost(endpoint, { headers: { 'content-type': 'application/secevent+jwt' }, body }, { allowPrivateUrls: true });
      if (i >= 20) baseline.push(performance.now() - t);
    }
    return { delivery: spread(delivery), baseline: spread(baseline), sets: delivery.length };
  } finally {
    await node.close();
    await new Promise<void>((resolve) => receiver.close(() => resolve()));
  }
}
