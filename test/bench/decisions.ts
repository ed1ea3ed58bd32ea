// In-process agent decisions (all five layers, token cached) next to raw cedar-wasm
// `statefulIsAuthorized` on the same request and the same ordinary policies, at 10 and at
// 10,000 policies (most of them for other agents). Not a test: it measures, it asserts nothing.
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import * as cedar from '../../src/authz/cedar.ts';
import { wholeSet } from './whole-set.ts';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import { evaluateAgent } from '../../src/authz/agent-decision.ts';
import { DecisionCaches } from '../../src/authz/decision-caches.ts';
import { entitiesFor } from '../../src/authz/engine.ts';
import { compilePolicySet } from '../../src/authz/policy-set.ts';
import { RegistryView } from '../../src/registry/registry-view.ts';
import type { StoredEvent } from '../../src/store/event-store.ts';

/**
 * distinct: every document in a folder of its own, so no two requests look alike to Cedar and
 * it runs every time. alike: a different document of one folder each time (one remembered
 * answer serves them all). repeated: the same request over and over.
 */
export type DecisionKind = 'distinct' | 'alike' | 'repeated';

export interface DecisionRow {
  what: string;
  kind: DecisionKind;
  leash: { median: number; p99: number };
  raw: { median: number; p99: number };
  /** The same raw call with Cedar's request validation on (as Leash decides): what validation costs by itself. */
  rawValidated: { median: number; p99: number };
}

const schema = readFileSync(new URL('../../cedar/schema.cedarschema', import.meta.url), 'utf8');
const base = `
@id("agents-read-invoices") permit (principal in Group::"finance-agents", action == Action::"read", resource in Folder::"invoices");
@id("finance-reads-invoices") permit (principal in Group::"finance", action == Action::"read", resource in Folder::"invoices");
@id("no-secrets") forbid (principal, action, resource in Folder::"secret");
@id("ceiling-folder") @layer("ceiling") permit (principal, action in [Action::"read", Action::"write"], resource in ?resource);
`;

/** `n` ordinary policies in all: the base ones plus filler for other agents and folders. */
function policiesOf(n: number): string {
  const filler = Array.from({ length: Math.max(0, n - 3) }, (_, i) => `@id("other-${i}") permit (principal == Agent::"other-${i}", action == Action::"read", resource in Folder::"f-${i}");`);
  return `${base}\n${filler.join('\n')}`;
}

const at = new Date();
let position = 0;
const event = (streamType: string, id: string, version: number, type: string, data: Record<string, unknown>): StoredEvent => ({
  position: ++position, streamId: `${streamType}/${id}`, streamType, version, type, data, metadata: {}, at, idempotencyKey: null, prevHash: '', hash: '',
});

const stats = (xs: number[]) => {
  xs.sort((a, b) => a - b);
  return { median: xs[Math.floor(xs.length / 2)]!, p99: xs[Math.floor(xs.length * 0.99)]! };
};

/**
 * One agent (`bot`, in finance-agents, its ceiling the invoices folder) in a registry view, a
 * cached-token request maker and the policy sets: what an in-process decision benchmark needs
 * (these rows, and the monitoring section's decisions with and without the detectors).
 */
export async function decisionFixture() {
  const keys = await generateKeyPair('ES256', { extractable: true });
  const jwk = { ...(await exportJWK(keys.publicKey)), alg: 'ES256', kid: 'k1' };
  const view = new RegistryView();
  for (const e of [
    event('group', 'finance', 1, 'GroupRegistered', { id: 'finance', parents: [] }),
    event('group', 'finance-agents', 1, 'GroupRegistered', { id: 'finance-agents', parents: [] }),
    event('human', 'alice', 1, 'HumanRegistered', { id: 'alice', email: 'a@example.com', groups: ['finance'] }),
    event('agent', 'bot', 1, 'AgentRegistered', {
      id: 'bot', owner: 'alice', purpose: 'bench', provenance: { model: 'm', modelVersion: '1', environment: 'production' }, trustScore: 50,
      groups: ['finance-agents'], tags: [], credentials: { issuer: 'https://idp.example', audience: 'leash', algorithms: ['ES256'], clockSkewSeconds: 30, maxTokenLifetimeSeconds: 300, jwks: { keys: [jwk] } },
      ceiling: { template: 'ceiling-folder', values: { '?resource': { type: 'Folder', id: 'invoices' } } },
    }),
    event('agent', 'bot', 2, 'AgentAuthorized', { grants: [], tokensNotBefore: new Date(Date.now() - 60_000).toISOString() }),
  ]) view.apply(e);

  const now = Math.floor(Date.now() / 1000);
  const token = await new SignJWT({ authorization_details: [{ type: 'leash:cedar', actions: ['read'], resourceIn: { type: 'Folder', id: 'invoices' } }] })
    .setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setIssuer('https://idp.example').setAudience('leash').setSubject('bot').setIssuedAt(now).setExpirationTime(now + 300).sign(keys.privateKey);
  // A document, directly in the invoices folder or in a folder of its own inside it.
  const requestFor = (doc: string, folder: string | null) => {
    const invoices = { type: 'Folder', id: 'invoices' };
    const docEntities = [
      { uid: invoices, attrs: {}, parents: [] },
      ...(folder ? [{ uid: { type: 'Folder', id: folder }, attrs: {}, parents: [invoices] }] : []),
      { uid: { type: 'Document', id: doc }, attrs: {}, parents: [folder ? { type: 'Folder', id: folder } : invoices] },
    ];
    return {
      docEntities,
      request: { subject: { type: 'agent', id: 'bot', properties: { token } }, action: { name: 'read' }, resource: { type: 'Document', id: doc }, context: { entities: docEntities } },
    };
  };

  const policySet = (n: number) => compilePolicySet({ schema, policies: policiesOf(n) }, n);
  return { view, requestFor, policySet };
}

