import { describe, expect, it } from 'vitest';
import { Bloom, Ring } from '../../src/monitoring/counts.ts';

// The detectors' bounded counters: a window's count is what fell in the window, nothing older;
// "used before?" never forgets, and is rarely wrong the other way at the sizes an agent has.

describe('Ring', () => {
  it('counts what falls in the last windowSeconds, by the second for a minute', () => {
    const ring = new Ring(60);
    for (let s = 1000; s < 1100; s++) ring.add(s, 1);
    expect(ring.sum(1099)).toBe(60);
    expect(ring.sum(1130)).toBe(29); // 1071..1130
    expect(ring.sum(1200)).toBe(0);
    ring.add(1099, 5); // a late count in a bucket still in the window
    expect(ring.sum(1099)).toBe(65);
    ring.add(900, 7); // older than the ring holds: dropped
    expect(ring.sum(1099)).toBe(65);
  });

  it('an hour\'s window counts by the minute, in the same 60 buckets', () => {
    const ring = new Ring(3600);
    for (let s = 0; s < 7200; s += 10) ring.add(s, 1);
    expect(ring.sum(7199)).toBe(360);
  });
});

describe('Bloom', () => {
  it('never says no to a name added; says yes to few others at 400 names', () => {
    const bloom = new Bloom(12345);
    const added = Array.from({ length: 400 }, (_, i) => `Document::"doc-${i}-${Math.random()}"`);
    // An add that finds its name already there (a false yes) says so: rare.
    expect(added.filter((name) => bloom.add(name)).length).toBeGreaterThan(392);
    expect(added.every((name) => bloom.has(name))).toBe(true);
    expect(bloom.add(added[0]!)).toBe(false);
    let wrong = 0;
    for (let i = 0; i < 10_000; i++) if (bloom.has(`Folder::"other-${i}"`)) wrong++;
    expect(wrong / 10_000).toBeLessThan(0.03);
  });

  it('another seed spreads the same names differently (a name that collides on one node need not on another)', () => {
    const a = new Bloom(1);
    const b = new Bloom(2);
    for (let i = 0; i < 400; i++) {
      a.add(`n${i}`);
      b.add(`n${i}`);
    }
    const falseOnA = Array.from({ length: 20_000 }, (_, i) => `m${i}`).filter((n) => a.has(n));
    expect(falseOnA.length).toBeGreaterThan(0);
    expect(falseOnA.filter((n) => b.has(n)).length).toBeLessThan(falseOnA.length / 4);
  });
});
