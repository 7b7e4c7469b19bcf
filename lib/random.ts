/**
 * Seeded random numbers for everything that must repeat exactly: weight initialisation, the
 * per-epoch shuffle and the mirror decisions of training. A resumed run draws the same numbers
 * as an uninterrupted one because every draw is a function of the seed and a position, never of
 * how many numbers were drawn before in this process.
 */

/** A generator of uniform numbers in [0, 1) (mulberry32); the same seed gives the same sequence. */
export function uniformGenerator(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Mixes integers into one 32-bit seed (a murmur3-style finaliser over each word), so that
 * (seed, epoch) and (seed, epoch, position) give unrelated streams.
 */
export function mixSeed(...words: readonly number[]): number {
  let h = 0x9e3779b9;
  for (const word of words) {
    // Words up to 2^53 are split into two 32-bit halves, so large positions do not collide.
    const low = word >>> 0;
    const high = Math.floor(word / 4294967296) >>> 0;
    for (const part of [low, high]) {
      let k = Math.imul(part, 0xcc9e2d51);
      k = (k << 15) | (k >>> 17);
      k = Math.imul(k, 0x1b873593);
      h ^= k;
      h = (h << 13) | (h >>> 19);
      h = (Math.imul(h, 5) + 0xe6546b64) | 0;
    }
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Draws a permutation of 0 … n−1 by Fisher–Yates from `uniformGenerator(seed)`. */
export function permutation(n: number, seed: number): Uint32Array {
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  const uniform = uniformGenerator(seed);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(uniform() * (i + 1));
    const t = order[i] as number;
    order[i] = order[j] as number;
    order[j] = t;
  }
  return order;
}
