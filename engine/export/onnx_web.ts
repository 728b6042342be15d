/**
 * The browser-ready ONNX export: the folder layout and I/O names transformers.js loads
 * (docs/ONNX_WEB.md), built from the same Gemma layers as training (engine/gemma/model.ts `layer`),
 * with RoPE tables and attention masks computed inside the graph from position_ids and attention_mask.
 *
 *   inputs   input_ids, attention_mask, position_ids  int64 [batch_size, sequence_length | total]
 *            past_key_values.<i>.key / .value         float [batch_size, kv_heads, past_sequence_length, head_dim]
 *   outputs  logits                                   float [batch_size, sequence_length, vocab]
 *            present.<i>.key / .value                 float [batch_size, kv_heads, total, head_dim]
 *
 * total = past_sequence_length+sequence_length. Weights live in onnx/model.onnx_data (external data).
 *
 * Gemma 4 goes the way transformers.js runs it (its Gemma4ForConditionalGeneration, text only: the
 * config.json is the "gemma4" wrapper, so it loads two sessions):
 *
 *   onnx/embed_tokens.onnx           input_ids [batch, seq] → inputs_embeds [batch, seq, H] (× √H),
 *                                    per_layer_inputs [batch, seq, L, Dp] (PLE rows × √Dp; E-models only)
 *   onnx/decoder_model_merged.onnx   inputs_embeds, per_layer_inputs, attention_mask, position_ids (from 0),
 *                                    past_key_values.<i>.key/value for the layers that own a cache
 *                                    (i < num_hidden_layers − num_kv_shared_layers) → logits, present.<i>.*
 *
 * Each graph has its own external-data file (a browser hands each session only its own), so the tied
 * embedding is stored twice: in embed_tokens.onnx_data for the lookup and in the decoder's for the head.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { Graph, type Value } from "../onnx/builder.ts";
import * as o from "../onnx/ops.ts";
import type { GemmaConfig, LayerType } from "../gemma/config.ts";
import { type Attend, attentionWeights, Ctx, expandKv, layer, perLayerInputs, rmsNorm, softcap, typeHeadDim } from "../gemma/model.ts";
import { paramSpecs } from "../gemma/params.ts";

export const WEB_DIMS = { batch: "batch_size", seq: "sequence_length", past: "past_sequence_length" } as const;
const TOTAL = `${WEB_DIMS.past}+${WEB_DIMS.seq}`;
/** Additive mask value for hidden keys, as in training (model.ts attentionMask). */
const HIDDEN = -1e9;

/**
 * transformers.js feeds Gemma 3's position_ids counting from 1 (its `create_position_ids` start
 * index for gemma3_text), Gemma 1/2's from 0; the graph subtracts it so RoPE sees HF's positions.
 */
export function positionStart(c: GemmaConfig): number {
  // Gemma 4's config.json is the "gemma4" wrapper, which transformers.js counts from 0.
  return c.modelType === "gemma3_text" ? 1 : 0;
}

function node1(g: Graph, op: string, inputs: Value[], shape: Value["shape"], dtype: Value["dtype"] = "int64", attrs = {}): Value {
  return g.node(op, inputs, [{ shape, dtype }], attrs)[0];
}

/** cos/sin [B,1,T,D] of (position_ids − start)·inv_freq, in float32 as HF computes them. */
function ropeInGraph(g: Graph, c: GemmaConfig, pos: Value, type: LayerType): { cos: Value; sin: Value } {
  // The same inv_freq as model.ts ropeTables (float32, linear scaling, partial rotation).
  const D = typeHeadDim(c, type), half = D / 2;
  const base = type === "full" ? c.ropeThetaFull : c.ropeThetaSliding;
  const factor = type === "full" ? c.ropeScalingFull : 1;
  const rotated = type === "full" ? Math.floor(((c.ropePartialFull ?? 1) * D) / 2) : half;
  const inv = new Float32Array(D);
  for (let j = 0; j < rotated; j++) inv[j] = inv[j + half] = Math.fround(Math.fround(1 / base ** ((2 * j) / D)) / factor);
  const { batch: B, seq: T } = WEB_DIMS;
  const p = o.reshape(g, pos, [B, 1, T, 1]);
  const ang = o.mul(g, p, g.constant(inv, [D])); // [B,1,T,D]
  return { cos: node1(g, "Cos", [ang], ang.shape, "float32"), sin: node1(g, "Sin", [ang], ang.shape, "float32") };
}

