import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { BlockList, isIP, type LookupFunction } from 'node:net';

// The one way Leash reaches out to a URL someone else chose (an agent's `jwksUri`). Whoever
// may register an agent picks that URL, so without rules a node would fetch, on their behalf,
// from its own network: cloud metadata at 169.254.169.254, admin ports on loopback, services
// behind the firewall. The rules: https only; no address that is not public (unless
// LEASH_ALLOW_PRIVATE_URLS), checked on what the name resolves to and connected to exactly
// that address (a second resolution could answer differently: DNS rebinding); no redirects;
// a deadline over the whole exchange; and a cap on what is read.

/** Why an outbound fetch was refused or failed: for the server log only, never for the caller. */
export class OutboundFailure extends Error {
  override readonly name = 'OutboundFailure';
}

// IPv4 ranges that are not the public internet (RFC 6890 special-purpose registry).
const V4_SPECIAL: [string, number][] = [
  ['0.0.0.0', 8], // "this network", 0.0.0.0 itself connects to the local host
  ['10.0.0.0', 8], // private
  ['100.64.0.0', 10], // carrier-grade NAT
  ['127.0.0.0', 8], // loopback
  ['169.254.0.0', 16], // link-local (cloud metadata lives here)
  ['172.16.0.0', 12], // private
  ['192.0.0.0', 24], // IETF protocol assignments
  ['192.0.2.0', 24], // documentation
  ['192.88.99.0', 24], // 6to4 relay anycast
  ['192.168.0.0', 16], // private
  ['198.18.0.0', 15], // benchmarking
  ['198.51.100.0', 24], // documentation
  ['203.0.113.0', 24], // documentation
  ['224.0.0.0', 4], // multicast
  ['240.0.0.0', 4], // reserved, and 255.255.255.255 broadcast
];

const V6_SPECIAL: [string, number][] = [
  ['::', 96], // unspecified (::), IPv4-compatible (deprecated) and loopback (::1)
  ['64:ff9b:1::', 48], // local-use IPv4/IPv6 translation
  ['100::', 64], // discard-only
  ['2001::', 23], // IETF protocol assignments (Teredo, ORCHID…)
  ['2001:db8::', 32], // documentation
  ['fc00::', 7], // unique-local
  ['fe80::', 10], // link-local
  ['fec0::', 10], // site-local (deprecated)
  ['ff00::', 8], // multicast
];

