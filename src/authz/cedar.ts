import { setFlagsFromString } from 'node:v8';
import * as wasm from '@cedar-policy/cedar-wasm/nodejs';
import { cedarText } from '../exact-json.ts';

// The one way into cedar-wasm. Node 20's V8 (11.3) aborts the process ("Fatal error:
// unreachable code" in Deoptimizer::DoComputeBuiltinContinuation) when a TurboFan frame with
// an inlined JS-to-Wasm call into cedar-wasm is lazily deoptimized, which heavy decision
// traffic followed by a large policy set triggers (reproduced with 3,000 decisions at 10
// policies, then one at 10,000). Turning that inlining off avoids it; it is set here, before
// any code that calls Cedar can be optimized.
setFlagsFromString('--no-turbo-inline-js-wasm-calls');

export * from '@cedar-policy/cedar-wasm/nodejs';

// The decision API carries values Cedar accepts but JavaScript or PostgreSQL cannot hold (NUL,
// integers beyond 2^53) in an escaped form (exact-json.ts). cedar-wasm reads every call as the
// text JSON.stringify makes of it, so for the length of a call that text spells each escaped
// value as itself. Calls are synchronous: nothing else runs while JSON.stringify is swapped.
// (A test decides on 9007199254740993 exactly: it fails if cedar-wasm stops reading calls so.)
const stringify = JSON.stringify;
const exactStringify = ((value: unknown, replacer?: (this: unknown, key: string, value: unknown) => unknown, space?: string | number) => {
  const text = stringify(value, replacer, space);
  return typeof text === 'string' ? cedarText(text) : text;
}) as typeof JSON.stringify;

function exact<C, A>(call: (c: C) => A): (c: C) => A {
  return (c) => {
    JSON.stringify = exactStringify;
    try {
      return call(c);
    } finally {
      JSON.stringify = stringify;
    }
  };
}

export const isAuthorized = exact(wasm.isAuthorized);
export const statefulIsAuthorized = exact(wasm.statefulIsAuthorized);