/**
 * The additive mask [B,1,T,total] of a layer type: key k visible to query q (absolute index
 * past+q) iff k ≤ past+q, attention_mask[b,k] = 1 and, on sliding layers, past+q − k < W.
 */
function maskInGraph(g: Graph, c: GemmaConfig, keep: Value, diff: Value, type: LayerType): Value {
  const { batch: B, seq: T } = WEB_DIMS;
  let ok = node1(g, "And", [keep, node1(g, "GreaterOrEqual", [diff, g.ints([0])], diff.shape, "bool")], [B, 1, T, TOTAL], "bool");
  if (type === "sliding" && c.slidingWindow) {
    ok = node1(g, "And", [ok, node1(g, "Less", [diff, g.ints([c.slidingWindow])], diff.shape, "bool")], ok.shape, "bool");
  }
  return node1(g, "Where", [ok, g.scalar(0), g.scalar(HIDDEN)], ok.shape, "float32");
}

/**
 * Why this export cannot represent the model, or null. Gemma 4: transformers.js names the cache
 * inputs of layers 0 … L − num_kv_shared_layers − 1, so exactly those must own a cache.
 */
export function webExportRefusal(c: GemmaConfig): string | null {
  if (c.generation !== 4) return null;
  const owners = c.layers.flatMap((l, i) => (l.kvSource === i ? [i] : []));
  const shared = Number(textConfig(c).num_kv_shared_layers ?? 0);
  if (owners.length !== c.numLayers - shared || owners.some((i, k) => i !== k)) {
    return `transformers.js gives Gemma 4 a cache for layers 0…${c.numLayers - shared - 1} (num_kv_shared_layers ${shared}), but this model's layers ${
      owners.join(", ")
    } compute keys and values`;
  }
  return null;
}

/** The text model's own config.json fields (the text_config of a multimodal checkpoint). */
function textConfig(c: GemmaConfig): Record<string, unknown> {
  const tc = c.raw.text_config;
  return typeof tc === "object" && tc !== null ? tc as Record<string, unknown> : c.raw;
}

/** The inputs every decoder graph shares: attention_mask, position_ids, past_key_values.<i> for the cache-owning layers. */
function decoderInputs(g: Graph, c: GemmaConfig) {
  const { batch: B, seq: T, past: PAST } = WEB_DIMS;
  const am = g.input("attention_mask", [B, TOTAL], "int64");
  const posIds = g.input("position_ids", [B, T], "int64");
  const past = new Map<number, { k: Value; v: Value }>();
  c.layers.forEach((l, i) => {
    if (l.kvSource !== i) return;
    const shape = [B, l.kvHeads, PAST, l.headDim];
    past.set(i, { k: g.input(`past_key_values.${i}.key`, shape), v: g.input(`past_key_values.${i}.value`, shape) });
  });
  return { am, posIds, past };
}

