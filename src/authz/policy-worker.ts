import { parentPort } from 'node:worker_threads';
import { isLeashError } from '../errors.ts';
import { checkPolicySet } from './policy-set.ts';
import type { FromChecker, ToChecker } from './policy-compiler.ts';

// The policy checker's own thread (see policy-compiler.ts): parses and strictly validates
// each policy set it is sent, one at a time, and sends back the result or the refusal.

const port = parentPort!;
/** Static policies per message. */
const PART = 200;
port.on('message', (m: ToChecker) => {
  let answer: FromChecker;
  try {
    const checked = checkPolicySet(m.source);
    // The static policies go in parts: the node takes each message in a turn of its own, so
    // reading a large set back holds its event loop a few milliseconds at a time.
    for (let i = 0; i < checked.statics.length; i += PART) port.postMessage({ id: m.id, statics: checked.statics.slice(i, i + PART) } satisfies FromChecker);
    answer = { id: m.id, checked: { ...checked, statics: [] } };
  } catch (err) {
    answer = isLeashError(err)
      ? { id: m.id, refused: { code: err.code, message: err.message, details: err.details } }
      : { id: m.id, failed: (err as Error)?.message ?? String(err) };
  }
  port.postMessage(answer);
});
port.postMessage({ ready: true });
