/**
 * The training step as separate graphs, so the LM head runs over the vocabulary in chunks between
 * the body's forward and backward and no [P,V] tensor exists whole (docs/GEMMA.md §Forward, same maths as
 * model.ts; legend there).
 *
 *   body forward   embeds [N,H] (rows of E, gathered by the caller) → hs [P,H] + saved activations
 *   head chunks    hs, E[v0:v1] → per-row max, Σexp, target logit (+ Σ p·E for the gradient)
 *   body backward  d_hs [P,H] + saved → gradients of LoRA tensors, or of every body weight + embeds
 *
 * The head's gradient never needs the whole softmax: for LoRA and evaluation each chunk returns its
 * own max m_c, Σ exp(l − m_c) and Σ exp(l − m_c)·E_c, which the caller merges online (the flash-
 * attention rescaling), so the head costs exactly its two products. Full fine-tuning also needs
 * dE = (softmax − onehot)ᵀ·hs per chunk, which needs the final log-sum-exp: a first pass of stats
 * gives it, a second pass recomputes each chunk's logits and returns d hs and dE for it.
 */
import { type Dim, type DType, feedNames, Graph, type Value } from "../onnx/builder.ts";
import * as o from "../onnx/ops.ts";
import { gradientsFromSeeds } from "../onnx/autodiff.ts";
import { pruneGraph, splitGraph, stageSplit } from "../onnx/partition.ts";
import { type GemmaConfig, layerCheckpointable } from "./config.ts";
import { Ctx, declareWeights, layer, loraInputsOf, type ModelGraphOptions, perLayerInputs, positionInputs, rmsNorm, softcap, trainableWeights } from "./model.ts";

/** As for the single graph (model.ts); method "forward" builds the forward graph only. */
export interface BodyOptions extends Omit<ModelGraphOptions, "logits"> {
  /**
   * "save": the forward outputs every activation the backward reads (they cross into JS and back).
   * "recompute": the backward graph runs the forward again itself and nothing is saved (activation
   * checkpointing: one more body forward per step for no saved copies; see notes/PERF.md).
   * "layer": per-layer checkpointing: the forward saves only each layer's input h [N,H]; the backward
   * recomputes one layer at a time from it, right before that layer's backward, so only one layer's
   * activations (and dequantized weights) are alive at once (docs/QUANT.md "Memory"). Gemma 4's
   * per-layer inputs and its KV-shared layers' source keys/values are saved beside the layer inputs
   * (LoRA); full fine-tuning of a Gemma 4 E-model and the MoE models fall back to "save".
   */
  activations?: "save" | "recompute" | "layer";
  /**
   * With "layer": the backward as sequential stages of this many layers each, one session per stage
   * (BodyGraphs.stages; engine/onnx/partition.ts stageSplit: ORT's session creation grows faster than the
   * node count, 7.5–9.8 s for gemma-3-270m's one 18-layer backward). Unset or 0: one backward graph.
   */
  stageLayers?: number;
}

export interface BodyGraphs {
  forward: Uint8Array;
  backward?: Uint8Array;
  /** Inputs each graph takes from the caller (the backward also takes `d_hs` and every saved value). */
  forwardInputs: string[];
  backwardInputs: string[];
  saved: string[];
  /** Trainable names whose gradients the backward outputs as `grad.<name>`; full adds `embeds`. */
  trainable: string[];
  dropoutInputs: { name: string; shape: Dim[] }[];
  /**
   * The backward as sequential stages (BodyOptions.stageLayers), instead of `backward`: run in order, each
   * fed like the backward plus its `carried` values, taken from the outputs of the stages before it.
   */
  stages?: { bytes: Uint8Array; inputs: string[]; carried: string[] }[];
}

export const EMBED = "model.embed_tokens.weight";

/** The body's inputs that change every step; the rest are weights (their transforms are recomputed, not saved). */
const STEP_INPUTS = new Set(["embeds", "ple_embeds", "sel", "tw", "d_hs"]);
/** Gemma 4's per-layer embedding table: gathered by the caller like E, fed as `ple_embeds` [N, L·Dp]. */
export const PLE_TABLE = "model.embed_tokens_per_layer.weight";

