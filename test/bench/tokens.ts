// POST /oauth/token under load: `leash serve` in its own process on PostgreSQL, autocannon in
// this one, every request with a client assertion of its own (signed before the timed window,
// so this process's signing is not measured). Each token costs the server the assertion's
// signature check, the details checked against the agent's ceiling (Cedar), the access token's
// ES256 signature and the assertion's jti written to Postgres (durable; group-committed with the jtis of concurrent requests). The
// baseline is the crypto floor: jose signing and verifying the same kind of token, in this
// process, one at a time. Not a test: it measures, it asserts nothing.
import { performance } from 'node:perf_hooks';
import { createLocalJWKSet, exportJWK, generateKeyPair, jwtVerify, SignJWT } from 'jose';
import { clientCredentialsForm, signAssertion } from '../../src/tokens/request.ts';
import { measured, READ_INVOICES, seed, startServer, type HttpResult, type SeededAgent } from './http.ts';

export interface Latencies {
  perSecond: number;
  /** Per operation, ms. */
  median: number;
  p99: number;
}

export interface TokenRun {
  agents: number;
  /** Per connection count, in the order asked. */
  runs: { connections: number; result: HttpResult; presigned: number; presignSeconds: number }[];
  floor: Latencies;
}

/** Pre-signed form bodies, one per request, round robin over the agents; each assertion valid for 60 s from its signing. */
async function forms(agents: SeededAgent[], endpoint: string, count: number): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    const a = agents[i % agents.length]!;
    out.push(new URLSearchParams(clientCredentialsForm(await signAssertion(a.privateKey, { agent: a.id, endpoint, alg: 'ES256', kid: 'k1' }), READ_INVOICES)).toString());
  }
  return out;
}

/**
 * The crypto floor: what the server's two signature operations per token (the assertion's
 * verify, the access token's sign) cost by themselves, one at a time on this process's thread
 * (WebCrypto, as the server uses it): an ES256 SignJWT of access-token-like claims, then jwtVerify of it.
 */
export async function cryptoFloor(seconds: number): Promise<Latencies> {
  const { publicKey, privateKey } = await generateKeyPair('ES256');
  const keys = createLocalJWKSet({ keys: [{ ...(await exportJWK(publicKey)), alg: 'ES256', kid: 'k1' }] });
  const times: number[] = [];
  const op = async (i: number) => {
    const iat = Math.floor(Date.now() / 1000);
    const token = await new SignJWT({ client_id: 'invoice-bot', jti: `floor-${i}`, authorization_details: READ_INVOICES })
      .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: 'k1' }).setIssuer('http://127.0.0.1').setSubject('invoice-bot').setAudience('leash')
      .setIssuedAt(iat).setExpirationTime(iat + 300).sign(privateKey);
    await jwtVerify(token, keys, { issuer: 'http://127.0.0.1', audience: 'leash', algorithms: ['ES256'], requiredClaims: ['exp', 'jti'] });
  };
  for (let i = 0; i < 500; i++) await op(i); // warm-up
  const start = performance.now();
  const deadline = start + seconds * 1000;
  for (let i = 0; performance.now() < deadline; i++) {
    const t = performance.now();
    await op(i);
    times.push(performance.now() - t);
  }
  const elapsed = (performance.now() - start) / 1000;
  times.sort((a, b) => a - b);
  const at = (p: number) => times[Math.min(times.length - 1, Math.floor(p * times.length))]!;
  return { perSecond: times.length / elapsed, median: at(0.5), p99: at(0.99) };
}

export async function benchTokens(databaseUrl: string, options: { seconds: number; connections: number[]; agents: number; floorSeconds: number }): Promise<TokenRun> {
  // The floor first, with no server running: this process alone on the machine's cores.
  const floor = await cryptoFloor(options.floorSeconds);
  const server = await startServer({ DATABASE_URL: databaseUrl });
  try {
    const { agents } = await seed(server.url, options.agents);
    const metadata = (await (await fetch(`${server.url}/.well-known/oauth-authorization-server`)).json()) as { token_endpoint: string };
    const endpoint = metadata.token_endpoint;
    const probe = await fetch(endpoint, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: (await forms(agents, endpoint, 1))[0] });
    if (probe.status !== 200) throw new Error(`POST /oauth/token refused the benchmark's request: ${probe.status} ${await probe.text()}`);

    // One body per request: a replayed assertion would be refused (401), and counted as non-2xx.
    const run = async (connections: number, seconds: number, bodies: string[]) => {
      let next = 0;
      const options = {
        url: endpoint, connections, duration: seconds, method: 'POST' as const, headers: { 'content-type': 'application/x-www-form-urlencoded' },
        requests: [{ method: 'POST' as const, setupRequest: (req: object) => ({ ...req, body: bodies[next++ % bodies.length] }) }],
      };
      const result = await measured(server.child.pid!, options, databaseUrl);
      if (next > bodies.length) throw new Error(`the token benchmark ran out of pre-signed assertions (${bodies.length} for ${next} requests); raise its budget`);
      return result;
    };
    // Enough assertions for this rate per second; more would only lengthen the signing before each run.
    const budget = (seconds: number) => Math.round(seconds * Number(process.env.BENCH_TOKEN_BUDGET_PER_SECOND ?? 4500));
    await run(options.connections[0]!, 2, await forms(agents, endpoint, budget(2))); // warm-up
    const runs: TokenRun['runs'] = [];
    for (const connections of options.connections) {
      const t = performance.now();
      const bodies = await forms(agents, endpoint, budget(options.seconds));
      const presignSeconds = (performance.now() - t) / 1000;
      runs.push({ connections, result: await run(connections, options.seconds, bodies), presigned: bodies.length, presignSeconds });
    }
    return { agents: agents.length, runs, floor };
  } finally {
    await server.stop();
  }
}
