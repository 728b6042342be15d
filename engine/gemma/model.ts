/**
 * The Gemma 1/2/3/4 decoder as an ONNX graph (docs/GEMMA.md §Forward, docs/GEMMA4.md §Forward), with LoRA
 * branches and the causal-LM loss on selected positions. Gemma 4 adds per-layer head dims, K=V and
 * KV-shared layers, v-norm, per-layer embeddings (PLE) and layer_scalar (moe.ts: the experts).
 *
 * Legend: B = batch, T = time (sequence bucket), N = B·T tokens, H = hidden, I = intermediate,
 * nH = query heads, nKv = key/value heads, D = head dim, V = vocab, P = positions with a label,
 * r = LoRA rank.
 *
 * Inputs (fed every run):
 *   input_ids [N] int64 · rope_cos_<full|sliding>, rope_sin_<…> [T,D_type] · mask_<full|sliding> [T,T]
 *   (additive: 0 or −1e9) · sel [P] int64 (flat token index whose next token is predicted) ·
 *   tgt [P,1] int64 (the target id) · tw [P] (1 counts, 0 = padding row) · every weight by HF name ·
 *   LoRA tensors by PEFT name · dropout masks `dropout.<layer>.<linear>` [N,in] when training with dropout.
 * Outputs: loss [] = Σ tw·nll, nll [P], optionally logits [P,V], and `grad.<name>` for trainables.
 */
import { type Dim, type DType, Graph, mulDim, type Value } from "../onnx/builder.ts";
import * as o from "../onnx/ops.ts";
import { gradientsFromSeeds } from "../onnx/autodiff.ts";
import type { GemmaConfig, LayerType } from "./config.ts";
import { layerLinears, type LinearName, linearPath, linearShape, paramSpecs } from "./params.ts";
import { moeBlock } from "./moe.ts";
import { FrozenInputs } from "../quant/graph.ts";
import type { BasePrecision } from "../quant/blocks.ts";

export interface LoraSpec {
  r: number;
  alpha: number;
  rslora: boolean;
  dropout: number;
  targets: readonly string[];
}

export interface ModelGraphOptions {
  /** Numbers, or symbols (dim_params) for a graph that serves every shape (docs/GRAPHS.md). */
  batch: Dim;
  seq: Dim;
  /** Rows that go through the LM head (labelled positions, padded). */
  positions: Dim;
  /** "forward" builds no gradients. */
  method: "lora" | "full" | "forward";
  lora?: LoraSpec;
  /** Build dropout-mask inputs for the LoRA branches (training with dropout > 0). */
  dropout?: boolean;
  float?: DType;
  /** Also output logits [P,V]. */
  logits?: boolean;
  /** How the frozen projections are fed (engine/quant): fp32 (default) or bf16 / int8 / int4 blocks. */
  basePrecision?: BasePrecision;
}

export interface ModelGraph {
  bytes: Uint8Array;
  /** Names of the trainable inputs whose gradients are outputs `grad.<name>`. */
  trainable: string[];
  /** Weight input names (HF), LoRA input names (PEFT), dropout inputs with their shapes. */
  weightInputs: string[];
  loraInputs: string[];
  dropoutInputs: { name: string; shape: Dim[] }[];
  layerTypesUsed: LayerType[];
}

export function loraScaling(l: LoraSpec): number {
  return l.rslora ? l.alpha / Math.sqrt(l.r) : l.alpha / l.r;
}

export function peftName(i: number, lin: LinearName, ab: "A" | "B"): string {
  return `base_model.model.${linearPath(i, lin)}.lora_${ab}.weight`;
}

/** LoRA tensor shapes: A [r,in], B [out,r]. */
export function loraSpecs(c: GemmaConfig, l: LoraSpec): { name: string; shape: number[] }[] {
  const out: { name: string; shape: number[] }[] = [];
  for (let i = 0; i < c.numLayers; i++) {
    // Only the linears the layer has: never k/v of a KV-shared layer, never v_proj of a K=V layer.
    for (const lin of layerLinears(c, i)) {
      if (!l.targets.includes(lin)) continue;
      const [fo, fi] = linearShape(c, lin, i);
      out.push({ name: peftName(i, lin, "A"), shape: [l.r, fi] });
      out.push({ name: peftName(i, lin, "B"), shape: [fo, l.r] });
    }
  }
  return out;
}