/**
 * The decoder body: embeds [N,H] (unscaled rows of E) → hs [P,H] = final-normed hidden states at the
 * selected positions, zero on padding rows (tw = 0).
 */
export function buildBody(c: GemmaConfig, opts: BodyOptions): BodyGraphs {
  if (opts.activations === "layer" && opts.method !== "forward") {
    if (layerCheckpointable(c, opts.method)) return buildLayerCheckpointed(c, opts);
    opts = { ...opts, activations: "save" };
  }
  const float = opts.float ?? "float32";
  const g = new Graph(float);
  const ctx = new Ctx(g, c, opts);
  const N = ctx.N, P = opts.positions, H = c.hiddenSize;

  const embeds = g.input("embeds", [N, H]);
  const pleRows = c.ple ? g.input("ple_embeds", [N, c.numLayers * c.ple.dim]) : null;
  positionInputs(ctx);
  const sel = g.input("sel", [P], "int64");
  const tw = g.input("tw", [P]);
  declareWeights(ctx, (name) => name === EMBED || name === PLE_TABLE);
  const { dropoutInputs } = loraInputsOf(ctx);
  const normalizer = float === "float32" ? Math.fround(Math.sqrt(H)) : Math.sqrt(H);
  let h = o.scale(g, embeds, normalizer); // [N,H]
  if (pleRows) perLayerInputs(ctx, pleRows, h);
  for (let i = 0; i < c.numLayers; i++) h = layer(ctx, h, i);
  h = rmsNorm(g, h, ctx.w.get("model.norm.weight")!, c.rmsNormEps, c.normOffset);
  const hsRaw = o.mul(g, o.gather(g, h, sel), o.reshape(g, tw, [P, 1])); // [P,H]
  const hs = g.output(hsRaw, "hs");
  const cut = g.nodes.length;

  if (opts.method === "forward") {
    return { forward: g.toBytes(), forwardInputs: feedNames(g.inputs), backwardInputs: [], saved: [], trainable: [], dropoutInputs };
  }
  if (opts.method === "lora" && !opts.lora) throw new RangeError("LoRA graph needs LoRA settings");
  const dHs = g.input("d_hs", [P, H]);
  const wrt = opts.method === "lora" ? [...ctx.lora.values()] : [...trainableWeights(ctx), embeds, ...(pleRows ? [pleRows] : [])];
  const grads = gradientsFromSeeds(g, new Map([[hsRaw, dHs]]), wrt);
  const outs = wrt.map((w) => g.output(grads.get(w)!, `grad.${w.name}`));
  const split = opts.activations === "recompute"
    ? { forward: pruneGraph(g, [hs]), backward: pruneGraph(g, outs), saved: [] }
    : splitGraph(g, cut, [hs], outs, new Set(g.inputs.filter((v) => !STEP_INPUTS.has(v.name)).map((v) => v.name)));
  return {
    forward: split.forward.toBytes(),
    backward: split.backward.toBytes(),
    forwardInputs: feedNames(split.forward.inputs),
    backwardInputs: feedNames(split.backward.inputs),
    saved: split.saved.map((v) => v.name),
    trainable: wrt.map((w) => w.name),
    dropoutInputs,
  };
}

/**
 * A scalar 0 that ONNX Runtime can only compute after every value in `deps`: added to a layer's
 * saved input (and to the frozen weights' LUT / scales), it orders that layer's recompute after the
 * backward of the layer above, so the planner frees each layer's activations before the next is made.
 */
function zeroAfter(g: Graph, deps: Value[]): Value {
  let s: Value | null = null;
  for (const d of deps) {
    const r = o.reduceSum(g, d, d.shape.map((_, i) => i), false);
    s = s ? o.add(g, s, r) : r;
  }
  return o.mul(g, s!, g.scalar(0));
}