const hex4 = (v4: string) => {
  const [a, b, c, d] = v4.split('.').map(Number) as [number, number, number, number];
  return `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
};

const special = new BlockList();
for (const [net, prefix] of V4_SPECIAL) {
  // BlockList matches IPv4-mapped IPv6 (::ffff:a.b.c.d) against IPv4 rules by itself; an IPv4
  // address embedded by NAT64 (64:ff9b::/96) or 6to4 (2002::/16) reaches the same host, so
  // each range is refused in those forms too.
  special.addSubnet(net, prefix, 'ipv4');
  special.addSubnet(`64:ff9b::${hex4(net)}`, 96 + prefix, 'ipv6');
  special.addSubnet(`2002:${hex4(net)}::`, 16 + prefix, 'ipv6');
}
for (const [net, prefix] of V6_SPECIAL) special.addSubnet(net, prefix, 'ipv6');

/** Loopback, private, link-local, unique-local, CGNAT, multicast, unspecified, reserved: anything but a public unicast address. */
export function isPrivateAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 0) return true; // not an address at all: never connect to it
  return special.check(address, family === 4 ? 'ipv4' : 'ipv6');
}

/** `[::1]` → `::1`, `localhost.` → `localhost`: the host as an address or a name. */
const bareHost = (url: URL) => url.hostname.replace(/^\[(.*)\]$/, '$1').replace(/\.$/, '').toLowerCase();

const isLocalhostName = (host: string) => host === 'localhost' || host.endsWith('.localhost'); // RFC 6761: always loopback

const loopback = new BlockList();
loopback.addSubnet('127.0.0.0', 8, 'ipv4');
loopback.addAddress('::1', 'ipv6');

const isLoopbackHost = (host: string) => isLocalhostName(host) || (isIP(host) !== 0 && loopback.check(host, isIP(host) === 4 ? 'ipv4' : 'ipv6'));

/**
 * The rules a URL itself must meet (registration refuses it with this text; a fetch refuses
 * it too, for URLs registered before the rules). A host *name* is checked here only when it
 * names loopback by definition; every other name is checked on what it resolves to, at fetch.
 */
export function urlProblem(url: URL, allowPrivateUrls: boolean): string | null {
  const host = bareHost(url);
  if (url.username || url.password) return 'must not carry credentials';
  if (url.protocol === 'http:') {
    if (allowPrivateUrls && isLoopbackHost(host)) return null;
    return allowPrivateUrls ? 'must use https (plain http only to loopback)' : 'must use https';
  }
  if (url.protocol !== 'https:') return 'must use https';
  if (!allowPrivateUrls && (isLocalhostName(host) || (isIP(host) !== 0 && isPrivateAddress(host)))) {
    return 'must name a public host (loopback, private and link-local addresses are refused unless LEASH_ALLOW_PRIVATE_URLS is set)';
  }
  return null;
}

export type Resolver = (hostname: string) => Promise<LookupAddress[]>;

const systemResolver: Resolver = (hostname) =>
  new Promise((resolve, reject) => dnsLookup(hostname, { all: true, verbatim: true }, (err, addresses) => (err ? reject(err) : resolve(addresses))));

export interface OutboundOptions {
  allowPrivateUrls: boolean;
  /** The whole exchange: resolution, connection, headers and body. */
  timeoutMs?: number;
  /** Reading stops (and the connection is closed) past this many bytes of body. */
  maxBytes?: number;
  /** How names are resolved (the system's `dns.lookup` by default). */
  resolve?: Resolver;
}

export const OUTBOUND_TIMEOUT_MS = 2_000;
export const OUTBOUND_MAX_BYTES = 64 * 1024;

/** The URL checked and its host resolved and vetted, under one deadline: where exactly a request may go. */
async function vetted(href: string, options: OutboundOptions, given?: AbortSignal) {
  const { allowPrivateUrls, timeoutMs = OUTBOUND_TIMEOUT_MS, maxBytes = OUTBOUND_MAX_BYTES, resolve = systemResolver } = options;
  const signal = AbortSignal.any([AbortSignal.timeout(timeoutMs), ...(given ? [given] : [])]);
  const url = new URL(href);
  const problem = urlProblem(url, allowPrivateUrls);
  if (problem) throw new OutboundFailure(`the URL ${problem}`);
  // (Resolved as written, a trailing dot included: that is the name the URL means.)
  const addresses = await vettedAddresses(url.hostname.replace(/^\[(.*)\]$/, '$1'), allowPrivateUrls, resolve, signal);
  return { url, addresses, signal, maxBytes };
}

/**
 * GET `href` under the rules above and give back its 200 response, fully read, as a fetch
 * `Response` (the shape jose's `customFetch` expects). Any other outcome throws, with an
 * `OutboundFailure` whose message says why (for the log).
 */
export async function outboundGet(href: string, init: { headers?: Headers | Record<string, string>; signal?: AbortSignal }, options: OutboundOptions): Promise<Response> {
  const { url, addresses, signal, maxBytes } = await vetted(href, options, init.signal);
  const { status, headers, body } = await exchange(url, addresses, { method: 'GET', headers: new Headers(init.headers), body: (s) => (s === 200 ? 'whole' : 'none') }, signal, maxBytes);
  // A redirect is refused, not followed: its target never went through these checks.
  if (status >= 300 && status < 400) throw new OutboundFailure(`HTTP ${status}: redirects are not followed`);
  if (status !== 200) throw new OutboundFailure(`HTTP ${status}`);
  return new Response(body, { status, headers: { 'content-type': String(headers['content-type'] ?? '') } });
}

/**
 * POST `body` to `href` under the same rules (a security event pushed to its receiver): the
 * status comes back, and for a status other than 2xx the first `maxBytes` of the response body
 * (the rest is not read); a 2xx is its status alone, whatever body follows it. A redirect is a
 * status like any other, never followed. Throws an `OutboundFailure` when no answer came
 * (refused URL or address, timeout, connection failure).
 */
export async function outboundPost(href: string, init: { headers: Record<string, string>; body: string; signal?: AbortSignal }, options: OutboundOptions): Promise<{ status: number; body: Buffer }> {
  const { url, addresses, signal, maxBytes } = await vetted(href, options, init.signal);
  const headers = new Headers(init.headers);
  headers.set('content-length', String(Buffer.byteLength(init.body)));
  // The receiver's verdict is its status: a 2xx took the request, whatever it sends after (a
  // page too large, or a body that never ends, must not make a delivered SET a failure).
  const { status, body } = await exchange(url, addresses, { method: 'POST', headers, send: init.body, body: (s) => (s >= 200 && s < 300 ? 'none' : 'capped') }, signal, maxBytes);
  return { status, body };
}

/** What the host resolves to, every address public (or private ones allowed): else refused. */
async function vettedAddresses(host: string, allowPrivateUrls: boolean, resolve: Resolver, signal: AbortSignal): Promise<LookupAddress[]> {
  const family = isIP(host);
  let addresses: LookupAddress[];
  if (family !== 0) {
    addresses = [{ address: host, family }];
  } else {
    try {
      addresses = await raceAbort(resolve(host), signal);
    } catch (err) {
      if (signal.aborted) throw new OutboundFailure('timed out resolving the host');
      throw new OutboundFailure(`cannot resolve the host: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    if (addresses.length === 0) throw new OutboundFailure('the host resolves to no address');
  }
  // Any one refused address refuses the host: which of them a connection would use is not ours to pick.
  const refused = addresses.find((a) => isPrivateAddress(a.address));
  if (refused && !allowPrivateUrls) throw new OutboundFailure(`the host resolves to a non-public address (${refused.address})`);
  return addresses;
}

