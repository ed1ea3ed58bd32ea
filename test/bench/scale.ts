// Many agents on one node: each agent with a ceiling link of its own (its own folder) and two
// grants (two more folders of its own), folded into the registry as a node folds them at
// start. What the registry holds, how long a cold start takes (the projection rebuilt from
// Postgres and the policy set compiled), and what a decision costs for an agent picked at
// random among them, next to the same for a node of 1,000 agents. Not a test: it measures.
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import * as cedar from '../../src/authz/cedar.ts';
import { preparedForm } from '../../src/authz/combined.ts';
import { evaluateAgent } from '../../src/authz/agent-decision.ts';
import { DecisionCaches } from '../../src/authz/decision-caches.ts';
import { compilePolicySet, type CompiledPolicySet } from '../../src/authz/policy-set.ts';
import { slotStats } from '../../src/authz/preparsed-slots.ts';
import { RegistryView } from '../../src/registry/registry-view.ts';
import { connect } from '../../src/store/connect.ts';
import { EventStore, insertEvents, type StoredEvent } from '../../src/store/event-store.ts';
import { Follower } from '../../src/store/follower.ts';
import { eventHash, GENESIS_HASH } from '../../src/store/hash-chain.ts';
import { migrateToLatest } from '../../src/store/migrate.ts';

const schema = readFileSync(new URL('../../cedar/schema.cedarschema', import.meta.url), 'utf8');
const policies = `
@id("agents-read") permit (principal in Group::"finance-agents", action == Action::"read", resource in Folder::"shared");
@id("owners-work") permit (principal in Group::"owners", action in [Action::"read", Action::"write"], resource);
@id("no-secrets") forbid (principal, action, resource in Folder::"secret");
@id("ceiling-folder") @layer("ceiling") permit (principal, action in [Action::"read", Action::"write"], resource in ?resource);
@id("grant-read") permit (principal == ?principal, action == Action::"read", resource in ?resource);
@id("grant-write") permit (principal == ?principal, action == Action::"write", resource in ?resource);
`;

const ISSUER = 'https://idp.example';
const at = new Date('2026-11-01T00:00:00.000Z');
const folder = (id: string) => ({ type: 'Folder', id });

/** The log of `agents` agents (and their owner and groups), hash-chained as the store keeps it. */
function logOf(agents: number, jwk: Record<string, unknown>): StoredEvent[] {
  const out: StoredEvent[] = [];
  let prevHash = GENESIS_HASH;
  const add = (streamType: string, id: string, version: number, type: string, data: Record<string, unknown>) => {
    const e = { position: out.length + 1, streamId: `${streamType}/${id}`, streamType, version, type, data, metadata: { actor: 'bench' }, at, idempotencyKey: null, prevHash };
    prevHash = eventHash(prevHash, e);
    out.push({ ...e, hash: prevHash });
  };
  add('group', 'finance-agents', 1, 'GroupRegistered', { id: 'finance-agents', parents: [] });
  add('group', 'owners', 1, 'GroupRegistered', { id: 'owners', parents: [] });
  add('human', 'alice', 1, 'HumanRegistered', { id: 'alice', email: 'alice@example.com', groups: ['owners'] });
  for (let i = 0; i < agents; i++) {
    const id = `agent-${i}`;
    add('agent', id, 1, 'AgentRegistered', {
      id, owner: 'alice', purpose: 'benchmark agent', provenance: { model: 'm', modelVersion: '1', environment: 'production' }, trustScore: 50,
      groups: ['finance-agents'], tags: ['bench'],
      credentials: { issuer: ISSUER, audience: 'leash', algorithms: ['ES256'], clockSkewSeconds: 30, maxTokenLifetimeSeconds: 3600, jwks: { keys: [jwk] } },
      ceiling: { template: 'ceiling-folder', values: { '?resource': folder(`home-${i}`) } },
    });
    add('agent', id, 2, 'AgentAuthorized', {
      grants: [{ template: 'grant-read', values: { '?resource': folder(`reads-${i}`) } }, { template: 'grant-write', values: { '?resource': folder(`writes-${i}`) } }],
      tokensNotBefore: at.toISOString(),
    });
  }
  return out;
}