/** RoPE tables and masks of every layer type into ctx.tables, from position_ids and attention_mask. */
function positionsInGraph(ctx: Ctx, am: Value, posIds: Value): void {
  const { g, c } = ctx;
  const { seq: T } = WEB_DIMS;
  const start = positionStart(c);
  const pos = o.cast(g, start ? o.sub(g, posIds, g.ints([start])) : posIds, "float32");
  const total = g.dimValue(TOTAL)!, seq = g.dimValue(T)!;
  const zero = g.ints([0]), one = g.ints([1]);
  const scalar = (v: Value) => o.reshape(g, v, []);
  const kIdx = node1(g, "Range", [scalar(zero), scalar(total), scalar(one)], [TOTAL]); // key index 0…total−1
  const pastLen = node1(g, "Sub", [total, seq], [1]);
  const qIdx = node1(g, "Range", [scalar(pastLen), scalar(total), scalar(one)], [T]); // query index past…total−1
  const diff = node1(g, "Sub", [o.reshape(g, qIdx, [T, 1]), o.reshape(g, kIdx, [1, TOTAL])], [T, TOTAL]); // [T,total]
  const keep = o.reshape(g, node1(g, "Equal", [am, g.ints([1])], am.shape, "bool"), [WEB_DIMS.batch, 1, 1, TOTAL]);
  for (const type of new Set(c.layerTypes)) {
    const { cos, sin } = ropeInGraph(g, c, pos, type);
    ctx.tables.set(`rope_cos_${type}`, cos);
    ctx.tables.set(`rope_sin_${type}`, sin);
    ctx.tables.set(`mask_${type}`, maskInGraph(g, c, keep, diff, type));
  }
}

/**
 * Attention over past + new keys/values, emitting present.<i>.key/value for the layers that own a
 * cache; a KV-shared layer (Gemma 4) attends to its source layer's whole cache.
 */
function cachedAttend(c: GemmaConfig, g: Graph, past: Map<number, { k: Value; v: Value }>): Attend {
  const full = new Map<number, { k: Value; v: Value }>();
  return (cx, q, k, v, i) => {
    const src = c.layers[i].kvSource;
    let kv = full.get(src);
    if (!kv) {
      if (src !== i) throw new Error(`Layer ${i} shares the cache of layer ${src}, which has not run`);
      kv = { k: o.concat(g, [past.get(i)!.k, k], 2), v: o.concat(g, [past.get(i)!.v, v], 2) }; // [B,nKv,total,D]
      g.output(kv.k, `present.${i}.key`);
      g.output(kv.v, `present.${i}.value`);
      full.set(i, kv);
    }
    const probs = attentionWeights(cx, q, expandKv(cx, kv.k), cx.table(`mask_${c.layerTypes[i]}`)); // [B,nH,T,total]
    return o.matmul(g, probs, expandKv(cx, kv.v));
  };
}

/** Final norm, tied head, soft-cap → the logits output [B,T,V]. */
function logitsOut(ctx: Ctx, h: Value): void {
  const { g, c } = ctx;
  const E = ctx.w.get("model.embed_tokens.weight")!;
  h = rmsNorm(g, h, ctx.w.get("model.norm.weight")!, c.rmsNormEps, c.normOffset);
  let logits = o.gemm(g, h, E, { transB: true }); // [N,V]
  if (c.finalSoftcap) logits = softcap(g, logits, c.finalSoftcap);
  g.output(o.reshape(g, logits, [WEB_DIMS.batch, WEB_DIMS.seq, c.vocabSize]), "logits");
}

type Placements = { location: string; placements: Map<string, { offset: number; length: number }> };

const PLE_TABLE = "model.embed_tokens_per_layer.weight";

/** Gemma 4's embed_tokens graph: the scaled embedding and, for E-models, the scaled per-layer rows. */
export function buildEmbedGraph(c: GemmaConfig, externalWeights: Placements): Uint8Array {
  const g = new Graph("float32");
  const { batch: B, seq: T } = WEB_DIMS;
  const ids = g.input("input_ids", [B, T], "int64");
  const E = g.input("model.embed_tokens.weight", [c.vocabSize, c.hiddenSize]);
  const N = `${B}*${T}`;
  const flat = o.reshape(g, ids, [N]);
  const e = o.scale(g, o.gather(g, E, flat), Math.fround(Math.sqrt(c.hiddenSize))); // [N,H]
  g.output(o.reshape(g, e, [B, T, c.hiddenSize]), "inputs_embeds");
  if (c.ple) {
    const { dim: Dp, vocab: Vp } = c.ple;
    const P = g.input(PLE_TABLE, [Vp, c.numLayers * Dp]);
    // Ids past a shorter per-layer table take row 0, as transformers maps them (train_engine.ts does the same).
    const pid = Vp < c.vocabSize ? node1(g, "Where", [node1(g, "Less", [flat, g.ints([Vp])], [N], "bool"), flat, g.ints([0])], [N]) : flat;
    const rows = o.scale(g, o.gather(g, P, pid), Math.fround(Math.sqrt(Dp))); // [N,L·Dp]
    g.output(o.reshape(g, rows, [B, T, c.numLayers, Dp]), "per_layer_inputs");
  }
  g.externalize(externalWeights.placements, externalWeights.location);
  return g.toBytes();
}

