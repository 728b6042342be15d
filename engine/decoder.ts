/**
 * The KV-cache decoder graph: the same Gemma layers as training (engine/gemma/model.ts `layer`), with
 * attention over [cached keys ‖ this call's keys]. Full-attention layers keep C slots (one per
 * position); sliding layers keep a ring of min(W, C) slots, so they hold only their window.
 *
 * One graph serves every call: S and the slots may be symbols (`seq`, `slots_<type>`, docs/GRAPHS.md).
 * Norms are single SimplifiedLayerNormalization nodes here (inference only).
 *
 * With `prepack`, the weights are initializers in external data, one in-memory file per weight named by
 * the weight (`decoderWeights`, fed as createSession's `externalData`), not inputs: ORT prepacks each
 * product's B once per session, where an input would be read in its stored layout on every call (with
 * the RoPE and attention below, fp32 gemma-3-270m decoded 1.3–1.5× faster: notes/PERF.md "Decode:
 * prepacked weights"). The prepacked copy is ORT's own, beside the caller's float32 weights, so the
 * caller prepacks only when a second copy fits. ORT copies an in-memory initializer that it does not
 * prepack, so the tables' rows are fed (the caller reads them) and the routed experts stay inputs.
 *
 * Legend: S = tokens in this call (1 when decoding), C = cache slots of a layer, nKv, D, V as in model.ts.
 * Inputs: embeds [S,H] (the tokens' embedding rows) and Gemma 4's ple_rows [S,L·Dp] ·
 *   rope_cos_<type>, rope_sin_<type> [S,D/2] (positions pos…pos+S−1; one half of model.ts's tables, whose halves are equal) ·
 *   mask_<type> [S, C_type + S] (additive; which cached slots and which new tokens each query sees) ·
 *   cache_k.<i>, cache_v.<i> [1,nKv_i,C_i,D_i] (layers that compute keys; Gemma 4 KV-shared layers
 *   attend to their source layer's) · last [1] int64 (row whose logits are returned) · the experts (MoE),
 *   and without `prepack` the `decoderWeights` too.
 * Outputs: logits [1,V] · new_k.<i>, new_v.<i> [1,nKv_i,S,D_i] (the caller writes them into its cache).
 */
import { type Dim, Graph, mulDim, size, type Value } from "./onnx/builder.ts";
import * as o from "./onnx/ops.ts";
import type { GemmaConfig, LayerType } from "./gemma/config.ts";
import { type Attend, attentionWeights, Ctx, fusedRmsNorm, layer, perLayerInputs, rmsNorm, softcap, typeHeadDim } from "./gemma/model.ts";
import { type ParamSpec, paramSpecs } from "./gemma/params.ts";
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
 * The head is the tied table in blocks; the table itself is not in the graph.
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

/**
 * The weights the decoder holds as in-memory initializers. Not among them: the experts (inputs), the
 * per-layer table (only its rows are read), and with packed weights their blocks and the tied table.
 */
export function decoderWeights(c: GemmaConfig, packed?: PackedWeights): ParamSpec[] {
  const out = (s: ParamSpec) => s.kind === "expert" || s.name === "model.embed_tokens_per_layer.weight" || (packed && (s.kind === "embedding" || packed.linears.has(s.name)));
  return paramSpecs(c).filter((s) => !out(s));
}

