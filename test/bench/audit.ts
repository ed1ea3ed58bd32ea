// Replay and verify throughput from archive files (SPEC §8). The data is made here, without a
// server: a registry of 1,000 agents (100 humans, each agent's ceiling and grant on one of 100
// folders of 10,000 documents), two policy versions, and decisions drawn at random whose
// recorded outcomes come from the decision code itself. Everything is chained and written as
// `leash audit archive` writes it, so the measured runs read real segment files.
// Not a test: it measures, it asserts nothing.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { createHash, randomUUID } from 'node:crypto';
import { ARCHIVE_FORMAT, encodeLine, type ChainName, type Manifest, type Segment } from '../../src/audit/archive.ts';
import { decisionBody, type StoredDecision } from '../../src/audit/decision-log.ts';
import { loadHistory, reevaluate, type History } from '../../src/audit/replay.ts';
import { DecisionCaches } from '../../src/authz/decision-caches.ts';
import type { EvaluationRequest } from '../../src/authz/engine.ts';
import { readPolicyFiles } from '../../src/authz/policy-files.ts';
import { POLICY_PUBLISHED, POLICY_STREAM_TYPE } from '../../src/authz/policy-view.ts';
import type { StoredEvent } from '../../src/store/event-store.ts';
import { chainHash, eventBody, GENESIS_HASH } from '../../src/store/hash-chain.ts';
import { ArchiveSource } from '../../src/audit/archive-source.ts';

export const AGENTS = 1_000;
export const HUMANS = 100;
export const FOLDERS = 100;
export const DOCUMENTS = 10_000;
const SEGMENT = 50_000;

const folder = (k: number) => ({ type: 'Folder', id: `f${k}` });

/** Writes records as chained segments of one chain; returns their manifest entries. */
class SegmentWriter {
  private lines: string[] = [];
  private first = 0;
  private prev = GENESIS_HASH;
  private segmentPrev = GENESIS_HASH;
  private key = 0;
  readonly segments: Segment[] = [];

  constructor(
    private readonly dir: string,
    private readonly chain: ChainName,
  ) {}

  add(body: string, key: number): string {
    if (this.lines.length === 0) {
      this.first = key;
      this.segmentPrev = this.prev;
    }
    const hash = chainHash(this.prev, body);
    this.lines.push(encodeLine({ chain: this.chain }, { key, prevHash: this.prev, hash, body }));
    this.prev = hash;
    this.key = key;
    if (this.lines.length >= SEGMENT) this.flush();
    return hash;
  }

  flush(): void {
    if (this.lines.length === 0) return;
    const file = `${this.chain}-${String(this.first).padStart(12, '0')}-${String(this.key).padStart(12, '0')}.ndjson.gz`;
    const bytes = gzipSync(this.lines.join(''), { level: 6 });
    writeFileSync(join(this.dir, file), bytes);
    this.segments.push({
      chain: this.chain, file, first: this.first, last: this.key, records: this.lines.length, prevHash: this.segmentPrev, lastHash: this.prev,
      sha256: createHash('sha256').update(bytes).digest('hex'),
    });
    this.lines = [];
  }
}

function writeManifest(dir: string, segments: Segment[]): void {
  const manifest: Manifest = { format: ARCHIVE_FORMAT, segments };
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest, null, 2));
}

/** The registry and the two policy versions as events (policy version 2 last). */
function registryEvents(at: Date): StoredEvent[] {
  const v1 = readPolicyFiles(new URL('../../cedar', import.meta.url).pathname);
  const v2 = { ...v1, policies: `${v1.policies}\n@id("freeze-f7")\nforbid (principal, action, resource in Folder::"f7");\n` };
  const events: Omit<StoredEvent, 'position' | 'prevHash' | 'hash'>[] = [];
  const push = (streamType: string, id: string, version: number, type: string, data: Record<string, unknown>) =>
    events.push({ streamId: `${streamType}/${id}`, streamType, version, type, data, metadata: { actor: 'operator' }, at, idempotencyKey: null });
  const policy = (version: number, source: typeof v1) => push(POLICY_STREAM_TYPE, 'current', version, POLICY_PUBLISHED, { ...source, sha256: createHash('sha256').update(source.policies).digest('hex') });
  policy(1, v1);
  push('group', 'finance', 1, 'GroupRegistered', { id: 'finance', parents: [] });
  push('group', 'finance-agents', 1, 'GroupRegistered', { id: 'finance-agents', parents: [] });
  for (let h = 0; h < HUMANS; h++) push('human', `h${h}`, 1, 'HumanRegistered', { id: `h${h}`, email: `h${h}@example.com`, groups: ['finance'] });
  const jwk = { kty: 'EC', crv: 'P-256', x: 'f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU', y: 'x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0', alg: 'ES256', kid: 'k1' };
  for (let a = 0; a < AGENTS; a++) {
    push('agent', `a${a}`, 1, 'AgentRegistered', {
      id: `a${a}`, owner: `h${a % HUMANS}`, purpose: 'bench', provenance: { model: 'm', modelVersion: '1', environment: 'production' }, trustScore: 50,
      groups: ['finance-agents'], tags: [], credentials: { issuer: 'https://idp.example', audience: 'leash', algorithms: ['ES256'], clockSkewSeconds: 30, maxTokenLifetimeSeconds: 300, jwks: { keys: [jwk] } },
      ceiling: { template: 'ceiling-folder', values: { '?resource': folder(a % FOLDERS) } },
    });
    push('agent', `a${a}`, 2, 'AgentAuthorized', { grants: [{ template: 'grant-read-folder', values: { '?resource': folder(a % FOLDERS) } }], tokensNotBefore: new Date(at.getTime() - 3_600_000).toISOString() });
  }
  policy(2, v2);
  return events.map((e, i) => ({ ...e, position: i + 1, prevHash: '', hash: '' }));
}

