import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { isLeashError } from '../../src/errors.ts';
import { checkOffThread, stopChecker } from '../../src/authz/policy-compiler.ts';
import { checkPolicySet, refuseReservedIds } from '../../src/authz/policy-set.ts';

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

describe("ids Leash gives an agent's links", () => {
  it('are refused to a published set, with each one named; ids that only look like them are not', () => {
    const refused = (policyIds: string[], templateIds: string[] = []) => {
      try {
        refuseReservedIds({ policyIds, templateIds });
        return null;
      } catch (err) {
        if (!isLeashError(err)) throw err;
        return { code: err.code, diagnostics: (err.details as { diagnostics: string[] }).diagnostics };
      }
    };
    expect(refused(['ceiling:bot'])).toEqual({ code: 'POLICY_INVALID', diagnostics: ['@id("ceiling:bot") is reserved'] });
    expect(refused(['ok'], ['grant:t'])?.diagnostics).toEqual(['@id("grant:t") is reserved']);
    expect(refused(['grant:bot:0', 'fine', 'ceiling:'])?.diagnostics).toEqual(['@id("grant:bot:0") is reserved', '@id("ceiling:") is reserved']);
    // Bounded, however many and however long.
    const many = refused(Array.from({ length: 5_000 }, (_, i) => `grant:${'x'.repeat(10_000)}${i}`));
    expect(many?.diagnostics).toHaveLength(20);
    expect(Math.max(...many!.diagnostics.map((d) => d.length))).toBeLessThan(250);
    for (const id of ['ceilings', 'Ceiling:bot', 'Grant:x', 'my-ceiling:x', 'grant', '']) expect(refused([id]), id).toBeNull();
  });
});
