import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { isLeashError } from '../../src/errors.ts';
import { checkOffThread, stopChecker } from '../../src/authz/policy-compiler.ts';
import { checkPolicySet } from '../../src/authz/policy-set.ts';

// Policy sets are checked on a thread of their own: the same answers as on this one, Cedar's
// refusals carried back whole, and nothing lost when that thread dies.

const schema = readFileSync(new URL('../../cedar/schema.cedarschema', import.meta.url), 'utf8');
const many = (n: number, tag: string) =>
  Array.from({ length: n }, (_, i) => `@id("${tag}-${i}") permit (principal == Agent::"a-${i}", action == Action::"read", resource in Folder::"f-${i}") when { context has amount && context.amount < ${i} };`).join('\n');

describe('checking policy sets off the event loop', () => {
  it('gives what checking here gives', async () => {
    const source = { schema, policies: `${many(450, 'same')}\n@id("t") @layer("ceiling") permit (principal, action, resource in ?resource);`, aliases: { user: 'Human' } };
    expect(await checkOffThread(source)).toEqual(checkPolicySet(source));
  });

  it('carries a refusal back as the same error: code, message and each diagnostic', async () => {
    const source = { schema, policies: '@id("bad") permit (principal, action == Action::"teleport", resource);' };
    const here = (() => {
      try {
        checkPolicySet(source);
      } catch (err) {
        return err;
      }
    })();
    const there = await checkOffThread(source).catch((err: unknown) => err);
    expect(isLeashError(there)).toBe(true);
    expect(there).toMatchObject({ code: 'POLICY_INVALID', status: 422, message: (here as Error).message, details: (here as { details: unknown }).details });
    expect(((there as { details: { diagnostics: string[] } }).details.diagnostics)[0]).toMatch(/teleport/);
  });

  it('a thread that dies mid-check loses nothing: the set is checked here instead, and the next check gets a new thread', async () => {
    const source = { schema, policies: many(1500, 'dies') };
    const checking = checkOffThread(source);
    await new Promise((r) => setTimeout(r, 50));
    stopChecker();
    const checked = await checking;
    expect(checked.policyIds).toHaveLength(1500);
    const next = await checkOffThread({ schema, policies: many(3, 'after') });
    expect(next.policyIds).toEqual(['after-0', 'after-1', 'after-2']);
  });
});
