import { setImmediate as yieldToLoop } from 'node:timers/promises';

/** The longest a loop over a caller's items runs before other callers get a turn, ms. */
export const TURN_MS = 2;

/**
 * Turns for other callers during a long loop (a batch, a search page): `take()` yields to the
 * event loop once TURN_MS have passed since the last turn, so what else has arrived meanwhile
 * (requests, database answers, revocations) is handled, however costly each item is.
 */
export class Turns {
  private since = performance.now();

  async take(): Promise<void> {
    if (performance.now() - this.since < TURN_MS) return;
    await yieldToLoop();
    this.since = performance.now();
  }
}