/** V8 heap in use plus array buffers, after a full collection. */
function heapBytes(): number {
  const gc = globalThis.gc ?? (setFlagsFromString('--expose-gc'), runInNewContext('gc') as () => void);
  gc();
  gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

/**
 * What preparing one agent's own set costs (the policies that can match it, its ceiling link
 * and two grants, as `combinedSetFor` builds it) from the policies' JSON, as decisions do, and
 * from their text, in alternating blocks of 50 over the same `sets` agents (µs).
 */
export function benchPrepare(set: CompiledPolicySet, sets: number): { json: { median: number; p99: number }; text: { median: number; p99: number } } {
  const entries = [...set.statics, ...Object.values(set.templateEntries)];
  const policySet = (i: number, form: (e: (typeof entries)[number]) => cedar.Policy): cedar.PolicySet => ({
    staticPolicies: Object.fromEntries(set.statics.map((p) => [p.id, form(p)])),
    templates: Object.fromEntries(Object.values(set.templateEntries).map((t) => [t.id, form(t)])),
    templateLinks: [
      { templateId: 'ceiling-folder', newId: `c-${i}`, values: { '?resource': folder(`home-${i}`) } },
      { templateId: 'grant-read', newId: `r-${i}`, values: { '?principal': { type: 'Agent', id: `agent-${i}` }, '?resource': folder(`reads-${i}`) } },
      { templateId: 'grant-write', newId: `w-${i}`, values: { '?principal': { type: 'Agent', id: `agent-${i}` }, '?resource': folder(`writes-${i}`) } },
    ],
  });
  if (entries.some((e) => preparedForm(e) !== e.json)) throw new Error('the benchmark policies should be prepared from their JSON');
  const json: number[] = [];
  const text: number[] = [];
  const prepare = (into: number[], policies: cedar.PolicySet) => {
    const t = performance.now();
    const r = cedar.preparsePolicySet('bench-prepare', policies);
    into.push((performance.now() - t) * 1000);
    if (r.type !== 'success') throw new Error(`preparing a benchmark set failed: ${JSON.stringify(r)}`);
  };
  for (let done = 0; done < sets; done += 50) {
    for (let i = done; i < done + 50; i++) prepare(json, policySet(i, preparedForm));
    for (let i = done; i < done + 50; i++) prepare(text, policySet(i, (e) => e.text));
  }
  cedar.preparsePolicySet('bench-prepare', { staticPolicies: {} });
  return { json: stats(json), text: stats(text) };
}

export interface ScaleRun {
  agents: number;
  /** Registry view of all of them, folded in memory (from events as the store returns them). */
  registryBytes: number;
  rssGrowth: number;
  /** Cold start: the projection rebuilt from Postgres, then the policy set compiled. */
  rebuildMs: number;
  compileMs: number;
  /** A decision for an agent picked at random, in steady state (µs), and how many of the timed ones found the token verified. */
  decision: { median: number; p99: number; tokenCacheHits: number };
  /** Preparing one agent's own set from JSON (as decisions do) and from text (µs). */
  prepare: ReturnType<typeof benchPrepare>;
  /** The same agents again right after (their tokens verified, their sets prepared, as far as the caches hold them). */
  seen: { median: number; p99: number; tokenCacheHits: number };
  /** The same agents each with a new token (never verified before). */
  fresh: { median: number; p99: number; tokenCacheHits: number };
  /** Sets prepared in cedar-wasm for the policy version at the end (slices and shared sets). */
  setsHeld: number;
}

const stats = (xs: number[]) => {
  xs.sort((a, b) => a - b);
  return { median: xs[Math.floor(xs.length / 2)]!, p99: xs[Math.floor(xs.length * 0.99)]! };
};

/**
 * One node of `agents` agents. `databaseUrl`: an empty database the log is written to, and the
 * cold start read back from.
 */
export async function benchScale(agents: number, databaseUrl: string, decisions: number, progress: (s: string) => void): Promise<ScaleRun> {
  const keys = await generateKeyPair('ES256', { extractable: true });
  const jwk = { ...(await exportJWK(keys.publicKey)), alg: 'ES256', kid: 'k1' };
  const log = logOf(agents, jwk);

  // The log into Postgres, then a cold start from it.
  const connection = await connect({ kind: 'postgres', url: databaseUrl, poolSize: 4 });
  try {
    await migrateToLatest(connection.db);
    for (let i = 0; i < log.length; i += 5000) await connection.db.transaction().execute((trx) => insertEvents(trx, log.slice(i, i + 5000)));
    progress(`${agents} agents: ${log.length} events written`);
    const before = heapBytes();
    const rssBefore = process.memoryUsage().rss;
    let t = performance.now();
    const view = new RegistryView();
    await new Follower(new EventStore(connection.db), view).sync();
    const rebuildMs = performance.now() - t;
    if (view.position !== log.length) throw new Error(`the rebuild reached ${view.position} of ${log.length}`);
    t = performance.now();
    // (A schema text of its own per run: the compile prepares it, as a node starting cold does.)
    const set: CompiledPolicySet = compilePolicySet({ schema: `${schema}\n// ${agents} agents\n`, policies }, 1);
    const compileMs = performance.now() - t;
    const registryBytes = heapBytes() - before;
    const rssGrowth = process.memoryUsage().rss - rssBefore;
    progress(`${agents} agents: rebuilt in ${(rebuildMs / 1000).toFixed(1)} s, ${(registryBytes / 2 ** 20).toFixed(0)} MiB`);

    // One token per agent, each for reading its own reads folder.
    const now = Math.floor(Date.now() / 1000);
    const tokenOf = new Map<number, string>();
    const token = async (i: number, jti?: string) => {
      let tok = tokenOf.get(i);
      if (!tok) {
        tok = await new SignJWT({ authorization_details: [{ type: 'leash:cedar', actions: ['read'], resourceIn: folder(`reads-${i}`) }] })
          .setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setIssuer(ISSUER).setAudience('leash').setSubject(`agent-${i}`).setIssuedAt(now).setExpirationTime(now + 3000).setJti(jti ?? `t-${i}`).sign(keys.privateKey);
        tokenOf.set(i, tok);
      }
      return tok;
    };
    // A different document each time, in a folder of its own in the agent's reads folder (inside
    // its home folder, the ceiling): Cedar runs every time.
    let doc = 0;
    const request = async (i: number, jti?: string) => {
      const d = ++doc;
      const home = folder(`home-${i}`);
      const reads = folder(`reads-${i}`);
      const own = folder(`f-${d}`);
      const entities = [
        { uid: home, attrs: {}, parents: [] },
        { uid: reads, attrs: {}, parents: [home] },
        { uid: own, attrs: {}, parents: [reads] },
        { uid: { type: 'Document', id: `d-${d}` }, attrs: {}, parents: [own] },
      ];
      return { subject: { type: 'agent', id: `agent-${i}`, properties: { token: await token(i, jti) } }, action: { name: 'read' }, resource: { type: 'Document', id: `d-${d}` }, context: { entities } };
    };
    const caches = new DecisionCaches();
    const decided = async (r: Awaited<ReturnType<typeof request>>) => {
      const d = await evaluateAgent(r, set, view, new Date(), { caches });
      if (!d.decision) throw new Error(`a benchmark request was denied at ${d.layer} (${d.code ?? d.reasons.join(',')})`);
    };
    // A node that has served these agents a while: each has decided before (its token verified
    // once, as a token is in its lifetime), 64 at a time in a random order. Then as many
    // decisions as are timed, five times over, for agents picked at random, so the node's
    // bounded caches hold what they would after such traffic; then the timed ones.
    const order = Array.from({ length: agents }, (_, i) => i);
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
    for (let k = 0; k < order.length; k += 64) await Promise.all(order.slice(k, k + 64).map(async (i) => decided(await request(i))));
    progress(`${agents} agents: each decided once`);
    const warm = 5 * decisions;
    const picks = Array.from({ length: warm + decisions }, () => Math.floor(Math.random() * agents));
    const requests: Awaited<ReturnType<typeof request>>[] = [];
    for (const i of picks) requests.push(await request(i));
    for (const r of requests.slice(0, warm)) await decided(r);
    const timed = async (rs: typeof requests) => {
      const hitsBefore = caches.tokens.hits;
      const times: number[] = [];
      for (const r of rs) {
        const t0 = performance.now();
        const d = await evaluateAgent(r, set, view, new Date(), { caches });
        times.push((performance.now() - t0) * 1000);
        if (!d.decision) throw new Error(`a benchmark request was denied at ${d.layer} (${d.code ?? d.reasons.join(',')})`);
      }
      return { ...stats(times), tokenCacheHits: caches.tokens.hits - hitsBefore };
    };
    const decision = await timed(requests.slice(warm));
    // The same agents again, each having just decided once: what is left when the node's caches
    // hold every agent asked about.
    const again: typeof requests = [];
    for (const i of picks.slice(warm)) again.push(await request(i));
    const seen = await timed(again);
    // The same agents each with a token never seen before (its signature checked on the spot).
    tokenOf.clear();
    const renewed: typeof requests = [];
    for (const i of picks.slice(warm)) renewed.push(await request(i, `renewed-${i}`));
    const fresh = await timed(renewed);
    const setsHeld = slotStats().sources.get(set.preparsedId) ?? 0;
    return { agents, registryBytes, rssGrowth, rebuildMs, compileMs, decision, seen, fresh, setsHeld, prepare: benchPrepare(set, decisions) };
  } finally {
    await connection.db.destroy();
  }
}
