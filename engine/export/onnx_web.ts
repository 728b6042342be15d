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
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { Graph, type Value } from "../onnx/builder.ts";
import * as o from "../onnx/ops.ts";
import type { GemmaConfig, LayerType } from "../gemma/config.ts";
import { type Attend, attentionWeights, Ctx, expandKv, layer, rmsNorm, softcap, typeHeadDim } from "../gemma/model.ts";
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

/** Why this export cannot represent the model, or null (Gemma 4's shared KV and per-layer inputs are not built yet). */
export function webExportRefusal(c: GemmaConfig): string | null {
  if (c.ple || c.layers.some((l, i) => l.kvSource !== i) || c.modelType === "gemma4_text") {
    return `the browser ONNX export supports Gemma 1, 2 and 3; this is a ${c.modelType} model (per-layer inputs / shared KV are not in the export graph yet). Use --merged or --gguf`;
  }
  return null;
}

export function buildWebGraph(c: GemmaConfig, externalWeights: { location: string; placements: Map<string, { offset: number; length: number }> }): Uint8Array {
  const refusal = webExportRefusal(c);
  if (refusal) throw new RangeError(`Cannot export: ${refusal}`);
  const g = new Graph("float32");
  const { batch: B, seq: T, past: PAST } = WEB_DIMS;
  const ctx = new Ctx(g, c, { batch: B, seq: T, positions: 1, method: "forward" });
  const ids = g.input("input_ids", [B, T], "int64");
  const am = g.input("attention_mask", [B, TOTAL], "int64");
  const posIds = g.input("position_ids", [B, T], "int64");
  const past: { k: Value; v: Value }[] = [];
  c.layers.forEach((l, i) => {
    const shape = [B, l.kvHeads, PAST, l.headDim];
    past.push({ k: g.input(`past_key_values.${i}.key`, shape), v: g.input(`past_key_values.${i}.value`, shape) });
  });
  for (const s of paramSpecs(c)) ctx.w.set(s.name, g.input(s.name, s.shape));

  // Positions and masks, once per layer type.
  const start = positionStart(c);
  const pos = o.cast(g, start ? o.sub(g, posIds, g.ints([start])) : posIds, "float32");
  const total = g.dimValue(TOTAL)!, seq = g.dimValue(T)!;
  const zero = g.ints([0]), one = g.ints([1]);
  const scalar = (v: Value) => o.reshape(g, v, []);
  const kIdx = node1(g, "Range", [scalar(zero), scalar(total), scalar(one)], [TOTAL]); // key index 0…total−1
  const pastLen = node1(g, "Sub", [total, seq], [1]);
  const qIdx = node1(g, "Range", [scalar(pastLen), scalar(total), scalar(one)], [T]); // query index past…total−1
  const diff = node1(g, "Sub", [o.reshape(g, qIdx, [T, 1]), o.reshape(g, kIdx, [1, TOTAL])], [T, TOTAL]); // [T,total]
  const keep = o.reshape(g, node1(g, "Equal", [am, g.ints([1])], am.shape, "bool"), [B, 1, 1, TOTAL]);
  for (const type of new Set(c.layerTypes)) {
    const { cos, sin } = ropeInGraph(g, c, pos, type);
    ctx.tables.set(`rope_cos_${type}`, cos);
    ctx.tables.set(`rope_sin_${type}`, sin);
    ctx.tables.set(`mask_${type}`, maskInGraph(g, c, keep, diff, type));
  }

  const cached: Attend = (cx, q, k, v, i) => {
    const kAll = o.concat(g, [past[i].k, k], 2); // [B,nKv,total,D]
    const vAll = o.concat(g, [past[i].v, v], 2);
    g.output(kAll, `present.${i}.key`);
    g.output(vAll, `present.${i}.value`);
    const probs = attentionWeights(cx, q, expandKv(cx, kAll), cx.table(`mask_${c.layerTypes[i]}`)); // [B,nH,T,total]
    return o.matmul(g, probs, expandKv(cx, vAll));
  };

  const E = ctx.w.get("model.embed_tokens.weight")!;
  const flat = o.reshape(g, ids, [ctx.N]);
  let h = o.scale(g, o.gather(g, E, flat), Math.fround(Math.sqrt(c.hiddenSize))); // [N,H]
  for (let i = 0; i < c.numLayers; i++) h = layer(ctx, h, i, cached);
  h = rmsNorm(g, h, ctx.w.get("model.norm.weight")!, c.rmsNormEps, c.normOffset);
  let logits = o.gemm(g, h, E, { transB: true }); // [N,V]
  if (c.finalSoftcap) logits = softcap(g, logits, c.finalSoftcap);
  g.output(o.reshape(g, logits, [B, T, c.vocabSize]), "logits");
  g.externalize(externalWeights.placements, externalWeights.location);
  return g.toBytes();
}

/** Tokenizer and generation files copied beside the model when the source has them. */
export const WEB_SIDE_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "generation_config.json", "chat_template.jinja"];

/**
 * Writes `out`/onnx/model.onnx + model.onnx_data, config.json (with `transformers.js_config`) and
 * the tokenizer files from `sourceDir`. `weights` are fp32 by HF name (the merged model).
 */
export function writeWebExport(c: GemmaConfig, weights: Map<string, Float32Array>, sourceDir: string, out: string): string[] {
  fs.mkdirSync(path.join(out, "onnx"), { recursive: true });
  const placements = new Map<string, { offset: number; length: number }>();
  const fd = fs.openSync(path.join(out, "onnx", "model.onnx_data"), "w");
  try {
    let offset = 0;
    for (const s of paramSpecs(c)) {
      const w = weights.get(s.name);
      if (!w) throw new RangeError(`Cannot export: the model has no tensor "${s.name}"`);
      fs.writeSync(fd, new Uint8Array(w.buffer, w.byteOffset, w.byteLength));
      placements.set(s.name, { offset, length: w.byteLength });
      offset += w.byteLength;
    }
  } finally {
    fs.closeSync(fd);
  }
  fs.writeFileSync(path.join(out, "onnx", "model.onnx"), buildWebGraph(c, { location: "model.onnx_data", placements }));
  const raw = { ...c.raw };
  delete raw["transformers.js_config"];
  const config = {
    ...raw,
    torch_dtype: "float32",
    // transformers.js reads the external-data chunk count per file, and the dtype to pick onnx/model.onnx.
    "transformers.js_config": { dtype: "fp32", use_external_data_format: { "model.onnx": 1 } },
  };
  fs.writeFileSync(path.join(out, "config.json"), JSON.stringify(config, null, 2) + "\n");
  for (const n of WEB_SIDE_FILES) if (fs.existsSync(path.join(sourceDir, n))) fs.copyFileSync(path.join(sourceDir, n), path.join(out, n));
  return ["config.json", "onnx/model.onnx", "onnx/model.onnx_data", ...WEB_SIDE_FILES.filter((n) => fs.existsSync(path.join(out, n)))];
}
