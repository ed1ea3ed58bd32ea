import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import * as cedar from '../../src/authz/cedar.ts';
import type { Backend } from '../../src/store/connect.ts';
import { contextEntitiesCost } from '../../src/authz/engine.ts';
import { answer } from '../../src/authz/layer-result.ts';
import { PEP_TOKEN, startTestNode, type TestNode } from '../support/node.ts';
import { BigIntLiteral, findBigInt, hasBigInt, parse, stringify } from './exact-json.ts';

// Runs Cedar's integration tests (cedar-policy/cedar-integration-tests: the handwritten
// `tests/**.json` and the generated `corpus-tests/*.json`) through Leash's decision API, and
// through cedar-wasm directly as a second oracle. Each test's schema and policies are published
// with PUT /v1/policy-set; each request goes to /access/v1/evaluations (batched) with the test's
// whole entity store in `context.entities` (Leash's way of taking entities it does not own:
// uid, attrs and parents), and to /access/v1/evaluation on its own when a batch is refused, so
// every refusal is the request's own.

export interface Uid {
  type: string;
  id: string;
}

export interface CedarRequest {
  description: string;
  principal: Uid;
  action: Uid;
  resource: Uid;
  context: Record<string, unknown>;
  validateRequest?: boolean;
  decision: 'allow' | 'deny';
  reason: string[];
  errors: string[];
}

export interface CedarTest {
  /** The test file, relative to the suite's root. */
  name: string;
  policies: string;
  schema: string;
  entities: EntityJson[];
  shouldValidate: boolean;
  requests: CedarRequest[];
}

interface EntityJson {
  uid: Uid;
  attrs?: Record<string, unknown>;
  parents?: Uid[];
  tags?: Record<string, unknown>;
}

/** What one decider said: a decision, or a refusal. */
export interface Said {
  decision: 'allow' | 'deny';
  reasons: string[];
  errors: string[];
}

export interface RequestResult {
  test: string;
  request: string;
  /** "match", or the class of what differs or was refused. */
  outcome: string;
  /** What Leash was sent, where a refusal points in it, and the value there (refusals only). */
  trigger?: { pointer: string; where: string; value: string };
  /** Every refused kind of value the request holds (refusals only): what would still refuse it if the first were accepted. */
  holds?: string[];
  expected?: Said;
  leash?: Said | { status: number; code?: string; detail?: string };
  /** cedar-wasm's own answer: equal to the test's expectation, different, or not obtainable. */
  oracle: 'same' | 'differs' | string;
  oracleSaid?: Said;
}

// ---------------------------------------------------------------- loading

/** A test file's referenced paths are relative to the repository root: the nearest ancestor holding them. */
function resolveFrom(testFile: string, ref: string, root: string): string {
  for (let dir = dirname(testFile); ; dir = dirname(dir)) {
    const candidate = join(dir, ref);
    if (existsSync(candidate)) return candidate;
    if (dir === root || dir === dirname(dir)) break;
  }
  const fallback = join(root, ref);
  if (existsSync(fallback)) return fallback;
  throw new Error(`${testFile}: cannot find ${ref}`);
}

function walk(dir: string, out: string[] = []): string[] {
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) walk(path, out);
    else if (name.endsWith('.json') && !name.endsWith('.entities.json')) out.push(path);
  }
  return out;
}

/** Every test file under `root` (a file with `policies` and `requests`), loaded with its references. */
export function* loadTests(root: string, select: (i: number) => boolean = () => true): Generator<CedarTest> {
  root = resolve(root);
  let i = 0;
  for (const file of walk(root)) {
    const raw = parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
    if (typeof raw.policies !== 'string' || !Array.isArray(raw.requests)) continue;
    if (!select(i++)) continue;
    const read = (ref: unknown) => readFileSync(resolveFrom(file, String(ref), root), 'utf8');
    yield {
      name: relative(root, file),
      policies: read(raw.policies),
      schema: raw.schema === undefined || raw.schema === null ? '' : read(raw.schema),
      entities: parse(read(raw.entities)) as EntityJson[],
      shouldValidate: raw.shouldValidate !== false,
      requests: raw.requests as CedarRequest[],
    };
  }
}

// ---------------------------------------------------------------- the node

