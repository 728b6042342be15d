/**
 * LoRA tensors: PEFT names and shapes, PEFT initialisation (A ~ U(±1/√in), B = 0), merging into the
 * base weights, and the deterministic dropout masks fed to the training graph.
 */
import type { GemmaConfig } from "./gemma/config.ts";
import { loraScaling, type LoraSpec, loraSpecs } from "./gemma/model.ts";

export { loraScaling, loraSpecs };
export type { LoraSpec };

export interface NamedTensor {
  shape: number[];
  data: Float32Array;
}

/** A small, fast, seedable PRNG (xoshiro128**), so masks and inits are reproducible on resume. */
export function rng(seed: number): () => number {
  let a = 0x9e3779b9 ^ seed, b = 0x243f6a88 + seed * 7, c = 0xb7e15162 ^ (seed * 13), d = 0x5851f42d + seed;
  const next = () => {
    const t = b << 9;
    let r = Math.imul(b, 5);
    r = Math.imul((r << 7) | (r >>> 25), 9);
    c ^= a;
    d ^= b;
    b ^= c;
    a ^= d;
    c ^= t;
    d = (d << 11) | (d >>> 21);
    return (r >>> 0) / 4294967296;
  };
  for (let i = 0; i < 8; i++) next();
  return next;
}

/** PEFT's default init: A = kaiming_uniform(a=√5) = U(−1/√in, 1/√in), B = 0 (a no-op adapter). */
export function initLora(c: GemmaConfig, spec: LoraSpec, seed: number): Map<string, NamedTensor> {
  const out = new Map<string, NamedTensor>();
  const r = rng(seed);
  for (const s of loraSpecs(c, spec)) {
    const data = new Float32Array(s.shape[0] * s.shape[1]);
    if (s.name.includes(".lora_A.")) {
      const bound = 1 / Math.sqrt(s.shape[1]);
      for (let i = 0; i < data.length; i++) data[i] = (r() * 2 - 1) * bound;
    }
    out.set(s.name, { shape: s.shape, data });
  }
  return out;
}

/** W' = W + s·B·A for every adapted linear (the merged checkpoint). Returns new weight arrays. */
export function mergeLora(
  weights: Map<string, Float32Array>,
  lora: Map<string, NamedTensor>,
  scaling: number,
): Map<string, Float32Array> {
  const merged = new Map(weights);
  for (const [name, A] of lora) {
    if (!name.includes(".lora_A.")) continue;
    const B = lora.get(name.replace(".lora_A.", ".lora_B."));
    if (!B) throw new RangeError(`Adapter has ${name} but no matching lora_B`);
    const base = name.replace(/^base_model\.model\./, "").replace(".lora_A.weight", ".weight");
    const W = weights.get(base);
    if (!W) throw new RangeError(`Adapter tensor ${name} targets ${base}, which the model does not have`);
    const [r, inF] = A.shape, outF = B.shape[0];
    const out = W.slice();
    for (let o = 0; o < outF; o++) {
      for (let k = 0; k < r; k++) {
        const b = B.data[o * r + k] * scaling;
        if (b === 0) continue;
        const row = o * inF, arow = k * inF;
        for (let i = 0; i < inF; i++) out[row + i] += b * A.data[arow + i];
      }
    }
    merged.set(base, out);
  }
  return merged;
}

/** Inverted-dropout mask (0 or 1/(1−p)) for one LoRA input, from (seed, step, index). */
export function dropoutMask(n: number, p: number, seed: number, step: number, index: number): Float32Array {
  const m = new Float32Array(n);
  const r = rng((seed * 1000003 + step * 7919 + index * 104729) | 0);
  const keep = 1 / (1 - p);
  for (let i = 0; i < n; i++) m[i] = r() < p ? 0 : keep;
  return m;
}
