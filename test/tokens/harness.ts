import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Server as NetServer, Socket } from 'node:net';
import { SignJWT, exportJWK, generateKeyPair, type JWTPayload } from 'jose';
import type { AgentRecord, CredentialPins } from '../../src/registry/agent.ts';
import type { AgentLookup } from '../../src/tokens/verify.ts';

// The verifier on its own: a registry of agents built here (no node, no database), tokens
// signed here, JWKS endpoints on loopback.

export const ISSUER = 'https://idp.example';
export const keys = await generateKeyPair('ES256', { extractable: true });
export const jwk = { ...(await exportJWK(keys.publicKey)), alg: 'ES256', kid: 'k1' };

export const pins = (overrides: Partial<CredentialPins> = {}): CredentialPins => ({
  issuer: ISSUER, audience: 'leash', algorithms: ['ES256'], clockSkewSeconds: 30, maxTokenLifetimeSeconds: 300, jwks: { keys: [jwk] }, ...overrides,
});

export const remotePins = (jwksUri: string): CredentialPins => {
  const { jwks: _, ...rest } = pins();
  return { ...rest, jwksUri };
};

export function agent(id: string, credentials: CredentialPins = pins()): AgentRecord {
  return {
    id, status: 'active', owner: 'alice', purpose: 'test', provenance: { model: 'm', modelVersion: '1', environment: 'sandbox' }, trustScore: 50,
    groups: [], tags: [], credentials, ceiling: null, grants: [], tokensNotBefore: null, discovery: null, revocation: null, suspension: null,
    retirement: null, createdAt: '2020-01-01T00:00:00.000Z', updatedAt: '2020-01-01T00:00:00.000Z',
  };
}

export const registryOf = (...agents: AgentRecord[]): AgentLookup => {
  const found = new Map(agents.map((a) => [a.id, { record: a, version: 2 }]));
  return (id) => found.get(id);
};

export const nowSeconds = () => Math.floor(Date.now() / 1000);

/** Claims as given (iat/exp default to now and now + 120), signed with the k1 key. */
export async function mint(claims: Record<string, unknown>): Promise<string> {
  const iat = nowSeconds();
  const body: JWTPayload = { iss: ISSUER, aud: 'leash', iat, exp: iat + 120, ...claims };
  return new SignJWT(body).setProtectedHeader({ alg: 'ES256', kid: 'k1', typ: 'at+jwt' }).sign(keys.privateKey);
}

export interface LoopbackServer {
  url: string;
  port: number;
  /** TCP connections the server accepted. */
  connections: number;
  close(): Promise<void>;
}

export async function httpServer(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<LoopbackServer> {
  return listening(createServer(handler));
}

export async function listening(server: Server | NetServer): Promise<LoopbackServer> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const sockets = new Set<Socket>();
  const state: LoopbackServer = {
    url: `http://127.0.0.1:${port}`,
    port,
    connections: 0,
    close: () => new Promise<void>((resolve) => {
      for (const socket of sockets) socket.destroy();
      server.close(() => resolve());
    }),
  };
  server.on('connection', (socket: Socket) => {
    state.connections++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
  });
  return state;
}

/**
 * A JWKS endpoint that would send 10 MB, one 16 KiB chunk per turn of the event loop (so the
 * kernel's socket buffers do not decide how far it gets); `closedEarly` resolves on the
 * close, true when that came before everything was written.
 */
export function tenMegabytes(): { handler: (req: IncomingMessage, res: ServerResponse) => void; written: () => number; closedEarly: Promise<boolean> } {
  const total = 10 * 1024 * 1024;
  let written = 0;
  let closed!: (early: boolean) => void;
  const closedEarly = new Promise<boolean>((resolve) => (closed = resolve));
  const chunk = Buffer.alloc(16 * 1024, 0x20);
  return {
    written: () => written,
    closedEarly,
    handler: (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' }); // chunked: no length to refuse up front
      res.once('close', () => closed(written < total));
      res.write('{"keys":[');
      const pump = () => {
        if (res.destroyed) return;
        if (written >= total) return void res.end();
        written += chunk.length;
        res.write(chunk, () => setImmediate(pump));
      };
      pump();
    },
  };
}