function raceAbort<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

interface Exchange {
  method: 'GET' | 'POST';
  headers: Headers;
  send?: string;
  /**
   * What of the response body a status calls for: none (the status decides), the whole of it
   * (more than `maxBytes` is a failure), or its first `maxBytes` (the rest is not read).
   */
  body: (status: number) => 'none' | 'whole' | 'capped';
}

/** One request to exactly `addresses` (the name is kept for the Host header, SNI and the certificate check). */
function exchange(url: URL, addresses: LookupAddress[], request: Exchange, signal: AbortSignal, maxBytes: number): Promise<{ status: number; headers: IncomingMessage['headers']; body: Buffer }> {
  const { headers } = request;
  // Node asks `lookup` for the name it was given; the answer is the addresses checked above,
  // whatever DNS would say now. (For an address literal Node does not ask at all.)
  const pinned: LookupFunction = (_hostname, lookupOptions, callback) => {
    if (lookupOptions.all) callback(null, addresses);
    else callback(null, addresses[0]!.address, addresses[0]!.family);
  };
  const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    let settled = false;
    const fail = (reason: string) => {
      if (settled) return;
      settled = true;
      req.destroy();
      reject(new OutboundFailure(reason));
    };
    const req = send(url, {
      method: request.method,
      headers: Object.fromEntries(headers),
      lookup: pinned,
      agent: false, // a fresh connection: no pooled socket from an earlier, differently checked fetch
      maxHeaderSize: 16 * 1024,
    });
    const onAbort = () => fail('timed out');
    signal.addEventListener('abort', onAbort, { once: true });
    req.once('close', () => signal.removeEventListener('abort', onAbort));
    req.on('error', (err: NodeJS.ErrnoException) => fail(`request failed: ${err.code ?? err.message}`));
    req.once('response', (res) => {
      const length = Number(res.headers['content-length']);
      const status = res.statusCode ?? 0;
      const wanted = request.body(status);
      const done = (body: Buffer) => {
        settled = true;
        req.destroy();
        resolve({ status, headers: res.headers, body });
      };
      // Nothing of the body is wanted: the status decides.
      if (wanted === 'none') return done(Buffer.alloc(0));
      if (wanted === 'whole' && Number.isFinite(length) && length > maxBytes) return fail(`the response announces ${length} bytes, more than ${maxBytes}`);
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        if (settled) return;
        size += chunk.length;
        if (size <= maxBytes) return void chunks.push(chunk);
        if (wanted === 'whole') return fail(`the response is larger than ${maxBytes} bytes`);
        chunks.push(chunk.subarray(0, chunk.length - (size - maxBytes)));
        done(Buffer.concat(chunks));
      });
      res.once('aborted', () => fail('the response was cut off'));
      res.on('error', (err: NodeJS.ErrnoException) => fail(`reading the response failed: ${err.code ?? err.message}`));
      res.once('end', () => {
        if (settled) return;
        settled = true;
        resolve({ status, headers: res.headers, body: Buffer.concat(chunks) });
      });
    });
    req.end(request.send);
  });
}
