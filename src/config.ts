import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { hostname } from 'node:os';
import type { HumanPins } from './humans/human-tokens.ts';
import type { Backend } from './store/connect.ts';

export interface Config {
  port: number;
  host: string;
  databaseUrl: string | null;
  natsUrl: string | null;
  dataDir: string;
  cedarDir: string;
  nodeId: string;
  adminToken: string | null;
  /** Bearer tokens for PEPs calling the AuthZEN API (`LEASH_PEP_TOKENS`, comma-separated). */
  pepTokens: string[];
  logLevel: string;
  /** Broadcast silence after which a node stops trusting its caches (SPEC §6, default 1000 ms). */
  stalenessMs: number;
  /** How long `leash serve`'s event loop may stand still before the process is ended (0: never). */
  watchdogMs: number;
  /**
   * `LEASH_ALLOW_PRIVATE_URLS` ("1"/"true"): an agent's `jwksUri` may name loopback, private
   * and link-local hosts (and plain http on loopback). Off by default: whoever registers an
   * agent must not be able to make a node fetch from its own network.
   */
  allowPrivateUrls: boolean;
  /** `LEASH_MAX_DELEGATION_DEPTH`: most agents in a token's `act` chain, the acting one included (default 4). */
  maxDelegationDepth: number;
  /**
   * `LEASH_PUBLIC_URL`: where callers reach this service (behind a proxy, its outside address);
   * the metadata documents name their endpoints under it, never under a caller's Host header.
   */
  publicUrl: string;
  /** `LEASH_TOKEN_AUDIENCE`: the `aud` of the tokens Leash issues when the request names no `resource` (default `leash`). */
  tokenAudience: string;
  /** `LEASH_HUMAN_*`: the identity provider people sign in with for admin calls; null: none (the operator token only). */
  humanPins: HumanPins | null;
  /** `LEASH_APPROVAL_TTL_SECONDS`: how long an approval may be answered and used (default 300). */
  approvalTtlSeconds: number;
  /** `LEASH_APPROVAL_WEBHOOK`: where pending approvals are POSTed as signed JWTs; null: NATS only. */
  approvalWebhook: string | null;
  /** `LEASH_MONITORING`: `on` (default) runs the detectors on this node's decisions; `off` runs none (measuring what they cost). */
  monitoring: boolean;
  /** `LEASH_METRICS_TOKEN`: a token that reads `GET /metrics` and nothing else; null: the operator token only. */
  metricsToken: string | null;
  /** `LEASH_METRICS`: `on` (default) keeps the metrics `GET /metrics` shows; `off` keeps none (measuring what they cost). */
  metrics: boolean;
}

export type ConfigInput = Partial<Record<'PORT' | 'HOST' | 'DATABASE_URL' | 'NATS_URL' | 'LEASH_DATA_DIR' | 'LEASH_CEDAR_DIR' | 'LEASH_NODE_ID' | 'LEASH_ADMIN_TOKEN' | 'LEASH_PEP_TOKENS' | 'LOG_LEVEL' | 'LEASH_STALENESS_MS' | 'LEASH_WATCHDOG_MS' | 'LEASH_ALLOW_PRIVATE_URLS' | 'LEASH_MAX_DELEGATION_DEPTH' | 'LEASH_PUBLIC_URL' | 'LEASH_TOKEN_AUDIENCE' | 'LEASH_HUMAN_ISSUER' | 'LEASH_HUMAN_AUDIENCE' | 'LEASH_HUMAN_JWKS_URI' | 'LEASH_HUMAN_JWKS_FILE' | 'LEASH_HUMAN_ALGORITHMS' | 'LEASH_APPROVAL_TTL_SECONDS' | 'LEASH_APPROVAL_WEBHOOK' | 'LEASH_MONITORING' | 'LEASH_METRICS_TOKEN' | 'LEASH_METRICS', string>>;

