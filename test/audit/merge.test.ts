import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { mergedBySeq, type MergeSource } from '../../src/audit/archive-source.ts';
import type { StoredDecision } from '../../src/audit/decision-log.ts';

// Reading an archive merges every chain's segments (and what Postgres holds) back into the
// log's order. A node id per process by default means one chain per restart, so an old
// deployment's archive can hold thousands of chains: the merge must not open them all at once.

const decision = (seq: number): StoredDecision => ({ seq, id: `d${seq}` } as StoredDecision);

/** A source over `seqs` (ascending) in pages of `page`, counting how many sources are open at once. */
function counted(seqs: number[], from: number, page: number, open: { now: number; most: number }): MergeSource {
  return {
    from,
    open: async function* () {
      open.now++;
      open.most = Math.max(open.most, open.now);
      try {
        for (let i = 0; i < seqs.length; i += page) yield seqs.slice(i, i + page).map(decision);
      } finally {
        open.now--;
      }
    },
  };
}

const read = async (sources: MergeSource[], pageSize?: number) => {
  const out: number[] = [];
  for await (const p of mergedBySeq(sources, pageSize)) out.push(...p.map((d) => d.seq));
  return out;
};

describe("merging decision streams by the log's number", () => {
  it('gives every record once, in order, however the streams interleave and whatever bounds they give', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(fc.integer({ min: 1, max: 10_000 }), { maxLength: 300 }),
        fc.integer({ min: 1, max: 12 }),
        fc.integer({ min: 1, max: 7 }),
        fc.boolean(),
        async (seqs, streams, page, exactBounds) => {
          const parts: number[][] = Array.from({ length: streams }, () => []);
          seqs.forEach((s, i) => parts[(s * 7 + i) % streams]!.push(s));
          const sources = parts.map((p) => p.sort((a, b) => a - b)).map((p) => counted(p, exactBounds && p.length ? p[0]! : 0, page, { now: 0, most: 0 }));
          expect(await read(sources, page)).toEqual([...seqs].sort((a, b) => a - b));
        },
      ),
      { numRuns: 200 },
    );
  });

  it('opens a stream only when the merge reaches it: 2,000 chains one after another hold one open at a time', async () => {
    const open = { now: 0, most: 0 };
    // Node 1 ran first, node 2 after it, and so on: each a chain of its own, 3 records each.
    const sources = Array.from({ length: 2_000 }, (_, k) => counted([3 * k + 1, 3 * k + 2, 3 * k + 3], 3 * k + 1, 2, open));
    const seqs = await read(sources, 100);
    expect(seqs).toHaveLength(6_000);
    expect(seqs.every((s, i) => s === i + 1)).toBe(true);
    expect(open.most).toBe(1);
    expect(open.now).toBe(0);
  });

  it('holds open only the streams whose ranges overlap', async () => {
    const open = { now: 0, most: 0 };
    // Two nodes at a time, each pair interleaved, pairs one after another.
    const sources = Array.from({ length: 200 }, (_, k) => {
      const base = 100 * Math.floor(k / 2);
      const mine = Array.from({ length: 50 }, (__, i) => base + 2 * i + (k % 2) + 1);
      return counted(mine, mine[0]!, 5, open);
    });
    expect(await read(sources)).toEqual(Array.from({ length: 10_000 }, (_, i) => i + 1));
    expect(open.most).toBe(2);
  });

  it('stops with a clear error when a bound is wrong and records would come out of order', async () => {
    // The second stream claims to begin at 10 but holds 5: its records would follow later ones.
    const open = { now: 0, most: 0 };
    await expect(read([counted([1, 2, 11, 12], 1, 1, open), counted([5, 6], 10, 1, open)])).rejects.toThrow("the archive's records are not in the log's order (5 after 10)");
    // A stream whose own records go backwards.
    await expect(read([counted([1, 4, 3], 1, 1, open)])).rejects.toThrow("not in the log's order (3 after 4)");
    // The same record in two streams.
    await expect(read([counted([1, 2], 1, 1, open), counted([2, 3], 2, 1, open)])).rejects.toThrow("not in the log's order (2 after 2)");
  });
});