/** A random request, mostly within the agent's own folder (as an agent's work is). */
function request(at: Date, rng: () => number): EvaluationRequest {
  const a = Math.floor(rng() * AGENTS);
  const own = a % FOLDERS;
  const doc = rng() < 0.8 ? own + FOLDERS * Math.floor(rng() * (DOCUMENTS / FOLDERS)) : Math.floor(rng() * DOCUMENTS);
  const iat = Math.floor(at.getTime() / 1000) - 10;
  // One token in twenty asks for a folder beyond the agent's ceiling.
  const asked = rng() < 0.05 ? (own + 1) % FOLDERS : own;
  const claims = {
    iss: 'https://idp.example', aud: 'leash', sub: `a${a}`, iat, exp: iat + 120, jti: randomUUID(),
    authorization_details: [{ type: 'leash:cedar', actions: ['read', 'write'], resourceIn: folder(asked) }],
  };
  return {
    subject: { type: 'agent', id: `a${a}`, properties: { token: { sha256: createHash('sha256').update(claims.jti).digest('hex'), claims, jti: claims.jti } } },
    action: { name: rng() < 0.9 ? 'read' : 'write' },
    resource: { type: 'Document', id: `d${doc}` },
    context: { entities: [
      { uid: { type: 'Document', id: `d${doc}` }, attrs: {}, parents: [folder(doc % FOLDERS)] },
      { uid: folder(doc % FOLDERS), attrs: {}, parents: [{ type: 'Folder', id: 'invoices' }] },
      { uid: { type: 'Folder', id: 'invoices' }, attrs: {}, parents: [] },
    ] },
  };
}

/** A seeded generator, so every run draws the same requests. */
function mulberry32(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * An archive of `count` decisions for replay: half under policy version 1, half under 2.
 * Returns how many were allowed (a sanity figure for the report).
 */
export async function makeReplayArchive(dir: string, count: number, progress?: (done: number) => void): Promise<{ allowed: number; seconds: number }> {
  mkdirSync(dir, { recursive: true });
  const t0 = performance.now();
  const at = new Date('2026-11-01T02:00:00Z');
  const events = new SegmentWriter(dir, 'events');
  const stored = registryEvents(at);
  for (const e of stored) {
    e.hash = events.add(eventBody(e), e.position);
  }
  events.flush();
  writeManifest(dir, events.segments);
  const history: History = await loadHistory(new ArchiveSource(dir, null));
  const v2At = stored.at(-1)!.position;
  const decisions = new SegmentWriter(dir, 'decisions');
  const caches = new DecisionCaches();
  const rng = mulberry32(42);
  let allowed = 0;
  for (let seq = 1; seq <= count; seq++) {
    const when = new Date(at.getTime() + seq);
    const second = seq > count / 2;
    const d: StoredDecision = {
      seq, id: randomUUID(), nodeId: 'node-1', at: when, request: request(when, rng), decision: false, layer: 'token', code: null, reasons: [],
      policyVersion: second ? 2 : 1, logPosition: second ? v2At : v2At - 1, prevHash: '', hash: '',
    };
    const { outcome } = await reevaluate(d, history, null, caches);
    if (!outcome) throw new Error(`decision ${seq} could not be made`);
    Object.assign(d, { decision: outcome.decision, layer: outcome.layer, code: outcome.code, reasons: outcome.reasons });
    if (d.decision) allowed++;
    decisions.add(decisionBody(d), seq);
    if (seq % 10_000 === 0) progress?.(seq);
  }
  decisions.flush();
  writeManifest(dir, [...events.segments, ...decisions.segments]);
  return { allowed, seconds: (performance.now() - t0) / 1000 };
}

/** An archive of `count` chained decision records (small bodies), for verify throughput. */
export function makeVerifyArchive(dir: string, count: number): void {
  mkdirSync(dir, { recursive: true });
  const w = new SegmentWriter(dir, 'decisions');
  const at = new Date('2026-11-01T02:00:00Z');
  for (let seq = 1; seq <= count; seq++) {
    w.add(decisionBody({
      seq, id: randomUUID(), nodeId: 'node-1', at: new Date(at.getTime() + seq), request: { subject: { type: 'agent', id: `a${seq % AGENTS}` }, action: { name: 'read' }, resource: { type: 'Document', id: `d${seq % DOCUMENTS}` } },
      decision: seq % 3 !== 0, layer: 'all', code: null, reasons: ['finance-reads-invoices'], policyVersion: 1, logPosition: 1,
    }), seq);
  }
  w.flush();
  writeManifest(dir, w.segments);
}