export async function benchDecisions(iterations = 3000, options: { counts?: number[]; largeSetIterations?: number; leashOnly?: boolean } = {}): Promise<DecisionRow[]> {
  const { view, requestFor, policySet } = await decisionFixture();
  const rows: DecisionRow[] = [];
  for (const n of options.counts ?? [10, 10_000]) {
    const set = policySet(n);
    const runs = n > 10 && options.largeSetIterations !== undefined ? options.largeSetIterations : iterations;
    for (const kind of n === 10 ? (['distinct', 'alike', 'repeated'] as const) : (['distinct'] as const)) {
      const caches = new DecisionCaches();
      const docs = Array.from({ length: runs + 1 }, (_, i) => (kind === 'repeated' ? requestFor('d1', null) : requestFor(`d${n}-${i}`, kind === 'distinct' ? `f${n}-${i}` : null)));
      const rawInputs = docs.map(({ docEntities }) => [...entitiesFor(view, [{ uid: { type: 'Agent', id: 'bot' } }, { uid: { type: 'Human', id: 'alice' } }], docEntities).values()]);
      const raw = (i: number, validateRequest = false) =>
        cedar.statefulIsAuthorized({
          principal: { type: 'Agent', id: 'bot' }, action: { type: 'Action', id: 'read' }, resource: { type: 'Document', id: docs[i]!.request.resource.id }, context: {},
          entities: rawInputs[i] as cedar.Entities, preparsedPolicySetId: wholeSet(set), preparsedSchemaName: set.schemaName, validateRequest,
        });
      // The first decision warms the token cache and the agent's sets; it is not timed.
      const first = await evaluateAgent(docs[runs]!.request, set, view, new Date(), { caches });
      if (!first.decision) throw new Error(`benchmark request was denied at ${first.layer} (${first.code ?? first.reasons.join(',')})`);
      if (raw(runs).type !== 'success') throw new Error('raw call failed');

      const leashTimes: number[] = [];
      const rawTimes: number[] = [];
      const validatedTimes: number[] = [];
      // Alternating blocks, so both see the same machine over the run, and neither runs right
      // after the other has flushed the CPU caches (a raw call over 10,000 policies does).
      const BLOCK = 50;
      for (let done = 0; done < runs; done += BLOCK) {
        const m = Math.min(BLOCK, runs - done);
        for (let i = done; i < (options.leashOnly ? done : done + m); i++) {
          const t = performance.now();
          raw(i);
          rawTimes.push((performance.now() - t) * 1000);
          const v = performance.now();
          raw(i, true);
          validatedTimes.push((performance.now() - v) * 1000);
        }
        for (let i = done; i < done + m; i++) {
          const t = performance.now();
          await evaluateAgent(docs[i]!.request, set, view, new Date(), { caches });
          leashTimes.push((performance.now() - t) * 1000);
        }
      }
      const described = {
        distinct: 'a different document each time, each in a folder of its own (Cedar runs every time)',
        alike: 'a different document of one folder each time (one remembered answer serves them)',
        repeated: 'the same request repeated (answer remembered)',
      };
      rows.push({ what: `agent decision, cached token, ${n.toLocaleString('en-US')} policies, ${described[kind]}`, kind, leash: stats(leashTimes), raw: stats(rawTimes), rawValidated: stats(validatedTimes) });
    }
  }
  return rows;
}
