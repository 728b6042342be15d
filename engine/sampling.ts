/**
 * Next-token choice from one row of logits: repetition penalty, temperature, top-k, top-p, min-p,
 * seeded sampling; temperature 0 is greedy (argmax). The only per-token JS work over the vocabulary.
 */
import { rng } from "./lora.ts";

export interface SamplingOptions {
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  repetitionPenalty?: number;
  seed?: number;
}

export function argmax(logits: Float32Array): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

export class Sampler {
  private next: () => number;
  constructor(readonly o: SamplingOptions) {
    this.next = rng(o.seed ?? 0);
  }

  pick(logitsIn: Float32Array, history: readonly number[]): number {
    const o = this.o;
    let logits = logitsIn;
    const pen = o.repetitionPenalty ?? 1;
    if (pen !== 1 && history.length) {
      logits = logitsIn.slice();
      // HF's rule: divide positive logits of seen tokens by the penalty, multiply negative ones.
      for (const id of new Set(history)) logits[id] = logits[id] > 0 ? logits[id] / pen : logits[id] * pen;
    }
    const t = o.temperature ?? 1;
    if (t <= 0) return argmax(logits);
    // Candidates sorted by logit; top-k first keeps the sort small.
    const k = Math.min(o.topK && o.topK > 0 ? o.topK : logits.length, logits.length);
    let idx: number[];
    if (k < logits.length) {
      idx = topKIndices(logits, k);
    } else {
      idx = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a]);
    }
    const max = logits[idx[0]];
    let probs = idx.map((i) => Math.exp((logits[i] - max) / t));
    let sum = probs.reduce((a, b) => a + b, 0);
    probs = probs.map((p) => p / sum);
    let n = probs.length;
    if (o.minP && o.minP > 0) {
      const floor = probs[0] * o.minP;
      while (n > 1 && probs[n - 1] < floor) n--;
    }
    if (o.topP && o.topP < 1) {
      let acc = 0, cut = 0;
      while (cut < n) {
        acc += probs[cut++];
        if (acc >= o.topP) break;
      }
      n = Math.max(1, cut);
    }
    sum = 0;
    for (let i = 0; i < n; i++) sum += probs[i];
    let r = this.next() * sum;
    for (let i = 0; i < n; i++) {
      r -= probs[i];
      if (r <= 0) return idx[i];
    }
    return idx[n - 1];
  }
}

/** Indices of the k largest values, largest first (a partial selection, not a full sort). */
function topKIndices(a: Float32Array, k: number): number[] {
  const heap: number[] = [];
  for (let i = 0; i < a.length; i++) {
    if (heap.length < k) {
      heap.push(i);
      if (heap.length === k) heap.sort((x, y) => a[x] - a[y]);
    } else if (a[i] > a[heap[0]]) {
      // Insert keeping ascending order (k is small).
      let j = 1;
      while (j < k && a[heap[j]] < a[i]) j++;
      heap.splice(j, 0, i);
      heap.shift();
    }
  }
  return heap.sort((x, y) => a[y] - a[x]);
}
