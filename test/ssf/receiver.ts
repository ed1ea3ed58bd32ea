import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify, type JSONWebKeySet, type JWTPayload } from 'jose';

// A push receiver (RFC 8935) as a receiving service would write one: a plain node:http server
// that takes each SET as the request body, answers 202, and verifies it with jose's jwtVerify
// against the transmitter's published JWKS, checking what RFC 8417 and SSF require of a SET.

export interface Received {
  headers: IncomingHttpHeaders;
  body: string;
  at: number;
}

export class PushReceiver {
  readonly received: Received[] = [];
  private server: Server | null = null;
  port = 0;
  /** Answers this status instead of 202 while set. */
  answer: number | null = null;

  async start(port = 0): Promise<string> {
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const status = this.answer ?? 202;
        if (status === 202) this.received.push({ headers: req.headers, body: Buffer.concat(chunks).toString('utf8'), at: performance.now() });
        res.writeHead(status, { 'content-type': 'application/json' }).end(status === 400 ? JSON.stringify({ err: 'invalid_request', description: 'refused by the test' }) : undefined);
      });
    });
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
    this.server = server;
    this.port = (server.address() as { port: number }).port;
    return `http://127.0.0.1:${this.port}/events`;
  }

  /** Down: nothing listens on the port (a connection is refused). */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = null;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Back on the same port. */
  async restart(): Promise<void> {
    await this.start(this.port);
  }
}

/** Verifies a SET as a receiver must, and gives back its claims; throws on any failure. */
export async function verifySet(set: string, jwks: JSONWebKeySet, expected: { issuer: string; audience: string }): Promise<JWTPayload & { sub_id: Record<string, unknown>; events: Record<string, Record<string, unknown>>; txn?: string }> {
  const header = decodeProtectedHeader(set);
  if (header.typ !== 'secevent+jwt') throw new Error(`typ is ${String(header.typ)}`);
  const { payload } = await jwtVerify(set, createLocalJWKSet(jwks), { issuer: expected.issuer, audience: expected.audience, typ: 'secevent+jwt', algorithms: ['ES256'] });
  // RFC 8417 §2.2 and SSF §4.1: jti, iat, events; sub_id; never sub or exp.
  if (typeof payload.jti !== 'string' || payload.jti.length === 0) throw new Error('no jti');
  if (typeof payload.iat !== 'number') throw new Error('no iat');
  if ('sub' in payload) throw new Error('a SET carries sub');
  if ('exp' in payload) throw new Error('a SET carries exp');
  const events = payload.events as Record<string, Record<string, unknown>> | undefined;
  if (!events || typeof events !== 'object' || Object.keys(events).length !== 1) throw new Error('events must hold exactly one event');
  const subId = payload.sub_id as Record<string, unknown> | undefined;
  if (!subId || typeof subId.format !== 'string') throw new Error('no sub_id with a format');
  return payload as never;
}

/** Polls `check` every 10 ms until it gives something truthy (that value), or fails after `timeoutMs`. */
export async function eventually<T>(check: () => T | undefined | false, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
