/**
 * The KV-cache decoder graph: the same Gemma layers as training (engine/gemma/model.ts `layer`), with
 * attention over [cached keys ‖ this call's keys]. Full-attention layers keep C slots (one per
 * position); sliding layers keep a ring of min(W, C) slots, so they hold only their window.
 *
 * Legend: S = tokens in this call (1 when decoding), C = cache slots of a layer, nKv, D, V as in model.ts.
 * Inputs: input_ids [S] · rope_cos_<type>, rope_sin_<type> [S,D] (positions pos…pos+S−1) ·
 *   mask_<type> [S, C_type + S] (additive; which cached slots and which new tokens each query sees) ·
 *   cache_k.<i>, cache_v.<i> [1,nKv_i,C_i,D_i] (layers that compute keys; Gemma 4 KV-shared layers
 *   attend to their source layer's) · last [1] int64 (row whose logits are returned) · weights.
 * Outputs: logits [1,V] · new_k.<i>, new_v.<i> [1,nKv_i,S,D_i] (the caller writes them into its cache).
 */
import { Graph, type Value } from "./onnx/builder.ts";
import * as o from "./onnx/ops.ts";
import type { GemmaConfig, LayerType } from "./gemma/config.ts";
import { type Attend, attentionWeights, Ctx, declareWeights, expandKv, layer, type LoraSpec, loraSpecs, perLayerInputs, rmsNorm, softcap, typeHeadDim } from "./gemma/model.ts";
import type { BasePrecision } from "./quant/blocks.ts";

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
  opts: {
    withLogitsAll?: boolean;
    externalWeights?: { location: string; placements: Map<string, { offset: number; length: number }> };
    /**
     * A low-precision frozen base (docs/QUANT.md): projections fed in their stored form and dequantized
     * where used, the tables (E, Gemma 4's PLE) fed as bf16 bits: their gathered rows go through the
     * bf16 LUT, and the LM head dequantizes E for its product.
     */
    basePrecision?: BasePrecision;
    /** LoRA kept beside the frozen base (not merged into it): inputs named as PEFT names them. */
    lora?: LoraSpec;
  } = {},
): DecoderGraph {
  const g = new Graph("float32");
  const lowBase = (opts.basePrecision ?? "fp32") !== "fp32";
  const ctx = new Ctx(g, c, { batch: 1, seq: S, positions: 1, method: "forward", basePrecision: opts.basePrecision, lora: opts.lora });
  const ids = g.input("input_ids", [S], "int64");
  const types = [...new Set(c.layerTypes)];
  for (const t of types) {
    g.input(`rope_cos_${t}`, [S, typeHeadDim(c, t)]);
    g.input(`rope_sin_${t}`, [S, typeHeadDim(c, t)]);
    g.input(`mask_${t}`, [S, slotsFor(c, t, capacity) + S]);
  }
  // Only layers that compute keys own a cache; KV-shared layers (Gemma 4) read their source's.
  const caches = new Map<number, { k: Value; v: Value }>();
  c.layers.forEach((l, i) => {
    if (l.kvSource !== i) return;
    const shape = [1, l.kvHeads, slotsFor(c, l.type, capacity), l.headDim];
    caches.set(i, { k: g.input(`cache_k.${i}`, shape), v: g.input(`cache_v.${i}`, shape) });
  });
  const last = g.input("last", [1], "int64");
  const TABLES = ["model.embed_tokens.weight", "model.embed_tokens_per_layer.weight"];
  declareWeights(ctx, (name) => lowBase && TABLES.includes(name));
  if (opts.lora) for (const s of loraSpecs(c, opts.lora)) ctx.lora.set(s.name, g.input(s.name, s.shape));
  // A table's rows at the ids [S, width] in float32, and the whole table (the LM head's product).
  const bits = new Map<string, Value>();
  const table = (name: string) => {
    if (!lowBase) return ctx.w.get(name)!;
    let b = bits.get(name);
    if (!b) {
      const shape = name === TABLES[0] ? [c.vocabSize, c.hiddenSize] : [c.ple!.vocab, c.numLayers * c.ple!.dim];
      bits.set(name, b = g.input(name, shape, "uint16"));
    }
    return b;
  };
  const rowsOf = (name: string) => (lowBase ? ctx.frozen.fromBf16(o.gather(g, table(name), ids)) : o.gather(g, table(name), ids));

  const cached: Attend = (cx, q, k, v, i) => {
    const src = c.layers[i].kvSource;
    if (src === i) {
      g.output(k, `new_k.${i}`);
      g.output(v, `new_v.${i}`);
    }
    const kAll = o.concat(g, [caches.get(src)!.k, k], 2); // [1,nKv,C+S,D]
    const vAll = o.concat(g, [caches.get(src)!.v, v], 2);
    const mask = g.inputs.find((x) => x.name === `mask_${c.layerTypes[i]}`)!;
    const probs = attentionWeights(cx, q, expandKv(cx, kAll), mask); // [1,nH,S,C+S]
    return o.matmul(g, probs, expandKv(cx, vAll));
  };

  let h = o.scale(g, rowsOf(TABLES[0]), Math.fround(Math.sqrt(c.hiddenSize))); // [S,H]
  if (c.ple) perLayerInputs(ctx, rowsOf(TABLES[1]), h);
  for (let i = 0; i < c.numLayers; i++) h = layer(ctx, h, i, cached);
  h = rmsNorm(g, h, ctx.w.get("model.norm.weight")!, c.rmsNormEps, c.normOffset);
  const rows = opts.withLogitsAll ? h : o.gather(g, h, last); // [1,H] (or [S,H])
  const E = lowBase ? ctx.frozen.fromBf16(table(TABLES[0])) : table(TABLES[0]);
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