/** Gemma 4's decoder_model_merged graph (every weight but the per-layer table). */
export function buildDecoderMergedGraph(c: GemmaConfig, externalWeights: Placements): Uint8Array {
  const refusal = webExportRefusal(c);
  if (refusal) throw new RangeError(`Cannot export: ${refusal}`);
  const g = new Graph("float32");
  const { batch: B, seq: T } = WEB_DIMS;
  const ctx = new Ctx(g, c, { batch: B, seq: T, positions: 1, method: "forward" });
  const embeds = g.input("inputs_embeds", [B, T, c.hiddenSize]);
  const pleIn = c.ple ? g.input("per_layer_inputs", [B, T, c.numLayers, c.ple.dim]) : null;
  const { am, posIds, past } = decoderInputs(g, c);
  for (const s of paramSpecs(c)) if (s.name !== PLE_TABLE) ctx.w.set(s.name, g.input(s.name, s.shape));
  positionsInGraph(ctx, am, posIds);
  let h = o.reshape(g, embeds, [ctx.N, c.hiddenSize]); // [N,H], already × √H
  if (pleIn) perLayerInputs(ctx, o.reshape(g, pleIn, [ctx.N, c.numLayers * c.ple!.dim]), h, true);
  const attend = cachedAttend(c, g, past);
  for (let i = 0; i < c.numLayers; i++) h = layer(ctx, h, i, attend);
  logitsOut(ctx, h);
  g.externalize(externalWeights.placements, externalWeights.location);
  return g.toBytes();
}

export function buildWebGraph(c: GemmaConfig, externalWeights: Placements): Uint8Array {
  if (c.generation === 4) throw new RangeError("Gemma 4 exports as embed_tokens + decoder_model_merged (buildEmbedGraph, buildDecoderMergedGraph)");
  const g = new Graph("float32");
  const { batch: B, seq: T } = WEB_DIMS;
  const ctx = new Ctx(g, c, { batch: B, seq: T, positions: 1, method: "forward" });
  const ids = g.input("input_ids", [B, T], "int64");
  const { am, posIds, past } = decoderInputs(g, c);
  for (const s of paramSpecs(c)) ctx.w.set(s.name, g.input(s.name, s.shape));
  positionsInGraph(ctx, am, posIds);
  const E = ctx.w.get("model.embed_tokens.weight")!;
  const flat = o.reshape(g, ids, [ctx.N]);
  let h = o.scale(g, o.gather(g, E, flat), Math.fround(Math.sqrt(c.hiddenSize))); // [N,H]
  const attend = cachedAttend(c, g, past);
  for (let i = 0; i < c.numLayers; i++) h = layer(ctx, h, i, attend);
  logitsOut(ctx, h);
  g.externalize(externalWeights.placements, externalWeights.location);
  return g.toBytes();
}

/** Tokenizer and generation files copied beside the model when the source has them. */
export const WEB_SIDE_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "generation_config.json", "chat_template.jinja"];

/** Writes the named fp32 weights one after another into `file`; their placements for Graph.externalize. */
function writeData(file: string, names: string[], weights: Map<string, Float32Array>): Placements {
  const placements = new Map<string, { offset: number; length: number }>();
  const fd = fs.openSync(file, "w");
  try {
    let offset = 0;
    for (const name of names) {
      const w = weights.get(name);
      if (!w) throw new RangeError(`Cannot export: the model has no tensor "${name}"`);
      fs.writeSync(fd, new Uint8Array(w.buffer, w.byteOffset, w.byteLength));
      placements.set(name, { offset, length: w.byteLength });
      offset += w.byteLength;
    }
  } finally {
    fs.closeSync(fd);
  }
  return { location: path.basename(file), placements };
}