/** Context for one graph: the builder, config, and the input values by name. */
export class Ctx {
  readonly w = new Map<string, Value>();
  readonly lora = new Map<string, Value>();
  readonly dropout = new Map<string, Value>();
  /** rope_cos_/rope_sin_/mask_<type> computed inside the graph (the browser export); else graph inputs. */
  readonly tables = new Map<string, Value>();
  /** Projection weights not in `w`: fed in the base precision, dequantized where used. */
  readonly frozen: FrozenInputs;
  /** Keys and values [B,nKv,T,D] after norm and RoPE of each layer that computes them (KV sharing). */
  readonly kv = new Map<number, { k: Value; v: Value }>();
  /** Gemma 4 PLE: each layer's per-layer input [N,Dp]. */
  ple: Value[] = [];
  /**
   * Set by the KV-cache decoder (engine/decoder.ts) only: a projection's product in its own form
   * (MatMulNBits over prepacked blocks), or null for the ordinary Gemm; norms as one fused node; and
   * RoPE of [B,heads,T,D] as one node.
   */
  matmul: ((x: Value, name: string, shape: readonly [number, number]) => Value | null) | null = null;
  fusedNorm = false;
  rope: ((x: Value, type: LayerType) => Value) | null = null;
  private rots = new Map<number, Value>();
  constructor(readonly g: Graph, readonly c: GemmaConfig, readonly opts: ModelGraphOptions) {
    this.frozen = new FrozenInputs(g, opts.basePrecision ?? "fp32");
  }
  table(name: string): Value {
    const v = this.tables.get(name) ?? this.g.inputs.find((x) => x.name === name);
    if (!v) throw new Error(`Graph has no "${name}"`);
    return v;
  }
  get N(): Dim {
    return mulDim(this.opts.batch, this.opts.seq);
  }
  /** The constant rotate_half matrix [D,D] for a head dim (Gemma 4 layers differ). */
  rot(D: number): Value {
    let r = this.rots.get(D);
    if (!r) this.rots.set(D, r = this.g.constant(rotateHalfMatrix(D, this.g.float), [D, D]));
    return r;
  }
}

/** The head dim of a layer type (every layer of a type shares it). */
export function typeHeadDim(c: GemmaConfig, type: LayerType): number {
  return c.layers.find((l) => l.type === type)?.headDim ?? c.headDim;
}

/**
 * y = x·(offset + w) / sqrt(mean(x²) + eps) over the last axis, in the graph's float type: offset 1 is
 * Gemma 1–3's (1 + w), 0 Gemma 4's plain weight; w null is the weightless norm (Gemma 4 v_norm, router).
 */
export function rmsNorm(g: Graph, x: Value, w: Value | null, eps: number, offset: 0 | 1 = 1): Value {
  const ms = o.reduceMean(g, o.mul(g, x, x), [-1], true);
  const inv = o.reciprocal(g, o.sqrt(g, o.add(g, ms, g.scalar(eps))));
  const y = o.mul(g, x, inv);
  if (!w) return y;
  return o.mul(g, y, offset ? o.add(g, w, g.scalar(1)) : w);
}

/** rmsNorm as one SimplifiedLayerNormalization node (inference only: the autodiff has no rule for it). */
export function fusedRmsNorm(g: Graph, x: Value, w: Value, eps: number, offset: 0 | 1 = 1): Value {
  const scale = offset ? o.add(g, w, g.scalar(1)) : w;
  return g.node("SimplifiedLayerNormalization", [x, scale], [{ shape: x.shape, dtype: x.dtype }], { axis: -1, epsilon: { float: eps } })[0];
}

/** tanh-approximate GELU (HF's gelu_pytorch_tanh), one ONNX node with its own backward rule. */
export const geluTanh = o.geluTanh;

export function softcap(g: Graph, x: Value, cap: number): Value {
  return o.scale(g, o.tanh(g, o.scale(g, x, 1 / cap)), cap);
}

/**
 * Declares a graph's weight inputs by HF name into ctx.w, except `skip`ped ones. With a low base
 * precision the projections are left out: frozenMatMul declares them in their stored form at first use.
 */
export function declareWeights(ctx: Ctx, skip: (name: string) => boolean = () => false): void {
  const lowBase = ctx.frozen.precision !== "fp32";
  for (const s of paramSpecs(ctx.c)) {
    if (skip(s.name) || (lowBase && s.kind === "linear")) continue;
    ctx.w.set(s.name, ctx.g.input(s.name, s.shape));
  }
}