export interface Harness {
  node: TestNode;
  close(): Promise<void>;
}

/** One node for a whole run: embedded PGlite in a temporary directory, unless given another backend. */
export async function startHarness(backend?: Backend): Promise<Harness> {
  const dataDir = backend ? null : mkdtempSync(join(tmpdir(), 'leash-cedar-corpus-'));
  const node = await startTestNode(backend ?? { kind: 'pglite', dataDir });
  return {
    node,
    async close() {
      await node.close();
      if (dataDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

// ---------------------------------------------------------------- one test

const QUALIFIED_ACTION = /^((?:[A-Za-z_][A-Za-z0-9_]*::)+)?Action::("(?:[^"\\]|\\.)*")$/;

/**
 * The AuthZEN action name for a Cedar action uid: its id when it is in the root namespace (and
 * does not itself look like a uid), else the uid written out (`NS::Action::"id"`), which is how
 * Leash names a namespaced action. `qualifiedAlways`: always the written-out form.
 */
export function actionName(a: Uid, qualifiedAlways = false): string {
  if (!qualifiedAlways && a.type === 'Action' && !QUALIFIED_ACTION.test(a.id)) return a.id;
  return `${a.type}::${JSON.stringify(a.id)}`;
}

const sorted = (xs: readonly string[]) => [...xs].sort();
const sameSaid = (a: Said, b: Said) =>
  a.decision === b.decision && stringify(sorted(a.reasons)) === stringify(sorted(b.reasons)) && stringify(sorted(a.errors)) === stringify(sorted(b.errors));

const expectedOf = (r: CedarRequest): Said => ({ decision: r.decision, reasons: r.reason ?? [], errors: r.errors ?? [] });

/** Cedar's ids for a policy set given as text are policy0, policy1, … in source order. */
interface PolicyInfo {
  /** Cedar id → is it a forbid. */
  forbid: Map<string, boolean>;
  /** The id Leash gives each policy (its @id, else policy<i> by its place in policySetTextToParts' order) → Cedar's id. */
  leashToCedar: Map<string, string>;
}

function policyInfo(text: string): PolicyInfo | null {
  const parts = cedar.policySetTextToParts(text);
  if (parts.type === 'failure') return null;
  const n = parts.policies.length;
  // policySetTextToParts sorts by id as strings: policy0, policy1, policy10, policy11, policy2, …
  const cedarIds = sorted(Array.from({ length: n }, (_, i) => `policy${i}`));
  const forbid = new Map<string, boolean>();
  const leashToCedar = new Map<string, string>();
  parts.policies.forEach((p, i) => {
    const json = cedar.policyToJson(p);
    const annotated = json.type === 'success' ? json.json.annotations?.id : undefined;
    forbid.set(cedarIds[i]!, json.type === 'success' && json.json.effect === 'forbid');
    leashToCedar.set(typeof annotated === 'string' && annotated.length > 0 ? annotated : `policy${i}`, cedarIds[i]!);
  });
  return { forbid, leashToCedar };
}

type Oracle = { said: Said; raw: cedar.AuthorizationAnswer } | { unavailable: string };

function askCedar(t: CedarTest, r: CedarRequest, entities: EntityJson[]): Oracle {
  if (hasBigInt(entities) || hasBigInt(r.context)) {
    return { unavailable: 'n/a: integer beyond 2^53 (cedar-wasm takes JS numbers, exact only to 2^53)' };
  }
  const raw = cedar.isAuthorized({
    principal: r.principal, action: r.action, resource: r.resource, context: r.context as cedar.Context,
    ...(t.schema ? { schema: t.schema } : {}), validateRequest: r.validateRequest ?? true,
    policies: { staticPolicies: t.policies }, entities: entities as cedar.Entities,
  });
  if (raw.type === 'failure') return { unavailable: `oracle refused: ${raw.errors.map((e) => e.message).join('; ').slice(0, 200)}` };
  return { raw, said: { decision: raw.response.decision, reasons: raw.response.diagnostics.reason, errors: raw.response.diagnostics.errors.map((e) => e.policyId) } };
}

/** Leash's rule on top of Cedar's answer: a forbid that fails to evaluate denies. */
function withLeashRule(o: Oracle, info: PolicyInfo | null): Said | null {
  if ('unavailable' in o || !info) return null;
  const l = answer(o.raw, (id) => info.forbid.get(id) === true);
  return { decision: l.allow ? 'allow' : 'deny', reasons: l.reasons, errors: l.failed.map((f) => f.policyId) };
}

const ERROR_ID = /^(.*?): /s;

interface LeashView {
  decision: boolean;
  context?: { reasons?: string[]; errors?: string[]; code?: string };
}

function saidOfLeash(v: LeashView, info: PolicyInfo | null, translate: boolean): Said {
  const name = (id: string) => (translate ? info?.leashToCedar.get(id) ?? id : id);
  return {
    decision: v.decision ? 'allow' : 'deny',
    reasons: (v.context?.reasons ?? []).map(name),
    errors: (v.context?.errors ?? []).map((e) => name(ERROR_ID.exec(e)?.[1] ?? e)),
  };
}

const noTags = (entities: EntityJson[]) => entities.map(({ tags: _tags, ...e }) => e);
const hasTags = (entities: EntityJson[]) => entities.some((e) => e.tags && Object.keys(e.tags).length > 0);

/** Why Leash's answer differs from the test's, by which known difference reproduces it from cedar-wasm's. */
function explain(t: CedarTest, r: CedarRequest, leash: LeashView, info: PolicyInfo | null, oracle: Oracle): string {
  const expected = expectedOf(r);
  const raw = saidOfLeash(leash, info, false);
  const named = saidOfLeash(leash, info, true);
  const renamed = !sameSaid(raw, named);
  const tag = (what: string) => `differs: ${what}${renamed ? ' + policy ids renamed' : ''}`;
  if (renamed && sameSaid(named, expected)) return 'differs: policy ids renamed (reasons name other policies)';
  if ('unavailable' in oracle) return tag(`unexplained (${oracle.unavailable})`);
  if (sameSaid(named, oracle.said)) return tag('Leash agrees with cedar-wasm 4.13, the test expects otherwise');
  const decisionToo = named.decision !== expected.decision ? 'decision' : 'reasons/errors only';
  const ruled = withLeashRule(oracle, info);
  if (ruled && sameSaid(named, ruled)) return tag(`a forbid that errors denies (Leash's rule; Cedar skips it): ${decisionToo}`);
  if (hasTags(t.entities)) {
    const untagged = askCedar(t, r, noTags(t.entities));
    const untaggedRuled = withLeashRule(untagged, info);
    if (!('unavailable' in untagged) && sameSaid(named, untagged.said)) return tag(`entity tags dropped from context.entities: ${decisionToo}`);
    if (untaggedRuled && sameSaid(named, untaggedRuled)) return tag(`entity tags dropped + a forbid that errors denies: ${decisionToo}`);
  }
  return tag(`unexplained: ${decisionToo}`);
}

/** The class of a refusal, from Leash's problem document. */
function refusalClass(status: number, body: { code?: string; detail?: string }): string {
  const d = body.detail ?? '';
  const head = `refused ${status} ${body.code ?? '?'}`;
  if (status === 413) return `${head}: body over Leash's 64 KB limit`;
  if (d.includes('is a member name with a NUL character')) return `${head}: NUL in a record attribute name`;
  if (d.includes('NUL character or an unpaired surrogate')) return `${head}: NUL in a string`;
  if (d.includes('integer beyond 2^53')) return `${head}: integer beyond 2^53`;
  if (d.includes('beyond what JSON can hold')) return `${head}: number not finite`;
  if (d.includes('nests deeper than')) return `${head}: JSON nested deeper than 64`;
  if (d.includes('does not fit the schema')) return `${head}: request does not fit the schema (Cedar's request validation)`;
  if (d.includes('ancestor links')) return `${head}: over 1,000 ancestor links`;
  if (d.includes('not a valid Cedar entity type')) return `${head}: entity type refused`;
  if (d.includes('registered entity')) return `${head}: names a Leash-owned entity`;
  if (d.includes('context.entities repeats')) return `${head}: an entity listed twice`;
  return `${head}: ${d.slice(0, 100)}`;
}

/** Where in the request a JSON pointer points, in words. */
function whereOf(pointer: string): string {
  const p = pointer.split('/').slice(1);
  if (p[0] === 'subject' || p[0] === 'resource') return `${p[0]} ${p[1] ?? ''}`.trim();
  if (p[0] === 'action') return 'action name';
  if (p[0] === 'context' && p[1] === 'entities') {
    if (p[3] === 'uid') return 'an entity uid (context.entities)';
    if (p[3] === 'attrs') return 'an entity attribute (context.entities)';
    if (p[3] === 'parents') return 'an entity parent (context.entities)';
    if (p[3] === 'tags') return 'an entity tag (context.entities)';
    return 'context.entities';
  }
  if (p[0] === 'context') return 'a context attribute';
  return pointer;
}

/** The value (or, for a member name Leash printed with `?` for what it cannot show, the name) at a pointer. */
function at(value: unknown, pointer: string): { value: unknown; name?: string } {
  let v = value;
  let name: string | undefined;
  for (const seg of pointer.split('/').slice(1)) {
    const k = seg.replaceAll('~1', '/').replaceAll('~0', '~');
    if (v === null || typeof v !== 'object') return { value: undefined };
    const o = v as Record<string, unknown>;
    const found = Object.hasOwn(o, k) ? k : Object.keys(o).find((key) => key.replace(/[^\x20-\x7e]/g, '?') === k);
    if (found === undefined) return { value: undefined };
    if (found !== k) name = found;
    v = o[found];
  }
  return { value: v, ...(name === undefined ? {} : { name }) };
}

function triggerOf(body: unknown, detail: string | undefined): RequestResult['trigger'] | undefined {
  const m = /^(\/.*?) (contains a NUL|is an integer|is a number|nests deeper|is a member name)/s.exec(detail ?? '');
  if (!m) return undefined;
  const pointer = m[1]!.replace(/…$/, '');
  const hit = at(body, pointer);
  const isName = m[2] === 'is a member name';
  const text = isName ? `member name ${JSON.stringify(hit.name ?? pointer.split('/').at(-1))}` : stringify(hit.value);
  const where = whereOf(pointer) + (isName ? ' (its name)' : '');
  return { pointer, where, value: text.length > 120 ? `${text.slice(0, 120)}…` : text };
}

/** Every kind of value Leash refuses that the body holds (not only the first), with where it is. */
export function unsafeKinds(body: unknown): string[] {
  const out = new Set<string>();
  const visit = (v: unknown, path: string[]) => {
    const where = () => whereOf(`/${path.join('/')}`);
    if (typeof v === 'string') {
      if (v.includes('\u0000')) out.add(`NUL in a string: ${where()}`);
    } else if (v instanceof BigIntLiteral) {
      out.add(`integer beyond 2^53: ${where()}`);
    } else if (Array.isArray(v)) {
      v.forEach((x, i) => visit(x, [...path, String(i)]));
    } else if (v !== null && typeof v === 'object') {
      for (const [k, x] of Object.entries(v)) {
        if (k.includes('\u0000')) out.add(`NUL in a member name: ${whereOf(`/${[...path, k].join('/')}`)} (its name)`);
        visit(x, [...path, k]);
      }
    }
  };
  visit(body, []);
  return [...out].sort();
}

interface Item {
  subject: Uid;
  action: { name: string };
  resource: Uid;
  context: Record<string, unknown>;
}

const MAX_BODY = 60_000; // Leash refuses bodies over 64 KiB
const MAX_ITEMS = 1_000;
const MAX_WORK = 20_000;

export interface RunOptions {
  qualifiedActions?: boolean;
}

/** Publishes the test's policy set, decides each of its requests through Leash and cedar-wasm, and compares. */
export async function runTest(h: Harness, t: CedarTest, options: RunOptions = {}): Promise<RequestResult[]> {
  const info = policyInfo(t.policies);
  const oracles = t.requests.map((r) => askCedar(t, r, t.entities));
  const base = (r: CedarRequest, i: number): Pick<RequestResult, 'test' | 'request' | 'expected' | 'oracle' | 'oracleSaid'> => {
    const o = oracles[i]!;
    return {
      test: t.name, request: r.description, expected: expectedOf(r),
      ...('unavailable' in o ? { oracle: o.unavailable } : { oracle: sameSaid(o.said, expectedOf(r)) ? 'same' : 'differs', oracleSaid: o.said }),
    };
  };

  const published = await h.node.api('PUT', '/v1/policy-set', { schema: t.schema, policies: t.policies });
  if (published.status !== 200) {
    const b = published.body as { code?: string; detail?: string; diagnostics?: string[] };
    const why = t.shouldValidate
      ? `policy set refused although the test says it validates: ${b.code} ${(b.detail ?? '').slice(0, 80)}`
      : `policy set refused: the policies fail strict validation (the test's shouldValidate: false)`;
    return t.requests.map((r, i) => ({ ...base(r, i), outcome: `not published: ${why}`, leash: { status: published.status, code: b.code, detail: [b.detail, ...(b.diagnostics ?? [])].join(' | ').slice(0, 300) } }));
  }

  const results: (RequestResult | undefined)[] = new Array(t.requests.length);
  const items: (Item | null)[] = t.requests.map((r, i) => {
    if (r.context && 'entities' in r.context) {
      results[i] = { ...base(r, i), outcome: 'not expressible: a context attribute named "entities" (Leash reads context.entities as entities)' };
      return null;
    }
    return {
      subject: { type: r.principal.type, id: r.principal.id },
      action: { name: actionName(r.action, options.qualifiedActions) },
      resource: { type: r.resource.type, id: r.resource.id },
      context: { ...r.context, entities: t.entities },
    };
  });

  const settle = (i: number, status: number, body: unknown, sent: unknown) => {
    const r = t.requests[i]!;
    if (status !== 200) {
      const b = body as { code?: string; detail?: string };
      const trigger = triggerOf(sent, b.detail);
      results[i] = { ...base(r, i), outcome: refusalClass(status, b), leash: { status, code: b.code, detail: b.detail?.slice(0, 300) }, ...(trigger ? { trigger } : {}), holds: unsafeKinds(sent) };
      return;
    }
    const v = body as LeashView;
    const said = saidOfLeash(v, info, false);
    const outcome = sameSaid(said, expectedOf(r)) ? 'match' : explain(t, r, v, info, oracles[i]!);
    results[i] = { ...base(r, i), outcome, leash: said };
  };

  const single = async (i: number) => {
    const item = items[i]!;
    const res = await h.node.api('POST', '/access/v1/evaluation', stringify(item), {}, PEP_TOKEN);
    settle(i, res.status, res.body, item);
  };

  // Batches share the most common context of the test at the top level.
  const counts = new Map<string, number>();
  for (const r of t.requests) counts.set(stringify(r.context), (counts.get(stringify(r.context)) ?? 0) + 1);
  const sharedKey = [...counts.entries()].sort((a, b) => b[1] - a[1])[0]?.[0];
  const shared = { ...(sharedKey === undefined ? {} : (parse(sharedKey) as object)), entities: t.entities };
  const sharedBytes = stringify(shared).length;
  const cost = 1 + contextEntitiesCost(t.entities);

  const pending = items.flatMap((it, i) => (it ? [i] : []));
  let batch: number[] = [];
  let bytes = sharedBytes + 64;
  const flush = async () => {
    if (batch.length === 0) return;
    const now = batch;
    batch = [];
    bytes = sharedBytes + 64;
    if (now.length === 1) return single(now[0]!);
    const evaluations = now.map((i) => {
      const { context, ...rest } = items[i]!;
      return stringify(t.requests[i]!.context) === sharedKey ? rest : { ...rest, context };
    });
    const res = await h.node.api('POST', '/access/v1/evaluations', stringify({ context: shared, evaluations }), {}, PEP_TOKEN);
    const answers = (res.body as { evaluations?: unknown[] }).evaluations;
    if (res.status === 200 && answers?.length === now.length) now.forEach((i, k) => settle(i, 200, answers[k], items[i]));
    else for (const i of now) await single(i);
  };
  for (const i of pending) {
    const { context, ...rest } = items[i]!;
    const own = stringify(t.requests[i]!.context) === sharedKey ? rest : { ...rest, context };
    const size = stringify(own).length + 1;
    if (batch.length > 0 && (bytes + size > MAX_BODY || batch.length >= MAX_ITEMS || (batch.length + 1) * cost > MAX_WORK)) await flush();
    batch.push(i);
    bytes += size;
  }
  await flush();
  return results as RequestResult[];
}

// ---------------------------------------------------------------- summaries

export interface Summary {
  tests: number;
  requests: number;
  /** outcome → requests, and the tests they come from. */
  outcomes: Map<string, { requests: number; tests: Set<string> }>;
  /** refusal class → where in the request the refused value was → requests. */
  where: Map<string, Map<string, number>>;
  /** cedar-wasm vs the test's expectation. */
  oracle: Map<string, number>;
  /** Over refused requests: each kind of refused value → requests holding it (anywhere, not only first). */
  holds: Map<string, number>;
  /** Refused requests holding only NUL strings, only integers beyond 2^53, or both. */
  holdsOnly: Map<string, number>;
}

export function summarise(results: RequestResult[]): Summary {
  const outcomes: Summary['outcomes'] = new Map();
  const where: Summary['where'] = new Map();
  const oracle: Summary['oracle'] = new Map();
  const holds: Summary['holds'] = new Map();
  const holdsOnly: Summary['holdsOnly'] = new Map();
  const tests = new Set<string>();
  for (const r of results) {
    tests.add(r.test);
    const o = outcomes.get(r.outcome) ?? { requests: 0, tests: new Set<string>() };
    o.requests++;
    o.tests.add(r.test);
    outcomes.set(r.outcome, o);
    if (r.trigger) {
      const w = where.get(r.outcome) ?? new Map<string, number>();
      w.set(r.trigger.where, (w.get(r.trigger.where) ?? 0) + 1);
      where.set(r.outcome, w);
    }
    if (r.holds) {
      for (const k of r.holds) holds.set(k, (holds.get(k) ?? 0) + 1);
      const nul = r.holds.some((k) => k.startsWith('NUL'));
      const big = r.holds.some((k) => k.startsWith('integer'));
      const k = nul && big ? 'both NUL and integers beyond 2^53' : nul ? 'NUL only' : big ? 'integers beyond 2^53 only' : 'neither';
      holdsOnly.set(k, (holdsOnly.get(k) ?? 0) + 1);
    }
    const ok = r.oracle.startsWith('n/a') ? 'n/a: integer beyond 2^53' : r.oracle.startsWith('oracle refused') ? 'oracle refused the request' : r.oracle;
    oracle.set(ok, (oracle.get(ok) ?? 0) + 1);
  }
  return { tests: tests.size, requests: results.length, outcomes, where, oracle, holds, holdsOnly };
}

export function formatSummary(label: string, s: Summary): string {
  const lines = [`## ${label}: ${s.tests} tests, ${s.requests} requests`, '', '| outcome | requests | tests |', '|---|---:|---:|'];
  for (const [k, v] of [...s.outcomes.entries()].sort((a, b) => b[1].requests - a[1].requests)) lines.push(`| ${k} | ${v.requests} | ${v.tests.size} |`);
  if (s.where.size > 0) {
    lines.push('', '| refusal | where the refused value is | requests |', '|---|---|---:|');
    for (const [k, w] of s.where) for (const [place, n] of [...w.entries()].sort((a, b) => b[1] - a[1])) lines.push(`| ${k} | ${place} | ${n} |`);
  }
  if (s.holds.size > 0) {
    lines.push('', '| refused requests: a value Leash refuses, anywhere in the request | requests holding it |', '|---|---:|');
    for (const [k, n] of [...s.holds.entries()].sort((a, b) => b[1] - a[1])) lines.push(`| ${k} | ${n} |`);
    lines.push('', '| refused requests hold | requests |', '|---|---:|');
    for (const [k, n] of [...s.holdsOnly.entries()].sort((a, b) => b[1] - a[1])) lines.push(`| ${k} | ${n} |`);
  }
  lines.push('', '| cedar-wasm 4.13 vs the test\'s expectation | requests |', '|---|---:|');
  for (const [k, n] of [...s.oracle.entries()].sort((a, b) => b[1] - a[1])) lines.push(`| ${k} | ${n} |`);
  return lines.join('\n');
}

export { findBigInt };