/** The ONNX files of the export, relative to its folder. */
export function webOnnxFiles(c: GemmaConfig): string[] {
  const graphs = c.generation === 4 ? ["embed_tokens", "decoder_model_merged"] : ["model"];
  return graphs.flatMap((n) => [`onnx/${n}.onnx`, `onnx/${n}.onnx_data`]);
}

/**
 * config.json as transformers.js reads it: the source's own, plus `transformers.js_config` (the
 * external-data chunk count per graph, the dtype that picks the unsuffixed files). Gemma 4 is
 * written as the "gemma4" wrapper (Gemma4ForConditionalGeneration, the text config under
 * text_config, no vision or audio config): transformers.js builds Gemma 4's text path only from it.
 */
function webConfig(c: GemmaConfig): Record<string, unknown> {
  const jsConfig = { dtype: "fp32", use_external_data_format: Object.fromEntries(webOnnxFiles(c).filter((f) => f.endsWith(".onnx")).map((f) => [path.basename(f), 1])) };
  if (c.generation !== 4) {
    const raw = { ...c.raw };
    delete raw["transformers.js_config"];
    return { ...raw, torch_dtype: "float32", "transformers.js_config": jsConfig };
  }
  const text: Record<string, unknown> = { ...textConfig(c), model_type: "gemma4_text", torch_dtype: "float32" };
  delete text["transformers.js_config"];
  const top: Record<string, unknown> = {
    architectures: ["Gemma4ForConditionalGeneration"],
    model_type: "gemma4",
    text_config: text,
    torch_dtype: "float32",
    "transformers.js_config": jsConfig,
  };
  for (const k of ["bos_token_id", "eos_token_id", "pad_token_id", "tie_word_embeddings"]) if (text[k] !== undefined || c.raw[k] !== undefined) top[k] = c.raw[k] ?? text[k];
  return top;
}

/**
 * Writes the graphs and their external data under `out`/onnx/, config.json and the tokenizer files
 * from `sourceDir`. `weights` are fp32 by HF name (the merged model).
 */
export function writeWebExport(c: GemmaConfig, weights: Map<string, Float32Array>, sourceDir: string, out: string): string[] {
  const refusal = webExportRefusal(c);
  if (refusal) throw new RangeError(`Cannot export: ${refusal}`);
  const dir = path.join(out, "onnx");
  fs.mkdirSync(dir, { recursive: true });
  const names = paramSpecs(c).map((s) => s.name);
  if (c.generation === 4) {
    const embedNames = ["model.embed_tokens.weight", ...(c.ple ? [PLE_TABLE] : [])];
    const embed = writeData(path.join(dir, "embed_tokens.onnx_data"), embedNames, weights);
    fs.writeFileSync(path.join(dir, "embed_tokens.onnx"), buildEmbedGraph(c, embed));
    const dec = writeData(path.join(dir, "decoder_model_merged.onnx_data"), names.filter((n) => n !== PLE_TABLE), weights);
    fs.writeFileSync(path.join(dir, "decoder_model_merged.onnx"), buildDecoderMergedGraph(c, dec));
  } else {
    const data = writeData(path.join(dir, "model.onnx_data"), names, weights);
    fs.writeFileSync(path.join(dir, "model.onnx"), buildWebGraph(c, data));
  }
  fs.writeFileSync(path.join(out, "config.json"), JSON.stringify(webConfig(c), null, 2) + "\n");
  for (const n of WEB_SIDE_FILES) if (fs.existsSync(path.join(sourceDir, n))) fs.copyFileSync(path.join(sourceDir, n), path.join(out, n));
  return ["config.json", ...webOnnxFiles(c), ...WEB_SIDE_FILES.filter((n) => fs.existsSync(path.join(out, n)))];
}