/** The body with per-layer checkpointing (BodyOptions.activations "layer"). */
function buildLayerCheckpointed(c: GemmaConfig, opts: BodyOptions): BodyGraphs {
  const float = opts.float ?? "float32";
  const L = c.numLayers, H = c.hiddenSize, P = opts.positions;
  const normalizer = float === "float32" ? Math.fround(Math.sqrt(H)) : Math.sqrt(H);
  const ckpt = (i: number) => `ckpt.${i}`;
  // Layers whose keys/values later layers attend to (Gemma 4 KV sharing): saved as ckpt.k.<i>, ckpt.v.<i>.
  const sources = new Set(c.layers.filter((l, i) => l.kvSource !== i).map((l) => l.kvSource));
  const kvShape = (i: number) => [opts.batch, c.layers[i].kvHeads, opts.seq, c.layers[i].headDim];
  const pleWidth = c.ple ? L * c.ple.dim : 0;
  if (opts.method === "lora" && !opts.lora) throw new RangeError("LoRA graph needs LoRA settings");
  const start = (g: Graph) => {
    const ctx = new Ctx(g, c, opts);
    const embeds = g.input("embeds", [ctx.N, H]);
    positionInputs(ctx);
    const sel = g.input("sel", [P], "int64");
    const tw = g.input("tw", [P]);
    declareWeights(ctx, (name) => name === EMBED || name === PLE_TABLE);
    const { dropoutInputs } = loraInputsOf(ctx);
    return { ctx, embeds, sel, tw, dropoutInputs };
  };
  const top = (g: Graph, ctx: Ctx, h: Value, sel: Value, tw: Value) => {
    const hn = rmsNorm(g, h, ctx.w.get("model.norm.weight")!, c.rmsNormEps, c.normOffset);
    return o.mul(g, o.gather(g, hn, sel), o.reshape(g, tw, [P, 1])); // [P,H]
  };

  // Forward: hs and each layer's input (layer 0's is recomputed from embeds).
  const f = new Graph(float);
  const F = start(f);
  let h = o.scale(f, F.embeds, normalizer);
  if (c.ple) {
    const rows = f.input("ple_embeds", [F.ctx.N, pleWidth]);
    f.output(o.reshape(f, perLayerInputs(F.ctx, rows, h), [F.ctx.N, pleWidth]), "ckpt.ple");
  }
  for (let i = 0; i < L; i++) {
    h = layer(F.ctx, h, i);
    f.output(h, ckpt(i + 1));
    if (sources.has(i)) {
      f.output(F.ctx.kv.get(i)!.k, `ckpt.k.${i}`);
      f.output(F.ctx.kv.get(i)!.v, `ckpt.v.${i}`);
    }
  }
  f.output(top(f, F.ctx, h, F.sel, F.tw), "hs");

  // Backward: the head's norm, then layer by layer from the top, each recomputed just before its backward.
  const g = new Graph(float);
  const B = start(g);
  const ctx = B.ctx;
  const dHs = g.input("d_hs", [P, H]);
  if (c.ple) {
    // The per-layer inputs as the forward computed them (constants for LoRA).
    const saved = o.reshape(g, g.input("ckpt.ple", [ctx.N, pleWidth]), [ctx.N, L, c.ple.dim]);
    ctx.ple = o.split(g, saved, Array(L).fill(1), 1).map((x) => o.reshape(g, x, [ctx.N, c.ple!.dim]));
  }
  // Saved keys/values of each source layer, and the sum of their gradients from the layers sharing them.
  const kvSaved = new Map<number, { k: Value; v: Value }>();
  const kvGrad = new Map<number, { k: Value | null; v: Value | null }>();
  const sum = (a: Value | null, b: Value) => (a ? o.add(g, a, b) : b);
  const trainables = opts.method === "lora" ? [...ctx.lora.values()] : trainableWeights(ctx);
  const ofLayer = (i: number) => trainables.filter((v) => v.name.includes(`model.layers.${i}.`));
  const covered = new Set<Value>();
  const outs: { name: string; v: Value }[] = [];
  const emit = (grads: Map<Value, Value>, vs: Value[]) => {
    for (const v of vs) {
      outs.push({ name: `grad.${v.name}`, v: grads.get(v)! });
      covered.add(v);
    }
  };
  const hL = g.input(ckpt(L), [ctx.N, H]);
  const topW = trainables.filter((v) => !/model\.layers\.\d+\./.test(v.name));
  let gr = gradientsFromSeeds(g, new Map([[top(g, ctx, hL, B.sel, B.tw), dHs]]), [hL, ...topW]);
  emit(gr, topW);
  let dh = gr.get(hL)!;
  let deps = [dh, ...topW.map((v) => gr.get(v)!)];
  const per = opts.stageLayers ?? 0;
  const cuts: number[] = [];
  for (let i = L - 1; i >= 0; i--) {
    // A stage's first layer needs no ordering after the layer above: it runs in a later session.
    const stageStart = per > 0 && i < L - 1 && (L - 1 - i) % per === 0;
    if (stageStart) cuts.push(g.nodes.length);
    const zero = stageStart ? g.scalar(0) : zeroAfter(g, deps);
    const start = i === 0 ? o.scale(g, B.embeds, normalizer) : g.input(ckpt(i), [ctx.N, H]);
    const hi = o.add(g, start, zero);
    ctx.frozen.after = zero;
    const mine = ofLayer(i);
    const src = c.layers[i].kvSource;
    const shared: Value[] = [];
    if (src !== i) {
      // A KV-shared layer reads its source's saved keys/values, through a copy of its own (ordered
      // like hi): as a wanted leaf, the saved input itself would make the layers above look live.
      let kv = kvSaved.get(src);
      if (!kv) kvSaved.set(src, kv = { k: g.input(`ckpt.k.${src}`, kvShape(src)), v: g.input(`ckpt.v.${src}`, kvShape(src)) });
      const local = { k: o.add(g, kv.k, zero), v: o.add(g, kv.v, zero) };
      ctx.kv.set(src, local);
      shared.push(local.k, local.v);
    }
    // Layer 0 too differentiates w.r.t. its input h, not embeds: embeds carries the batch*seq dim
    // that every Reshape reads, and as a wanted leaf it would make those shape paths look live.
    const wrt = [...mine, ...shared, hi];
    const seeds = new Map([[layer(ctx, hi, i), dh]]);
    const fromAbove = kvGrad.get(i);
    if (fromAbove) {
      // A source layer: its keys/values also carry the gradients of every layer that shared them.
      const own = ctx.kv.get(i)!;
      if (fromAbove.k) seeds.set(own.k, fromAbove.k);
      if (fromAbove.v) seeds.set(own.v, fromAbove.v);
    }
    gr = gradientsFromSeeds(g, seeds, wrt);
    emit(gr, mine);
    if (src !== i) {
      const acc = kvGrad.get(src) ?? { k: null, v: null };
      const [dk, dv] = [gr.get(shared[0]), gr.get(shared[1])];
      kvGrad.set(src, { k: dk ? sum(acc.k, dk) : acc.k, v: dv ? sum(acc.v, dv) : acc.v });
    }
    dh = gr.get(wrt.at(-1)!)!;
    deps = [dh, ...mine.map((v) => gr.get(v)!), ...shared.flatMap((v) => (gr.get(v) ? [gr.get(v)!] : []))];
  }
  ctx.frozen.after = null;
  const wrtAll = opts.method === "full" ? [...trainables, B.embeds] : trainables;
  const missing = trainables.filter((v) => !covered.has(v));
  if (missing.length) throw new Error(`Per-layer checkpointing: no gradient for ${missing.map((v) => v.name).join(", ")}`);
  const gradOuts = outs.map((x) => g.output(x.v, x.name));
  if (opts.method === "full") gradOuts.push(g.output(o.scale(g, dh, normalizer), "grad.embeds")); // h0 = √H·embeds
  const forward = pruneGraph(f, f.outputs);
  const common = { forward: forward.toBytes(), forwardInputs: feedNames(forward.inputs), trainable: wrtAll.map((w) => w.name), dropoutInputs: F.dropoutInputs };
  const savedBy = (inputs: string[]) => forward.outputs.map((v) => v.name).filter((n) => n !== "hs" && inputs.includes(n));
  if (cuts.length) {
    const stages = stageSplit(g, gradOuts, cuts).map((st) => {
      const carried = new Set(st.carried);
      return { bytes: st.graph.toBytes(), inputs: feedNames(st.graph.inputs.filter((v) => !carried.has(v.name))), carried: st.carried };
    });
    const inputs = [...new Set(stages.flatMap((st) => st.inputs))];
    return { ...common, backwardInputs: inputs, saved: savedBy(inputs), stages };
  }
  const backward = pruneGraph(g, gradOuts);
  return { ...common, backward: backward.toBytes(), backwardInputs: feedNames(backward.inputs), saved: savedBy(backward.inputs.map((v) => v.name)) };
}

