import type { PastDecision } from '../audit/decision-query.ts';
import type { EvaluationRequest } from '../authz/engine.ts';
import type { Baseline } from './baseline.ts';
import { countsAsOwn, MAX_NAME, namesUsed, uid } from './uses.ts';

// Baselines learned back from the decision log: the first time a node sees an agent (after it
// starts, say), it reads the agent's latest decisions of the warm-up window and a day before it,
// so a restart does not start a week's warm-up over. A few agents' at a time: a node that
// starts and sees thousands of agents at once does not send thousands of queries at once.

/** Decisions read from the log per agent, at most. */
const LIMIT = 2_000;
/** Agents whose history is read at once; the others wait their turn. */
const READS = 4;

export type ReadHistory = (agent: string, since: Date, until: Date, limit: number) => Promise<PastDecision[]>;

export class History {
  private readonly queue: (() => Promise<void>)[] = [];
  private reading = 0;

  constructor(
    private readonly read: ReadHistory,
    private readonly log: (fields: Record<string, unknown>, message: string) => void,
  ) {}

  /** Learns the agent's decisions recorded before `second` into its baseline; `done` once they are in (or could not be read). */
  learn(agent: string, baseline: Baseline, second: number, warmupHours: number, done: () => void): void {
    const until = new Date(second * 1000);
    const since = new Date((second - (warmupHours + 24) * 3600) * 1000);
    this.queue.push(async () => {
      try {
        for (const d of await this.read(agent, since, until, LIMIT)) {
          const request = d.request as EvaluationRequest | null;
          if (!countsAsOwn(d) || request?.subject?.id !== agent) continue;
          baseline.past(Math.floor(d.at.getTime() / 1000));
          if (!d.decision) continue;
          if (typeof request.action?.name === 'string') baseline.learnAction(request.action.name.slice(0, MAX_NAME));
          if (uid(request.resource) !== null) for (const name of namesUsed(request)) baseline.resources.add(name);
        }
      } catch (err) {
        this.log({ err: (err as Error).message, agent }, "reading an agent's decisions for its baseline failed; it learns from now on");
      } finally {
        done();
      }
    });
    this.next();
  }

  private next(): void {
    while (this.reading < READS && this.queue.length > 0) {
      const read = this.queue.shift()!;
      this.reading++;
      void read().finally(() => {
        this.reading--;
        this.next();
      });
    }
  }
}
