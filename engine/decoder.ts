/**
 * The KV-cache decoder graph: the same Gemma layers as training (engine/gemma/model.ts `layer`), with
 * attention over [cached keys ‖ this call's keys]. Full-attention layers keep C slots (one per
 * position); sliding layers keep a ring of min(W, C) slots, so they hold only their window.
 *
 * Legend: S = tokens in this call (1 when decoding), C = cache slots of a layer, nKv, D, V as in model.ts.
 * Inputs: input_ids [S] · rope_cos_<type>, rope_sin_<type> [S,D] (positions pos…pos+S−1) ·
 *   mask_<type> [S, C_type + S] (additive; which cached slots and which new tokens each query sees) ·
 *   cache_k.<i>, cache_v.<i> [1,nKv,C_i,D] · last [1] int64 (row whose logits are returned) · weights.
 * Outputs: logits [1,V] · new_k.<i>, new_v.<i> [1,nKv,S,D] (the caller writes them into its cache).
 */
import { Graph, type Value } from "./onnx/builder.ts";
import * as o from "./onnx/ops.ts";
import type { GemmaConfig, LayerType } from "./gemma/config.ts";
import { attentionWeights, type Attend, Ctx, expandKv, layer, rmsNorm, rotateHalfMatrix, softcap } from "./gemma/model.ts";
import { paramSpecs } from "./gemma/params.ts";

/** Cache slots of a layer type for a full-attention capacity C. */
export function slotsFor(c: GemmaConfig, type: LayerType, capacity: number): number {
  return type === "sliding" && c.slidingWindow ? Math.min(c.slidingWindow, capacity) : capacity;
}

export interface DecoderGraph {
  bytes: Uint8Array;
  S: number;
  capacity: number;
}

export function buildDecoderGraph(
  c: GemmaConfig,
  S: number,
  capacity: number,
  opts: { withLogitsAll?: boolean; externalWeights?: { location: string; placements: Map<string, { offset: number; length: number }> } } = {},
): DecoderGraph {
  const g = new Graph("float32");
  const ctx = new Ctx(g, c, { batch: 1, seq: S, positions: 1, method: "forward" });
  const D = c.headDim, nKv = c.numKvHeads;
  const ids = g.input("input_ids", [S], "int64");
  const types = [...new Set(c.layerTypes)];
  for (const t of types) {
    g.input(`rope_cos_${t}`, [S, D]);
    g.input(`rope_sin_${t}`, [S, D]);
    g.input(`mask_${t}`, [S, slotsFor(c, t, capacity) + S]);
  }
  const caches: { k: Value; v: Value }[] = [];
  for (let i = 0; i < c.numLayers; i++) {
    const slots = slotsFor(c, c.layerTypes[i], capacity);
    caches.push({ k: g.input(`cache_k.${i}`, [1, nKv, slots, D]), v: g.input(`cache_v.${i}`, [1, nKv, slots, D]) });
  }
  const last = g.input("last", [1], "int64");
  for (const s of paramSpecs(c)) ctx.w.set(s.name, g.input(s.name, s.shape));
  const rot = g.constant(rotateHalfMatrix(D, "float32"), [D, D]);

  const cached: Attend = (cx, q, k, v, i) => {
    g.output(k, `new_k.${i}`);
    g.output(v, `new_v.${i}`);
    const kAll = o.concat(g, [caches[i].k, k], 2); // [1,nKv,C+S,D]
    const vAll = o.concat(g, [caches[i].v, v], 2);
    const mask = g.inputs.find((x) => x.name === `mask_${c.layerTypes[i]}`)!;
    const probs = attentionWeights(cx, q, expandKv(cx, kAll), mask); // [1,nH,S,C+S]
    return o.matmul(g, probs, expandKv(cx, vAll));
  };

  const E = ctx.w.get("model.embed_tokens.weight")!;
  let h = o.scale(g, o.gather(g, E, ids), Math.fround(Math.sqrt(c.hiddenSize))); // [S,H]
  for (let i = 0; i < c.numLayers; i++) h = layer(ctx, h, i, rot, cached);
  h = rmsNorm(g, h, ctx.w.get("model.norm.weight")!, c.rmsNormEps);
  const rows = opts.withLogitsAll ? h : o.gather(g, h, last); // [1,H] (or [S,H])
  let logits = o.gemm(g, rows, E, { transB: true });
  if (c.finalSoftcap) logits = softcap(g, logits, c.finalSoftcap);
  g.output(logits, "logits");
  if (opts.externalWeights) g.externalize(opts.externalWeights.placements, opts.externalWeights.location);
  return { bytes: g.toBytes(), S, capacity };
}

/**
 * The additive mask [S, slots+S] for queries at positions pos…pos+S−1 of which the first `real` are
 * real tokens. Cached slot j holds the newest position p < pos with p ≡ j (mod slots).
 */
export function decoderMask(c: GemmaConfig, type: LayerType, slots: number, pos: number, S: number): Float32Array {
  const W = type === "sliding" && c.slidingWindow ? c.slidingWindow : Infinity;
  const m = new Float32Array(S * (slots + S)).fill(-1e9);
  for (let s = 0; s < S; s++) {
    const q = pos + s;
    const row = s * (slots + S);
    for (let j = 0; j < slots; j++) {
      if (pos - 1 < j) continue;
      const p = j + slots * Math.floor((pos - 1 - j) / slots);
      if (q - p < W) m[row + j] = 0;
    }
    for (let t = 0; t <= s; t++) if (s - t < W) m[row + slots + t] = 0;
  }
  return m;
}