/**
 * x [M,in] · Wᵀ for a projection weight W [out,in] by HF name. Every frozen matrix product goes through
 * here, so the base precision (engine/quant/graph.ts) is decided in one place.
 */
export function frozenMatMul(ctx: Ctx, x: Value, name: string, shape: readonly [number, number]): Value {
  const custom = ctx.matmul?.(x, name, shape);
  if (custom) return custom;
  const W = ctx.w.get(name);
  return W ? o.gemm(ctx.g, x, W, { transB: true }) : ctx.frozen.matmul(x, name, shape);
}

/** x [M,in] → [M,out] through layer i's linear, plus its LoRA branch when targeted. */
function linear(ctx: Ctx, x: Value, i: number, lin: LinearName): Value {
  const { g } = ctx;
  let y = frozenMatMul(ctx, x, `${linearPath(i, lin)}.weight`, linearShape(ctx.c, lin, i));
  const A = ctx.lora.get(peftName(i, lin, "A"));
  if (A) {
    const Bm = ctx.lora.get(peftName(i, lin, "B"))!; // [out,r]
    const mask = ctx.dropout.get(`dropout.${i}.${lin}`);
    const xin = mask ? o.mul(g, x, mask) : x;
    const a = o.gemm(g, xin, A, { transB: true }); // [M,r]
    y = o.add(g, y, o.gemm(g, a, Bm, { transB: true, alpha: loraScaling(ctx.opts.lora!) }));
  }
  return y;
}

/** Half-split RoPE as x·cos + rotate_half(x)·sin, rotate_half as a constant [D,D] product. */
function rope(g: Graph, x: Value, cos: Value, sin: Value, rot: Value): Value {
  return o.add(g, o.mul(g, x, cos), o.mul(g, o.matmul(g, x, rot), sin));
}

export function rotateHalfMatrix(D: number, float: DType): Float32Array | Float64Array {
  const R = float === "float64" ? new Float64Array(D * D) : new Float32Array(D * D);
  const h = D / 2;
  for (let c = 0; c < h; c++) {
    R[(c + h) * D + c] = -1;
    R[c * D + c + h] = 1;
  }
  return R;
}

/**
 * Attention over this call's keys/values: q [B,nH,T,D] (scaled), k and v [B,nKv,T,D] after RoPE.
 * Returns [B,nH,T,D]. Training uses `localAttention`; the KV-cache decoder adds cached keys.
 */
export type Attend = (ctx: Ctx, q: Value, k: Value, v: Value, layer: number) => Value;

/** Repeats kv heads for GQA/MQA: [B,nKv,T,D] → [B,nH,T,D]. */
export function expandKv(ctx: Ctx, x: Value): Value {
  const { g, c } = ctx; // nKv from the shape: layers differ in Gemma 4
  const [B, , T, D] = x.shape;
  const nKv = x.shape[1] as number;
  if (nKv === c.numHeads) return x;
  const rep = c.numHeads / nKv;
  return o.reshape(g, o.expand(g, o.reshape(g, x, [B, nKv, 1, T, D]), [B, nKv, rep, T, D]), [B, c.numHeads, T, D]);
}

/** Scores → (soft-capped) + additive mask → softmax → weighted values. */
export function attentionWeights(ctx: Ctx, q: Value, k: Value, mask: Value): Value {
  const { g, c } = ctx;
  let scores = o.matmul(g, q, o.transpose(g, k, [0, 1, 3, 2])); // [B,nH,T,S]
  if (c.attnSoftcap) scores = softcap(g, scores, c.attnSoftcap);
  return o.softmax(g, o.add(g, scores, mask), -1);
}

export const localAttention: Attend = (ctx, q, k, v, i) => {
  const type = ctx.c.layerTypes[i];
  const mask = ctx.table(`mask_${type}`); // [T,T]
  const probs = attentionWeights(ctx, q, expandKv(ctx, k), mask);
  return o.matmul(ctx.g, probs, expandKv(ctx, v));
};

