// What the detectors count, in bounded memory: a ring of buckets over a window, and a Bloom
// filter for "used before?". Neither grows with the traffic it counts.

/** Buckets a window is cut into: a window of 60 s counts by the second, one of an hour by the minute. */
const BUCKETS = 60;

/**
 * Counts over the last `windowSeconds`, in 60 buckets of `windowSeconds / 60` seconds (at least
 * one). A count is kept only while its bucket is within the window; a count older than the
 * window, or for a bucket this ring has moved past, is dropped.
 */
export class Ring {
  /** One buffer: 60 counts, then the bucket number (seconds / width, 0: none yet) each count is for. */
  private readonly cells = new Uint32Array(2 * BUCKETS);
  private readonly width: number;

  constructor(readonly windowSeconds: number) {
    this.width = Math.max(1, Math.ceil(windowSeconds / BUCKETS));
  }

  add(second: number, n: number): void {
    const bucket = Math.floor(second / this.width);
    const slot = bucket % BUCKETS;
    const held = this.cells[BUCKETS + slot]!;
    if (held === bucket) this.cells[slot] = Math.min(0xffffffff, this.cells[slot]! + n);
    else if (held < bucket) {
      this.cells[BUCKETS + slot] = bucket;
      this.cells[slot] = Math.min(0xffffffff, n);
    }
  }

  /** The count over the window ending at `second`. */
  sum(second: number): number {
    const last = Math.floor(second / this.width);
    const first = last - Math.ceil(this.windowSeconds / this.width) + 1;
    let n = 0;
    for (let i = 0; i < BUCKETS; i++) {
      const bucket = this.cells[BUCKETS + i]!;
      if (bucket >= first && bucket <= last) n += this.cells[i]!;
    }
    return n;
  }
}

const BLOOM_BITS = 4096;
/** The 32-bit words a Bloom filter's bits take (for a caller that gives it part of a buffer of its own). */
export const BLOOM_WORDS = BLOOM_BITS / 32;
const BLOOM_HASHES = 4;

/**
 * Has this name been added? Never a false "no"; a false "yes" one time in a hundred at 400
 * names, more beyond (what an agent uses past that is known less precisely, never forgotten).
 * Hashed with a seed of this process's own, so nobody outside can pick names that collide.
 */
export class Bloom {
  size = 0;

  constructor(
    private readonly seed: number,
    private readonly bits = new Uint32Array(BLOOM_WORDS),
  ) {}

  has(name: string): boolean {
    return this.test(name, false);
  }

  /** Adds the name; true when it was new. */
  add(name: string): boolean {
    if (this.test(name, true)) return false;
    this.size++;
    return true;
  }

  /** Were all the name's bits set? When `set`, they are afterwards. */
  private test(name: string, set: boolean): boolean {
    const [a, b] = hashes(name, this.seed);
    let all = true;
    for (let i = 0; i < BLOOM_HASHES; i++) {
      const bit = (a + i * b) >>> 0;
      const word = (bit >>> 5) % (BLOOM_BITS / 32);
      const mask = 1 << (bit & 31);
      if ((this.bits[word]! & mask) === 0) {
        all = false;
        if (!set) return false;
        this.bits[word]! |= mask;
      }
    }
    return all;
  }
}

/** Two 32-bit hashes of a string (seeded FNV-1a, then a murmur3 finaliser for the second). Not for secrets. */
function hashes(name: string, seed: number): [number, number] {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  let g = h ^ (h >>> 16);
  g = Math.imul(g, 0x85ebca6b);
  g ^= g >>> 13;
  g = Math.imul(g, 0xc2b2ae35);
  g ^= g >>> 16;
  return [h, (g | 1) >>> 0];
}
