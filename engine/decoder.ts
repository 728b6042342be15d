/**
 * The KV-cache decoder graph: the same Gemma layers as training (engine/gemma/model.ts `layer`), with
 * attention over [cached keys ‖ this call's keys]. Full-attention layers keep C slots (one per
 * position); sliding layers keep a ring of min(W, C) slots, so they hold only their window.
 *
 * One graph serves every call: S and the slots may be symbols (`seq`, `slots_<type>`, docs/GRAPHS.md).
 * Norms are single SimplifiedLayerNormalization nodes here (inference only).
 *
 * Legend: S = tokens in this call (1 when decoding), C = cache slots of a layer, nKv, D, V as in model.ts.
 * Inputs: input_ids [S] (or, with packed weights, embeds [S,H] and Gemma 4's ple_rows [S,L·Dp]) · rope_cos_<type>, rope_sin_<type> [S,D] (positions pos…pos+S−1) ·
 *   mask_<type> [S, C_type + S] (additive; which cached slots and which new tokens each query sees) ·
 *   cache_k.<i>, cache_v.<i> [1,nKv_i,C_i,D_i] (layers that compute keys; Gemma 4 KV-shared layers
 *   attend to their source layer's) · last [1] int64 (row whose logits are returned) · weights.
 * Outputs: logits [1,V] · new_k.<i>, new_v.<i> [1,nKv_i,S,D_i] (the caller writes them into its cache).
 */
import { type Dim, Graph, type Value } from "./onnx/builder.ts";
import * as o from "./onnx/ops.ts";
import type { GemmaConfig, LayerType } from "./gemma/config.ts";
import { type Attend, attentionWeights, Ctx, expandKv, fusedRmsNorm, layer, perLayerInputs, rmsNorm, softcap, typeHeadDim } from "./gemma/model.ts";
import { paramSpecs } from "./gemma/params.ts";
import { BLOCK, type FrozenTensor } from "./quant/blocks.ts";

/** Cache slots of a layer type for a full-attention capacity C. */
export function slotsFor(c: GemmaConfig, type: LayerType, capacity: number): number {
  return type === "sliding" && c.slidingWindow ? Math.min(c.slidingWindow, capacity) : capacity;
}

/** The slots dim of a layer type: a number for a static capacity, else the symbol `slots_<type>`. */
function slotsDim(c: GemmaConfig, type: LayerType, capacity: Dim): Dim {
  return typeof capacity === "number" ? slotsFor(c, type, capacity) : `slots_${type}`;
}

export interface DecoderGraph {
  bytes: Uint8Array;
  S: Dim;
  capacity: Dim;
}

/**
 * Projections as MatMulNBits (com.microsoft) over 8- or 4-bit blocks stored as initializers, so ORT
 * prepacks them once at session creation and decodes with its int8 kernels (accuracy_level 4). The
 * blocks are engine/quant/blocks.ts's, which are MatMulNBits' layout byte for byte: B [N, K/32, blob]
 * (int4: element 2j in the low nibble), scales [N·K/32] float32, and the default zero points 128 / 8.
 * The tables are not in the graph: the caller feeds the embedding rows (`embeds`, `ple_rows`).
 */
export interface PackedWeights {
  linears: Map<string, FrozenTensor>;
  /** The tied head E [V,H] in blocks. */
  head: FrozenTensor;
}

/** x [M,K] · Wᵀ for W [N,K] in 8/4-bit blocks, with the blocks as initializers. */
function matMulNBits(g: Graph, x: Value, t: FrozenTensor): Value {
  if (t.kind !== "int8" && t.kind !== "int4") throw new RangeError(`MatMulNBits needs int8 or int4 blocks, got ${t.kind}`);
  const [N, K] = t.shape;
  if (K % BLOCK !== 0) throw new RangeError(`MatMulNBits needs an input size divisible by ${BLOCK}; this weight is [${t.shape}]`);
  const bits = t.kind === "int8" ? 8 : 4;
  const B = g.constant(t.q, [N, K / BLOCK, (BLOCK * bits) / 8], "uint8");
  const S = g.constant(t.scales, [N * (K / BLOCK)]);
  return g.node("MatMulNBits", [x, B, S], [{ shape: [x.shape[0], N], dtype: "float32" }], { K, N, bits, block_size: BLOCK, accuracy_level: 4 }, "com.microsoft")[0];
}