/** One decoder layer on the residual stream h [N,H]. */
export function layer(ctx: Ctx, h: Value, i: number, attend: Attend = localAttention): Value {
  const { g, c, opts } = ctx;
  const B = opts.batch, T = opts.seq, N = ctx.N;
  const l = c.layers[i];
  const nH = c.numHeads, nKv = l.kvHeads, D = l.headDim;
  const p = `model.layers.${i}`;
  const w = (name: string) => ctx.w.get(`${p}.${name}`)!;
  const norm = (x: Value, name: string) => (ctx.fusedNorm ? fusedRmsNorm : rmsNorm)(g, x, w(`${name}.weight`), c.rmsNormEps, c.normOffset);
  const rot = ctx.rope ? null : ctx.rot(D);
  const cos = ctx.table(`rope_cos_${l.type}`); // [T,D]
  const sin = ctx.table(`rope_sin_${l.type}`);
  const rotary = (x: Value) => (ctx.rope ? ctx.rope(x, l.type) : rope(g, x, cos, sin, rot!));

  // Attention.
  const xn = norm(h, "input_layernorm"); // [N,H]
  let q = o.reshape(g, linear(ctx, xn, i, "q_proj"), [B, T, nH, D]);
  if (c.qkNorm) q = norm(q, "self_attn.q_norm");
  if (l.kvSource === i) {
    const kRaw = o.reshape(g, linear(ctx, xn, i, "k_proj"), [B, T, nKv, D]);
    // K=V layers (Gemma 4 full attention): V is the raw K projection, before k_norm and RoPE.
    let v = l.kEqV ? kRaw : o.reshape(g, linear(ctx, xn, i, "v_proj"), [B, T, nKv, D]);
    if (c.vNorm) v = rmsNorm(g, v, null, c.rmsNormEps);
    const k = c.qkNorm ? norm(kRaw, "self_attn.k_norm") : kRaw;
    ctx.kv.set(i, { k: rotary(o.transpose(g, k, [0, 2, 1, 3])), v: o.transpose(g, v, [0, 2, 1, 3]) }); // [B,nKv,T,D]
  }
  // KV-shared layers (Gemma 4) attend to their source layer's keys and values.
  const { k: kh, v: vh } = ctx.kv.get(l.kvSource)!;
  const qh = o.scale(g, rotary(o.transpose(g, q, [0, 2, 1, 3])), c.queryPreAttnScalar ** -0.5); // [B,nH,T,D]
  const ctxv = attend(ctx, qh, kh, vh, i); // [B,nH,T,D]
  const merged = o.reshape(g, o.transpose(g, ctxv, [0, 2, 1, 3]), [N, nH * D]);
  let attn = linear(ctx, merged, i, "o_proj"); // [N,H]
  if (c.generation >= 2) attn = norm(attn, "post_attention_layernorm");
  h = o.add(g, h, attn);

  // MLP (Gemma 4 26B-A4B: plus the experts, moe.ts).
  const mlpIn = norm(h, c.generation >= 2 ? "pre_feedforward_layernorm" : "post_attention_layernorm");
  const gate = geluTanh(g, linear(ctx, mlpIn, i, "gate_proj")); // [N,I_i]
  const up = linear(ctx, mlpIn, i, "up_proj");
  let mlp = linear(ctx, o.mul(g, gate, up), i, "down_proj"); // [N,H]
  if (c.moe) mlp = o.add(g, norm(mlp, "post_feedforward_layernorm_1"), moeBlock(ctx, h, i));
  if (c.generation >= 2) mlp = norm(mlp, "post_feedforward_layernorm");
  h = o.add(g, h, mlp);

  if (c.ple) {
    // Per-layer embeddings: a gated projection of this layer's slice, added to the stream.
    const gp = geluTanh(g, frozenMatMul(ctx, h, `${p}.per_layer_input_gate.weight`, [c.ple.dim, c.hiddenSize])); // [N,Dp]
    const y = frozenMatMul(ctx, o.mul(g, gp, ctx.ple[i]), `${p}.per_layer_projection.weight`, [c.hiddenSize, c.ple.dim]); // [N,H]
    h = o.add(g, h, norm(y, "post_per_layer_input_norm"));
  }
  if (c.layerScalar) h = o.mul(g, h, w("layer_scalar")); // [1]: scales the whole residual stream
  return h;
}

/**
 * Gemma 4 PLE inputs (docs/GEMMA4.md §PLE): rows [N, L·Dp] of embed_tokens_per_layer for the ids and
 * the scaled main embedding e [N,H] → each layer's [N,Dp] in ctx.ple. Returns all of them, [N,L,Dp].
 */
