import { setFlagsFromString } from 'node:v8';

// The one way into cedar-wasm. Node 20's V8 (11.3) aborts the process ("Fatal error:
// unreachable code" in Deoptimizer::DoComputeBuiltinContinuation) when a TurboFan frame with
// an inlined JS-to-Wasm call into cedar-wasm is lazily deoptimized, which heavy decision
// traffic followed by a large policy set triggers (reproduced with 3,000 decisions at 10
// policies, then one at 10,000). Turning that inlining off avoids it; it is set here, before
// any code that calls Cedar can be optimized.
setFlagsFromString('--no-turbo-inline-js-wasm-calls');

export * from '@cedar-policy/cedar-wasm/nodejs';