export function buildDecoderGraph(
  c: GemmaConfig,
  S: Dim,
  capacity: Dim,
  opts: {
    withLogitsAll?: boolean;
    externalWeights?: { location: string; placements: Map<string, { offset: number; length: number }> };
    packed?: PackedWeights;
    /** Norms as SimplifiedLayerNormalization nodes (default true). */
    fusedNorm?: boolean;
  } = {},
): DecoderGraph {
  const g = new Graph("float32");
  const ctx = new Ctx(g, c, { batch: 1, seq: S, positions: 1, method: "forward" });
  ctx.fusedNorm = opts.fusedNorm ?? true;
  const packed = opts.packed;
  const ids = packed ? null : g.input("input_ids", [S], "int64");
  const embeds = packed ? g.input("embeds", [S, c.hiddenSize]) : null;
  const pleRows = packed && c.ple ? g.input("ple_rows", [S, c.numLayers * c.ple.dim]) : null;
  const types = [...new Set(c.layerTypes)];
  for (const t of types) {
    g.input(`rope_cos_${t}`, [S, typeHeadDim(c, t)]);
    g.input(`rope_sin_${t}`, [S, typeHeadDim(c, t)]);
    g.input(`mask_${t}`, [S, addDims(slotsDim(c, t, capacity), S)]);
  }
  // Only layers that compute keys own a cache; KV-shared layers (Gemma 4) read their source's.
  const caches = new Map<number, { k: Value; v: Value }>();
  c.layers.forEach((l, i) => {
    if (l.kvSource !== i) return;
    const shape = [1, l.kvHeads, slotsDim(c, l.type, capacity), l.headDim];
    caches.set(i, { k: g.input(`cache_k.${i}`, shape), v: g.input(`cache_v.${i}`, shape) });
  });
  const last = g.input("last", [1], "int64");
  for (const s of paramSpecs(c)) {
    if (packed && (s.kind === "embedding" || packed.linears.has(s.name))) continue;
    ctx.w.set(s.name, g.input(s.name, s.shape));
  }
  if (packed) ctx.matmul = (x, name) => (packed.linears.has(name) ? matMulNBits(g, x, packed.linears.get(name)!) : null);

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

  const E = ctx.w.get("model.embed_tokens.weight");
  let h = o.scale(g, embeds ?? o.gather(g, E!, ids!), Math.fround(Math.sqrt(c.hiddenSize))); // [S,H]
  if (c.ple) perLayerInputs(ctx, pleRows ?? o.gather(g, ctx.w.get("model.embed_tokens_per_layer.weight")!, ids!), h);
  for (let i = 0; i < c.numLayers; i++) h = layer(ctx, h, i, cached);
  h = (ctx.fusedNorm ? fusedRmsNorm : rmsNorm)(g, h, ctx.w.get("model.norm.weight")!, c.rmsNormEps, c.normOffset);
  const rows = opts.withLogitsAll ? h : o.gather(g, h, last); // [1,H] (or [S,H])
  let logits = packed ? matMulNBits(g, rows, packed.head) : o.gemm(g, rows, E!, { transB: true });
  if (c.finalSoftcap) logits = softcap(g, logits, c.finalSoftcap);
  g.output(logits, "logits");
  if (opts.externalWeights) g.externalize(opts.externalWeights.placements, opts.externalWeights.location);
  return { bytes: g.toBytes(), S, capacity };
}

function addDims(a: Dim, b: Dim): Dim {
  return typeof a === "number" && typeof b === "number" ? a + b : `${a}+${b}`;
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