export function perLayerInputs(ctx: Ctx, rows: Value, e: Value, rowsScaled = false): Value {
  const { g, c } = ctx;
  const { dim: Dp } = c.ple!;
  const N = ctx.N, L = c.numLayers, H = c.hiddenSize;
  const f = (x: number) => (g.float === "float32" ? Math.fround(x) : x);
  // rowsScaled: the rows come already times √Dp (the browser export's embed_tokens graph does it).
  const raw = o.reshape(g, rowsScaled ? rows : o.scale(g, rows, f(Math.sqrt(Dp))), [N, L, Dp]);
  const projected = o.scale(g, frozenMatMul(ctx, e, "model.per_layer_model_projection.weight", [L * Dp, H]), f(H ** -0.5)); // [N,L·Dp]
  const normed = rmsNorm(g, o.reshape(g, projected, [N, L, Dp]), ctx.w.get("model.per_layer_projection_norm.weight")!, c.rmsNormEps, c.normOffset);
  const P = o.scale(g, o.add(g, normed, raw), f(2 ** -0.5)); // [N,L,Dp]
  ctx.ple = o.split(g, P, Array(L).fill(1), 1).map((x) => o.reshape(g, x, [N, Dp]));
  return P;
}

/** Inputs rope_cos_/rope_sin_<type> [T,D] and mask_<type> [T,T] for each layer type used. */
export function positionInputs(ctx: Ctx): void {
  const { g, c } = ctx;
  const T = ctx.opts.seq;
  for (const t of new Set(c.layerTypes)) {
    g.input(`rope_cos_${t}`, [T, typeHeadDim(c, t)]);
    g.input(`rope_sin_${t}`, [T, typeHeadDim(c, t)]);
    g.input(`mask_${t}`, [T, T]);
  }
}

/** LoRA tensor inputs (PEFT names) and, when training with dropout, one mask input per adapted linear. */
export function loraInputsOf(ctx: Ctx): { loraInputs: string[]; dropoutInputs: { name: string; shape: Dim[] }[] } {
  const { g, c, opts } = ctx;
  const loraInputs: string[] = [];
  const dropoutInputs: { name: string; shape: Dim[] }[] = [];
  if (!opts.lora) return { loraInputs, dropoutInputs };
  for (const s of loraSpecs(c, opts.lora)) {
    ctx.lora.set(s.name, g.input(s.name, s.shape));
    loraInputs.push(s.name);
  }
  if (opts.dropout && opts.lora.dropout > 0) {
    for (let i = 0; i < c.numLayers; i++) {
      for (const lin of layerLinears(c, i)) {
        if (!opts.lora.targets.includes(lin)) continue;
        const name = `dropout.${i}.${lin}`;
        const shape = [ctx.N, linearShape(c, lin, i)[1]];
        ctx.dropout.set(name, g.input(name, shape));
        dropoutInputs.push({ name, shape });
      }
    }
  }
  return { loraInputs, dropoutInputs };
}