export function buildDecoderGraph(
  c: GemmaConfig,
  S: Dim,
  capacity: Dim,
  opts: {
    withLogitsAll?: boolean;
    packed?: PackedWeights;
    /** Norms as SimplifiedLayerNormalization nodes (default true). */
    fusedNorm?: boolean;
    /** The `decoderWeights` as in-memory initializers that ORT prepacks (default), else inputs fed each call. */
    prepack?: boolean;
  } = {},
): DecoderGraph {
  const g = new Graph("float32");
  const ctx = new Ctx(g, c, { batch: 1, seq: S, positions: 1, method: "forward" });
  ctx.fusedNorm = opts.fusedNorm ?? true;
  const packed = opts.packed;
  const embeds = g.input("embeds", [S, c.hiddenSize]);
  const pleRows = c.ple ? g.input("ple_rows", [S, c.numLayers * c.ple.dim]) : null;
  const types = [...new Set(c.layerTypes)];
  const rope = new Map<LayerType, { cos: Value; sin: Value }>();
  for (const t of types) {
    const half = typeHeadDim(c, t) / 2;
    rope.set(t, { cos: g.input(`rope_cos_${t}`, [S, half]), sin: g.input(`rope_sin_${t}`, [S, half]) });
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
  const held = decoderWeights(c, packed);
  for (const s of held) ctx.w.set(s.name, g.input(s.name, s.shape));
  for (const s of paramSpecs(c)) if (s.kind === "expert") ctx.w.set(s.name, g.input(s.name, s.shape));
  if (packed) ctx.matmul = (x, name) => (packed.linears.has(name) ? matMulNBits(g, x, packed.linears.get(name)!) : null);
  // RoPE as one RotaryEmbedding (com.microsoft) node in place of a [D,D] product, two Muls and an Add;
  // the tables start at this call's first position, so its position id is 0.
  const start = g.ints([0]);
  ctx.rope = (x, type) => {
    const { cos, sin } = rope.get(type)!;
    return g.node("RotaryEmbedding", [x, start, cos, sin], [{ shape: x.shape, dtype: x.dtype }], {}, "com.microsoft")[0];
  };

  // The cache is never expanded to nH heads (a copy of it per call): one kv head broadcasts in the
  // products; with several, the query heads that share one attend as rows of one product
  // ([1,nKv,rep·S,D] against the keys [1,nKv,C+S,D]), each row masked as its position's row.
  const tiled = new Map<string, Value>();
  const maskRows = (mask: Value, rep: number) => {
    const key = `${mask.name}×${rep}`;
    if (!tiled.has(key)) tiled.set(key, g.node("Tile", [mask, g.ints([rep, 1])], [{ shape: [mulDim(rep, S), mask.shape[1]], dtype: mask.dtype }])[0]);
    return tiled.get(key)!;
  };
  const cached: Attend = (cx, q, k, v, i) => {
    const src = c.layers[i].kvSource;
    if (src === i) {
      g.output(k, `new_k.${i}`);
      g.output(v, `new_v.${i}`);
    }
    const kAll = o.concat(g, [caches.get(src)!.k, k], 2); // [1,nKv,T,D], T = C+S
    const vAll = o.concat(g, [caches.get(src)!.v, v], 2);
    const mask = g.inputs.find((x) => x.name === `mask_${c.layerTypes[i]}`)!; // [S,T]
    const [, nH, , D] = q.shape, nKv = kAll.shape[1] as number;
    if (nKv === 1 || nKv === nH) return o.matmul(g, attentionWeights(cx, q, kAll, mask), vAll);
    const rep = (nH as number) / nKv;
    let scores = o.matmul(g, reshapeOneSymbol(g, q, [1, nKv, mulDim(rep, S), D]), o.transpose(g, kAll, [0, 1, 3, 2])); // [1,nKv,rep·S,T]
    if (c.attnSoftcap) scores = softcap(g, scores, c.attnSoftcap);
    const probs = o.softmax(g, o.add(g, scores, maskRows(mask, rep)), -1);
    return reshapeOneSymbol(g, o.matmul(g, probs, vAll), [1, nH, S, D]); // [1,nKv,rep·S,D] → [1,nH,S,D]
  };

  let h = o.scale(g, embeds, Math.fround(Math.sqrt(c.hiddenSize))); // [S,H]
  if (pleRows) perLayerInputs(ctx, pleRows, h);
  for (let i = 0; i < c.numLayers; i++) h = layer(ctx, h, i, cached);
  h = (ctx.fusedNorm ? fusedRmsNorm : rmsNorm)(g, h, ctx.w.get("model.norm.weight")!, c.rmsNormEps, c.normOffset);
  const rows = opts.withLogitsAll ? h : o.gather(g, h, last); // [1,H] (or [S,H])
  let logits = packed ? matMulNBits(g, rows, packed.head) : o.gemm(g, rows, ctx.w.get("model.embed_tokens.weight")!, { transB: true });
  if (c.finalSoftcap) logits = softcap(g, logits, c.finalSoftcap);
  g.output(logits, "logits");
  if (opts.prepack ?? true) { for (const s of held) g.externalize(new Map([[s.name, { offset: 0, length: 4 * size(s.shape) }]]), s.name); }
  return { bytes: g.toBytes(), S, capacity };
}

/** A Reshape whose symbolic dim (at most one) is left to ORT (-1), so its shape is a constant: no run-time shape ops. */
function reshapeOneSymbol(g: Graph, x: Value, shape: Dim[]): Value {
  if (shape.filter((d) => typeof d === "string").length > 1) throw new RangeError(`Reshape to [${shape}] has more than one symbolic dim`);
  return g.node("Reshape", [x, g.ints(shape.map((d) => (typeof d === "number" ? d : -1)))], [{ shape, dtype: x.dtype }])[0];
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
