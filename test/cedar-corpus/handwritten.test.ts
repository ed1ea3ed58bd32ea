import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freshPostgres } from '../support/backends.ts';
import { loadTests, runTest, startHarness, type Harness } from './harness.ts';

// Cedar's handwritten integration tests (fixtures/, vendored from cedar-policy/
// cedar-integration-tests under Apache-2.0; see fixtures/README.md): 22 tests, 74 requests,
// each published as a policy set and decided through the AuthZEN API with the test's entities
// in context.entities. Every request must be decided as the test says (decision, determining
// policies, erroring policies), and as cedar-wasm itself decides it. The generated corpus is
// too large for npm test: `npx tsx test/cedar-corpus/run.ts corpus-tests.tar.gz`.
// On the test PostgreSQL (which npm test starts anyway) rather than PGlite: the same decisions,
// and about 7 s of CPU for this file instead of about 18 s (PGlite's start alone is about 11 s).

const tests = [...loadTests(fileURLToPath(new URL('./fixtures', import.meta.url)))];

let h: Harness;
beforeAll(async () => {
  h = await startHarness(await freshPostgres());
});
afterAll(async () => h?.close());

describe("Cedar's handwritten integration tests, through the decision API", () => {
  it('are all here', () => {
    expect(tests).toHaveLength(22);
    expect(tests.reduce((n, t) => n + t.requests.length, 0)).toBe(74);
  });

  for (const t of tests) {
    it(t.name, async () => {
      for (const r of await runTest(h, t)) {
        const where = `${r.test} "${r.request}": ${JSON.stringify(r)}`;
        expect(r.oracle, where).toBe('same');
        expect(r.outcome, where).toBe('match');
      }
    });
  }
});
