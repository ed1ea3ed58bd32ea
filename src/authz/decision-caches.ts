import { hash } from 'node:crypto';
import { VerifiedTokenCache } from '../tokens/token-cache.ts';
import { Lru } from './preparsed-slots.ts';
import { KeyIndex } from './key-index.ts';
import type { LayerResult } from './layer-result.ts';

const MAX_PAIRS_PER_KEY = 1024;

/** Agents whose forgetting is counted before the counts start over (in a new epoch, so nothing kept before answers). */
const MAX_FORGOTTEN = 200_000;

/** Inputs up to this long are kept as they are (a usual key is under 1,000: hashing it cost the benchmark a 0.1 ms a decision); longer ones by their sha-256. */
const EXACT_KEY_CHARS = 4096;

/**
 * The key an entry is held under. A memory key holds a request's whole context and entities:
 * 20,000 of them at 60 KB each would hold over a gigabyte. Short inputs stay exact (no hashing
 * on the common path); long ones are held by their sha-256 (a collision is not a practical
 * concern), so an entry costs the same whatever the request sent.
 */
// (Inputs begin with a policy set's id or generation, never '#', so the two kinds never meet.)
const stored = (inputs: string) => (inputs.length <= EXACT_KEY_CHARS ? inputs : `#${hash('sha256', inputs, 'base64')}`);

/** What a node keeps between decisions; every entry is keyed so that it cannot outlive its inputs. */
export class DecisionCaches {
  readonly tokens = new VerifiedTokenCache();
  /**
   * Whether a (target, action) pair of a token's details lies within the ceiling, by everything
   * that check reads (policy set, agent id and version, the context and the entities), then
   * by pair: tokens that name the same pairs share the answers.
   */
  private readonly withinCeiling = new Lru<string, { agent: string; pairs: Map<string, LayerResult> }>(10_000);
  private readonly ceilingKeys = new KeyIndex();
  /**
   * The same, for the last inputs each verified token was checked with, by its claims object
   * (the one the token cache holds): kept as long as the token is, however many agents decide
   * meanwhile, at the cost of a digest. Inputs carry the agent's version and the policy set, so
   * an entry can never answer for a changed agent or another version.
   */
  private readonly byToken = new WeakMap<object, { digest: string; pairs: Map<string, LayerResult>; forgotten: number; epoch: number }>();
  /** How often each agent was forgotten in this epoch: a kept verdict from before does not answer. */
  private readonly forgotten = new Map<string, number>();
  /** Counts of `forgotten` started over this often (when it held MAX_FORGOTTEN agents). */
  private epoch = 0;

  /** Cedar answers of the combined call, keyed by its exact inputs (see decideLayers). */
  private readonly answers = new Lru<string, { agent: string; result: LayerResult }>(20_000);
  private readonly answerKeys = new KeyIndex();

  /** How many combined calls were asked for, and how many of them were answered from memory. */
  readonly answerStats = { asked: 0, remembered: 0 };

  decided(agent: string, inputs: string, call: () => LayerResult, keep: (result: LayerResult) => boolean = () => true): LayerResult {
    this.answerStats.asked++;
    const key = stored(inputs);
    const hit = this.answers.get(key);
    if (hit) {
      this.answerStats.remembered++;
      return hit.result;
    }
    const result = call();
    if (!keep(result)) return result;
    const evicted = this.answers.set(key, { agent, result });
    if (evicted) this.answerKeys.remove(evicted[1].agent, evicted[0]);
    this.answerKeys.add(agent, key);
    return result;
  }

  /**
   * The remembered pair verdicts under `key`, to read and add to (at most MAX_PAIRS_PER_KEY);
   * `token`: the verified claims the check is for, whose last verdicts are kept with them.
   */
  ceilingVerdicts(agent: string, inputs: string, token?: object): Map<string, LayerResult> {
    const key = stored(inputs);
    const forgotten = this.forgotten.get(agent) ?? 0;
    const kept = token && this.byToken.get(token);
    const current = kept && kept.forgotten === forgotten && kept.epoch === this.epoch;
    // The shared memory first: it answers the usual case without a digest.
    let hit = this.withinCeiling.get(key);
    if (!hit) {
      const digest = current ? hash('sha256', inputs, 'base64') : undefined;
      hit = { agent, pairs: kept && digest === kept.digest ? kept.pairs : new Map() };
      this.remember(key, hit);
    }
    if (hit.pairs.size > MAX_PAIRS_PER_KEY) hit.pairs.clear();
    if (token && !(current && kept.pairs === hit.pairs)) this.byToken.set(token, { digest: hash('sha256', inputs, 'base64'), pairs: hit.pairs, forgotten, epoch: this.epoch });
    return hit.pairs;
  }

  private remember(key: string, entry: { agent: string; pairs: Map<string, LayerResult> }): void {
    const evicted = this.withinCeiling.set(key, entry);
    if (evicted) this.ceilingKeys.remove(evicted[1].agent, evicted[0]);
    this.ceilingKeys.add(entry.agent, key);
  }

  /** Agents whose forgetting is counted now (at most MAX_FORGOTTEN). */
  get agentsCounted(): number {
    return this.forgotten.size;
  }

  /** Everything held for an agent whose state changed, and for tokens delegated through it. */
  forgetAgent(agentId: string): void {
    this.tokens.forget(agentId);
    for (const key of this.ceilingKeys.take(agentId)) this.withinCeiling.delete(key);
    if (this.forgotten.size >= MAX_FORGOTTEN && !this.forgotten.has(agentId)) {
      // Bounded: every count starts over, and the new epoch keeps verdicts kept before from answering.
      this.forgotten.clear();
      this.epoch++;
    }
    this.forgotten.set(agentId, (this.forgotten.get(agentId) ?? 0) + 1);
    for (const key of this.answerKeys.take(agentId)) this.answers.delete(key);
  }
}