export interface HeadOptions {
  positions: Dim;
  /** Rows of E in this chunk. */
  rows: Dim;
  /**
   * "stats": m, s, tl per row. "online": also acc = Σ_v exp(l − m)·(dl/draw)·E[v] [P,H] (LoRA, the
   * softmax part of d hs). "grad": given lse and tw, d hs and dE of this chunk (full fine-tuning).
   */
  kind: "stats" | "online" | "grad";
  float?: DType;
}

/**
 * One vocabulary chunk of the LM head. Inputs: hs [P,H], emb [rows,H] (a view of E), tloc [P,1]
 * int64 (target index inside the chunk, clamped), tin [P,1] (1 where the target is in this chunk);
 * "grad" also lse [P,1] and tw [P,1]. Outputs: m, s, tl [P,1] (stats/online), acc [P,H] (online),
 * d_hs [P,H] and d_emb [rows,H] (grad).
 */
export function buildHeadChunk(c: GemmaConfig, opts: HeadOptions): Uint8Array {
  const g = new Graph(opts.float ?? "float32");
  const P = opts.positions, R = opts.rows, H = c.hiddenSize;
  const hs = g.input("hs", [P, H]);
  const emb = g.input("emb", [R, H]);
  const tloc = g.input("tloc", [P, 1], "int64");
  const tin = g.input("tin", [P, 1]);
  const raw = o.gemm(g, hs, emb, { transB: true }); // [P,R]
  const logits = c.finalSoftcap ? softcap(g, raw, c.finalSoftcap) : raw;
  if (opts.kind === "grad") {
    const lse = g.input("lse", [P, 1]);
    const tw = g.input("tw", [P, 1]);
    const p = o.exp(g, o.sub(g, logits, lse)); // [P,R] softmax over the whole vocabulary
    const dl = o.mul(g, o.scatterElementsAdd(g, p, tloc, o.neg(g, tin), 1), tw); // (p − onehot)·tw
    const grads = gradientsFromSeeds(g, new Map([[logits, dl]]), [hs, emb]);
    g.output(grads.get(hs)!, "d_hs");
    g.output(grads.get(emb)!, "d_emb");
    return g.toBytes();
  }
  const m = o.reduceMax(g, logits, [1], true); // [P,1]
  const e = o.exp(g, o.sub(g, logits, m)); // [P,R]
  g.output(m, "m");
  g.output(o.reduceSum(g, e, [1], true), "s");
  g.output(o.mul(g, o.gatherElements(g, logits, tloc, 1), tin), "tl");
  if (opts.kind === "online") g.output(gradientsFromSeeds(g, new Map([[logits, e]]), [hs]).get(hs)!, "acc");
  return g.toBytes();
}

/** Chunk boundaries over V rows: equal chunks of at most `maxRows` (the last may be shorter). */
export function vocabChunks(V: number, maxRows: number): { start: number; rows: number }[] {
  const n = Math.max(1, Math.ceil(V / maxRows));
  const size = Math.ceil(V / n);
  const out: { start: number; rows: number }[] = [];
  for (let s = 0; s < V; s += size) out.push({ start: s, rows: Math.min(size, V - s) });
  return out;
}

export type { Value };