/** Reads SPEC §1 settings; CLI flags arrive here under the same names as the env vars. */
export function loadConfig(env: ConfigInput = process.env): Config {
  const port = Number(env.PORT ?? 8080);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`PORT must be a port number, got ${JSON.stringify(env.PORT)}`);
  const adminToken = env.LEASH_ADMIN_TOKEN || null;
  if (adminToken !== null && adminToken.length < 16) throw new Error('LEASH_ADMIN_TOKEN must be at least 16 characters');
  const stalenessMs = Number(env.LEASH_STALENESS_MS || 1000);
  if (!Number.isInteger(stalenessMs) || stalenessMs < 50 || stalenessMs > 60_000) {
    throw new Error(`LEASH_STALENESS_MS must be a whole number of milliseconds from 50 to 60000, got ${JSON.stringify(env.LEASH_STALENESS_MS)}`);
  }
  const watchdogMs = Number(env.LEASH_WATCHDOG_MS || 30_000);
  if (!Number.isInteger(watchdogMs) || (watchdogMs !== 0 && (watchdogMs < 100 || watchdogMs > 3_600_000))) {
    throw new Error(`LEASH_WATCHDOG_MS must be 0 (off) or a whole number of milliseconds from 100 to 3600000, got ${JSON.stringify(env.LEASH_WATCHDOG_MS)}`);
  }
  const allowPrivate = (env.LEASH_ALLOW_PRIVATE_URLS ?? '').trim().toLowerCase();
  // A value that is neither is refused rather than read as "off": `yes` meant something.
  if (!['', '0', 'false', '1', 'true'].includes(allowPrivate)) {
    throw new Error(`LEASH_ALLOW_PRIVATE_URLS must be 1, true, 0 or false, got ${JSON.stringify(env.LEASH_ALLOW_PRIVATE_URLS)}`);
  }
  const maxDelegationDepth = Number(env.LEASH_MAX_DELEGATION_DEPTH || 4);
  if (!Number.isInteger(maxDelegationDepth) || maxDelegationDepth < 1 || maxDelegationDepth > 32) {
    throw new Error(`LEASH_MAX_DELEGATION_DEPTH must be a whole number of agents from 1 to 32, got ${JSON.stringify(env.LEASH_MAX_DELEGATION_DEPTH)}`);
  }
  const host = env.HOST || '127.0.0.1';
  const publicUrl = publicUrlOf(env.LEASH_PUBLIC_URL, `http://${host === '0.0.0.0' || host === '::' ? 'localhost' : host.includes(':') ? `[${host}]` : host}:${port}`);
  const tokenAudience = env.LEASH_TOKEN_AUDIENCE || 'leash';
  if (tokenAudience.length > 500 || /[\s\x00-\x1f\x7f]/.test(tokenAudience)) {
    throw new Error(`LEASH_TOKEN_AUDIENCE must be 1 to 500 characters without spaces or control characters, got ${JSON.stringify(env.LEASH_TOKEN_AUDIENCE)}`);
  }
  const approvalTtlSeconds = Number(env.LEASH_APPROVAL_TTL_SECONDS || 300);
  if (!Number.isInteger(approvalTtlSeconds) || approvalTtlSeconds < 10 || approvalTtlSeconds > 86_400) {
    throw new Error(`LEASH_APPROVAL_TTL_SECONDS must be a whole number of seconds from 10 to 86400, got ${JSON.stringify(env.LEASH_APPROVAL_TTL_SECONDS)}`);
  }
  const approvalWebhook = env.LEASH_APPROVAL_WEBHOOK || null;
  if (approvalWebhook !== null) {
    const url = URL.parse(approvalWebhook);
    // Named in no log line: a webhook URL may carry a secret of the receiver's.
    if (!url || !['https:', 'http:'].includes(url.protocol)) throw new Error('LEASH_APPROVAL_WEBHOOK must be an http(s) URL');
    // fetch refuses them, and its refusal quotes the URL: a secret for the receiver goes in the path or query.
    if (url.username || url.password) throw new Error('LEASH_APPROVAL_WEBHOOK must not carry a user name or password (put a secret in its path or query)');
  }
  const monitoring = env.LEASH_MONITORING || 'on';
  if (monitoring !== 'on' && monitoring !== 'off') throw new Error(`LEASH_MONITORING must be on or off, got ${JSON.stringify(env.LEASH_MONITORING).slice(0, 40)}`);
  const metrics = env.LEASH_METRICS || 'on';
  if (metrics !== 'on' && metrics !== 'off') throw new Error(`LEASH_METRICS must be on or off, got ${JSON.stringify(env.LEASH_METRICS).slice(0, 40)}`);
  const metricsToken = env.LEASH_METRICS_TOKEN || null;
  if (metricsToken !== null && !/^[\x21-\x7e]{16,4096}$/.test(metricsToken)) throw new Error('LEASH_METRICS_TOKEN must be 16 to 4096 visible ASCII characters');
  const pepTokens = (env.LEASH_PEP_TOKENS ?? '').split(',').map((t) => t.trim()).filter(Boolean);
  if (pepTokens.some((t) => t.length < 16)) throw new Error('each LEASH_PEP_TOKENS entry must be at least 16 characters');
  return {
    port,
    host,
    databaseUrl: env.DATABASE_URL || null,
    natsUrl: env.NATS_URL || null,
    dataDir: resolve(env.LEASH_DATA_DIR || './.leash'),
    cedarDir: resolve(env.LEASH_CEDAR_DIR || './cedar'),
    nodeId: env.LEASH_NODE_ID || `${hostname()}-${process.pid}`,
    adminToken,
    pepTokens,
    logLevel: env.LOG_LEVEL || 'info',
    stalenessMs,
    watchdogMs,
    allowPrivateUrls: allowPrivate === '1' || allowPrivate === 'true',
    maxDelegationDepth,
    publicUrl,
    tokenAudience,
    humanPins: humanPinsOf(env),
    approvalTtlSeconds,
    approvalWebhook,
    monitoring: monitoring === 'on',
    metricsToken,
    metrics: metrics === 'on',
  };
}

