/**
 * Seeded splits and shuffles, length buckets and padding into [B,T] batches. The engine's graphs take
 * any [B,T] (symbolic dims, docs/GRAPHS.md); buckets only bound the padding; the order of micro-batches is a pure
 * function of (seed, epoch), which is what lets a resumed run see exactly the data it would have seen.
 */
import { IGNORE, type TokenizedExample } from "./tokenize.ts";

export interface Batch {
  inputIds: Int32Array;
  labels: Int32Array;
  batchSize: number;
  seqLen: number;
}

/** mulberry32: a tiny seedable PRNG with 32-bit state (state = the seed after each call). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Fisher–Yates shuffle of 0…n−1 with `seed`. */
export function shuffledIndices(n: number, seed: number): number[] {
  const out = Array.from({ length: n }, (_, i) => i);
  const r = mulberry32(seed);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

/** Holds out round(n × fraction) rows (at least 1 when fraction > 0 and n ≥ 2) chosen with `seed`. */
export function splitIndices(n: number, fraction: number, seed: number): { train: number[]; validation: number[] } {
  if (!(fraction > 0) || n < 2) return { train: Array.from({ length: n }, (_, i) => i), validation: [] };
  const k = Math.min(n - 1, Math.max(1, Math.round(n * fraction)));
  const order = shuffledIndices(n, seed ^ 0x5eed);
  const validation = order.slice(0, k).sort((a, b) => a - b);
  const held = new Set(validation);
  return { train: Array.from({ length: n }, (_, i) => i).filter((i) => !held.has(i)), validation };
}

/** Rounds a length up to a multiple of `step` (32 by default), never past maxLength. */
export function bucketLength(len: number, maxLength: number, step = 32): number {
  return Math.min(maxLength, Math.max(step, Math.ceil(len / step) * step));
}

/** Pads examples on the right (pad id, label −100) to the bucket of the longest one. */
export function collate(examples: TokenizedExample[], padId: number, maxLength: number): Batch {
  const longest = Math.max(1, ...examples.map((e) => e.ids.length));
  const T = bucketLength(longest, maxLength);
  const B = examples.length;
  const inputIds = new Int32Array(B * T).fill(padId);
  const labels = new Int32Array(B * T).fill(IGNORE);
  examples.forEach((e, b) => {
    inputIds.set(e.ids.slice(0, T), b * T);
    labels.set(e.labels.slice(0, T), b * T);
  });
  return { inputIds, labels, batchSize: B, seqLen: T };
}

/**
 * Packs whole examples greedily, in order, into rows of at most maxLength tokens. Examples are never
 * split; the first token of each packed example is not trained (TRL's padding-free rule).
 */
export function packExamples(examples: TokenizedExample[], maxLength: number): TokenizedExample[] {
  const out: TokenizedExample[] = [];
  let cur: TokenizedExample | null = null;
  for (const e of examples) {
    if (cur && cur.ids.length + e.ids.length > maxLength) {
      out.push(cur);
      cur = null;
    }
    if (!cur) cur = { line: e.line, ids: [], labels: [], fullLength: 0, truncated: false };
    cur.ids.push(...e.ids);
    cur.labels.push(IGNORE, ...e.labels.slice(1));
    cur.fullLength += e.fullLength;
    cur.truncated ||= e.truncated;
  }
  if (cur) out.push(cur);
  return out;
}

/**
 * The stream of micro-batches over epochs: micro-batch k belongs to epoch ⌊k / perEpoch⌋ and takes the
 * next `batchSize` examples of that epoch's shuffle (the last batch of an epoch may be smaller).
 */
export class BatchPlan {
  readonly perEpoch: number;
  private cache: { epoch: number; order: number[] } | null = null;

  constructor(readonly size: number, readonly batchSize: number, readonly seed: number) {
    if (size < 1) throw new RangeError("BatchPlan: the training split is empty");
    this.perEpoch = Math.ceil(size / batchSize);
  }

  /** Example indices of micro-batch `k` and its epoch. */
  micro(k: number): { epoch: number; indices: number[] } {
    const epoch = Math.floor(k / this.perEpoch);
    if (this.cache?.epoch !== epoch) this.cache = { epoch, order: shuffledIndices(this.size, (this.seed * 31 + epoch * 1009) >>> 0) };
    const start = (k % this.perEpoch) * this.batchSize;
    return { epoch, indices: this.cache.order.slice(start, start + this.batchSize) };
  }

  /** Fractional epochs done after `micros` micro-batches. */
  epochAt(micros: number): number {
    return micros / this.perEpoch;
  }
}