/** Builds the whole graph: forward, loss on selected positions, and gradients for the trainables. */
export function buildModelGraph(c: GemmaConfig, opts: ModelGraphOptions): ModelGraph {
  const float = opts.float ?? "float32";
  const g = new Graph(float);
  const ctx = new Ctx(g, c, opts);
  const N = ctx.N, P = opts.positions;

  const ids = g.input("input_ids", [N], "int64");
  const used = [...new Set(c.layerTypes)];
  positionInputs(ctx);
  const sel = g.input("sel", [P], "int64");
  const tgt = g.input("tgt", [P, 1], "int64");
  const tw = g.input("tw", [P]);
  declareWeights(ctx);
  const { loraInputs, dropoutInputs } = loraInputsOf(ctx);

  const E = ctx.w.get("model.embed_tokens.weight")!; // [V,H]
  const normalizer = float === "float32" ? Math.fround(Math.sqrt(c.hiddenSize)) : Math.sqrt(c.hiddenSize);
  let h = o.scale(g, o.gather(g, E, ids), normalizer); // [N,H]
  if (c.ple) perLayerInputs(ctx, o.gather(g, ctx.w.get("model.embed_tokens_per_layer.weight")!, ids), h);
  for (let i = 0; i < c.numLayers; i++) h = layer(ctx, h, i);
  h = rmsNorm(g, h, ctx.w.get("model.norm.weight")!, c.rmsNormEps, c.normOffset);

  const twCol = o.reshape(g, tw, [P, 1]);
  // Padding rows are zeroed here, on [P,H], so nothing on [P,V] needs masking in the backward.
  const hs = o.mul(g, o.gather(g, h, sel), twCol); // [P,H]
  const rawLogits = o.gemm(g, hs, E, { transB: true }); // [P,V]
  const logits = c.finalSoftcap ? softcap(g, rawLogits, c.finalSoftcap) : rawLogits;
  if (opts.logits) g.output(logits, "logits");
  const logp = o.logSoftmaxComposed(g, logits, -1); // [P,V] (forward only: the gradient is seeded on logits)
  const nll = o.neg(g, o.reshape(g, o.gatherElements(g, logp, tgt, 1), [P])); // [P]
  const loss = o.reduceSum(g, o.mul(g, nll, tw), [0], false); // []
  g.output(loss, "loss");
  g.output(nll, "nll");

  let trainable: string[] = [];
  if (opts.method !== "forward") {
    const wrt = opts.method === "lora" ? [...ctx.lora.values()] : trainableWeights(ctx);
    if (opts.method === "lora" && !opts.lora) throw new RangeError("LoRA graph needs LoRA settings");
    // d loss/d logits in closed form, softmax − onehot: far fewer [P,V] intermediates than
    // differentiating LogSoftmax and GatherElements node by node. Padding rows are masked on hs.
    const dLogits = o.scatterElementsAdd(g, o.exp(g, logp), tgt, o.expand(g, g.scalar(-1), [P, 1]), 1); // [P,V]
    const grads = gradientsFromSeeds(g, new Map([[logits, dLogits]]), wrt);
    for (const w of wrt) g.output(grads.get(w)!, `grad.${w.name}`);
    trainable = wrt.map((w) => w.name);
  }
  return {
    bytes: g.toBytes(),
    trainable,
    weightInputs: [...ctx.w.keys()],
    loraInputs,
    dropoutInputs,
    layerTypesUsed: used,
  };
}

/**
 * Full fine-tuning's trainables: every weight input except buffers (Gemma 4 layer_scalar, which
 * transformers registers as a buffer) and frozen MoE experts.
 */
export function trainableWeights(ctx: Ctx): Value[] {
  const frozen = new Set(paramSpecs(ctx.c).filter((s) => s.kind === "buffer" || s.kind === "expert").map((s) => s.name));
  return [...ctx.w.values()].filter((v) => !frozen.has(v.name));
}

/**
 * cos/sin tables [T,D] (concat(freqs, freqs)) for a layer type, positions 0…T−1, computed in float64.
 * Gemma 4's "proportional" RoPE on full layers rotates only the first ropePartialFull·D/2 frequency
 * pairs, with exponents over the whole D; the other pairs get inv_freq 0 (cos 1, sin 0).
 */
export function ropeTables(c: GemmaConfig, type: LayerType, T: number): { cos: Float64Array; sin: Float64Array } {
  const D = typeHeadDim(c, type), half = D / 2;
  const base = type === "full" ? c.ropeThetaFull : c.ropeThetaSliding;
  const factor = type === "full" ? c.ropeScalingFull : 1;
  const rotated = type === "full" ? Math.floor((c.ropePartialFull * D) / 2) : half;
  const cos = new Float64Array(T * D), sin = new Float64Array(T * D);
  for (let t = 0; t < T; t++) {
    for (let j = 0; j < half; j++) {
      // HF computes inv_freq and the angle in float32.
      const invFreq = j < rotated ? Math.fround(Math.fround(1 / base ** ((2 * j) / D)) / factor) : 0;
      const ang = Math.fround(t * invFreq);
      cos[t * D + j] = cos[t * D + j + half] = Math.cos(ang);
      sin[t * D + j] = sin[t * D + j + half] = Math.sin(ang);
    }
  }
  return { cos, sin };
}

/** Additive causal mask [T,T]; sliding layers also hide keys with q − k ≥ W. */
export function attentionMask(c: GemmaConfig, type: LayerType, T: number): Float64Array {
  const m = new Float64Array(T * T);
  const W = type === "sliding" && c.slidingWindow ? c.slidingWindow : Infinity;
  for (let q = 0; q < T; q++) {
    for (let k = 0; k < T; k++) if (k > q || q - k >= W) m[q * T + k] = -1e9;
  }
  return m;
}