const HUMAN_ALGORITHMS = ['ES256', 'ES384', 'ES512', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'EdDSA'];

/** The identity provider's pins, all or nothing: a half-configured sign-in is a mistake, not "off". */
function humanPinsOf(env: ConfigInput): HumanPins | null {
  const { LEASH_HUMAN_ISSUER: issuer, LEASH_HUMAN_AUDIENCE: audience, LEASH_HUMAN_JWKS_URI: uri, LEASH_HUMAN_JWKS_FILE: file, LEASH_HUMAN_ALGORITHMS: algs } = env;
  if (!issuer && !audience && !uri && !file && !algs) return null;
  const missing = [!issuer && 'LEASH_HUMAN_ISSUER', !audience && 'LEASH_HUMAN_AUDIENCE', !uri && !file && 'LEASH_HUMAN_JWKS_URI or LEASH_HUMAN_JWKS_FILE'].filter(Boolean);
  if (missing.length > 0) throw new Error(`human sign-in needs ${missing.join(', ')} (or none of the LEASH_HUMAN_* settings)`);
  if (uri && file) throw new Error('set one of LEASH_HUMAN_JWKS_URI and LEASH_HUMAN_JWKS_FILE, not both');
  if (uri) {
    let url: URL | null = null;
    try {
      url = new URL(uri);
    } catch {
      // refused below
    }
    if (!url || !['https:', 'http:'].includes(url.protocol)) throw new Error(`LEASH_HUMAN_JWKS_URI must be an http(s) URL, got ${JSON.stringify(uri)}`);
  }
  const algorithms = (algs || 'ES256,RS256').split(',').map((a) => a.trim()).filter(Boolean);
  const unknown = algorithms.filter((a) => !HUMAN_ALGORITHMS.includes(a));
  if (algorithms.length === 0 || unknown.length > 0) throw new Error(`LEASH_HUMAN_ALGORITHMS must list asymmetric JWS algorithms (${HUMAN_ALGORITHMS.join(', ')}), got ${JSON.stringify(algs)}`);
  return { issuer: issuer!, audience: audience!, algorithms, jwks: uri ? { uri } : { file: resolve(file!) } };
}

/** An http(s) URL with no query, fragment or credentials, without a trailing slash. */
function publicUrlOf(given: string | undefined, fallback: string): string {
  if (!given) return fallback;
  let url: URL;
  try {
    url = new URL(given);
  } catch {
    throw new Error(`LEASH_PUBLIC_URL must be a URL, got ${JSON.stringify(given)}`);
  }
  if (!['http:', 'https:'].includes(url.protocol) || url.search || url.hash || url.username || url.password) {
    throw new Error(`LEASH_PUBLIC_URL must be an http(s) URL without query, fragment or credentials, got ${JSON.stringify(given)}`);
  }
  return url.toString().replace(/\/+$/, '');
}

export function backendOf(config: Config): Backend {
  return config.databaseUrl ? { kind: 'postgres', url: config.databaseUrl } : { kind: 'pglite', dataDir: config.dataDir };
}

export const adminTokenFile = (dataDir: string): string => join(dataDir, 'admin-token');

/**
 * The operator token. Embedded mode generates one on first start and keeps it (0600) in
 * the data dir; with a shared database every node must be given the same token.
 */
export function resolveAdminToken(config: Config): { token: string; generatedAt: string | null } {
  if (config.adminToken) return { token: config.adminToken, generatedAt: null };
  if (config.databaseUrl) throw new Error('LEASH_ADMIN_TOKEN is required when DATABASE_URL is set (every node needs the same operator token)');
  const file = adminTokenFile(config.dataDir);
  let stored: string | null = null;
  try {
    stored = readFileSync(file, 'utf8').trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (stored !== null) {
    if (stored.length < 16) throw new Error(`${file} does not hold a usable operator token; delete it to generate a new one`);
    return { token: stored, generatedAt: null };
  }
  mkdirSync(config.dataDir, { recursive: true });
  const token = `lsh_${randomBytes(32).toString('base64url')}`;
  writeFileSync(file, `${token}\n`, { mode: 0o600, flag: 'wx' });
  return { token, generatedAt: file };
}
