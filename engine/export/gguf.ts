/**
 * GGUF export (docs/GGUF.md): a Gemma checkpoint, with its LoRA adapter merged in, as one GGUF
 * file llama.cpp and Ollama load; or the adapter alone as a GGUF LoRA file that llama.cpp applies
 * to the base model's GGUF. The architecture specifics live in gguf_arch.ts, the encodings in
 * gguf_quant.ts, the vocabulary in gguf_vocab.ts.
 */
import * as path from "node:path";
import type { GemmaConfig } from "../gemma/config.ts";
import { type ParamSpec, paramSpecs } from "../gemma/params.ts";
import type { NamedTensor } from "../lora.ts";
import { ARCHS, GgufUnsupportedError } from "./gguf_arch.ts";
import { type MetaValue, type TensorInfo, writeGguf } from "./gguf_file.ts";
import { byteLength, decode, encode, GGML, type GgmlType, LAYOUT } from "./gguf_quant.ts";
import { buildVocab } from "./gguf_vocab.ts";

export const QUANTS = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_k_m"] as const;
export type Quant = typeof QUANTS[number];

/** llama_ftype of each file kind (general.file_type). */
const FILE_TYPE: Record<Quant, number> = { f32: 0, f16: 1, q4_0: 2, q8_0: 7, q4_k_m: 15, bf16: 32 };

/** llama.cpp's Q4_K_M rule for which attn_v / ffn_down layers get more bits. */
function moreBits(i: number, n: number): boolean {
  return i < n / 8 || i >= (7 * n) / 8 || (i - Math.floor(n / 8)) % 3 === 2;
}

/** A block type if the row length allows it, else the next one that does (as llama.cpp's quantizer falls back). */
function fit(type: GgmlType, rowLength: number): GgmlType {
  const chain: Record<number, GgmlType> = { [GGML.Q4_K]: GGML.Q5_0, [GGML.Q6_K]: GGML.Q8_0, [GGML.Q5_0]: GGML.F16, [GGML.Q8_0]: GGML.F16, [GGML.Q4_0]: GGML.F16 };
  let t = type;
  while (rowLength % LAYOUT[t].block) t = chain[t];
  return t;
}

/** The encoding of one tensor in a file of kind `quant` (norm vectors always stay f32). */
export function tensorType(quant: Quant, gguf: string, shape: number[], numLayers: number): GgmlType {
  if (shape.length === 1 || quant === "f32") return GGML.F32;
  if (quant === "f16") return GGML.F16;
  if (quant === "bf16") return GGML.BF16;
  const row = shape[shape.length - 1];
  // The tied embedding is also the output layer: llama.cpp's recipes give it 6 bits.
  if (gguf === "token_embd.weight") return fit(quant === "q8_0" ? GGML.Q8_0 : GGML.Q6_K, row);
  if (quant === "q8_0") return fit(GGML.Q8_0, row);
  if (quant === "q4_0") return fit(GGML.Q4_0, row);
  const layer = Number(/^blk\.(\d+)\./.exec(gguf)?.[1] ?? 0);
  const six = (gguf.endsWith("attn_v.weight") || gguf.endsWith("ffn_down.weight")) && moreBits(layer, numLayers);
  return fit(six ? GGML.Q6_K : GGML.Q4_K, row);
}

export interface GgufResult {
  file: string;
  bytes: number;
  quant: Quant;
  warnings: string[];
  /** Count of tensors per encoding, e.g. { q4_K: 9, q6_K: 4, f32: 9 }. */
  types: Record<string, number>;
}

export interface GgufModelInput {
  /** The model directory (for tokenizer files); weights may be replaced by merged ones. */
  dir: string;
  config: GemmaConfig;
  weights: Map<string, Float32Array>;
  name: string;
  /** Hub id of the base model when known (general.source.huggingface.repository). */
  hubId?: string;
}

/** Writes `<out>/<name>-<quant>.gguf`. Refuses (GgufUnsupportedError) what llama.cpp would compute differently. */
export function writeModelGguf(
  m: GgufModelInput,
  out: string,
  quant: Quant,
  o: { onProgress?: (done: number, total: number) => void; stored?: Map<string, Float32Array> } = {},
): GgufResult {
  const c = m.config;
  const row = ARCHS[c.modelType];
  if (!row) throw new GgufUnsupportedError(`No GGUF architecture for model_type "${c.modelType}"`);
  const warnings = row.check(c);
  const vocab = buildVocab(m.dir, c.vocabSize, { bos: c.bosTokenId, eos: c.eosTokenIds[0] ?? 1, pad: c.padTokenId }, c.generation === 4 ? "gemma4" : "llama");
  if (vocab.dropped.length) warnings.push(`${vocab.dropped.length} tokenizer token(s) past the ${c.vocabSize} embedding rows left out: ${vocab.dropped.slice(0, 3).join(", ")}`);
  const specs = paramSpecs(c);
  const extras = row.extraTensors?.(c) ?? [];
  const planned = (spec: ParamSpec | null, name: string, shape: number[]) => {
    const type = tensorType(quant, name, shape, c.numLayers);
    const n = shape.reduce((a, b) => a * b, 1);
    return { spec, info: { name, ne: [...shape].reverse(), type, byteLength: byteLength(type, n) } as TensorInfo };
  };
  const plan = [
    ...specs.map((s) => planned(s, row.tensorName(s.name)!, row.shapeOf?.(c, s.name, s.shape) ?? s.shape)),
    ...extras.map((e) => planned(null, e.name, e.shape)),
  ];
  const types: Record<string, number> = {};
  for (const p of plan) types[LAYOUT[p.info.type as GgmlType].name] = (types[LAYOUT[p.info.type as GgmlType].name] ?? 0) + 1;
  const meta: [string, MetaValue][] = [
    ["general.architecture", { str: row.arch }],
    ["general.type", { str: "model" }],
    ["general.name", { str: m.name }],
    ["general.file_type", { u32: FILE_TYPE[quant] }],
    ...(quant.startsWith("q") ? [["general.quantization_version", { u32: 2 }] as [string, MetaValue]] : []),
    ...(m.hubId ? [["general.source.huggingface.repository", { str: m.hubId }] as [string, MetaValue]] : []),
    ...row.meta(c),
    ...vocab.meta,
  ];
  const file = path.join(out, `${m.name}-${quant}.gguf`);
  const bytes = writeGguf(file, meta, plan.map((p) => p.info), (i) => {
    const { spec, info } = plan[i];
    if (!spec) return encode(info.type as GgmlType, extras[i - specs.length].data);
    let w = m.weights.get(spec.name);
    if (!w) throw new RangeError(`The model has no tensor "${spec.name}"`);
    const hf = w;
    if (row.normPlusOne && spec.kind === "norm") w = w.map((x) => x + 1);
    if (row.dataOf) w = row.dataOf(c, spec.name, w);
    const bytes = encode(info.type as GgmlType, w);
    // The weights as the file holds them (HF convention), for a same-weights comparison.
    o.stored?.set(spec.name, info.type === GGML.F32 ? hf : decode(info.type as GgmlType, bytes, hf.length));
    return bytes;
  }, o.onProgress);
  return { file, bytes, quant, warnings, types };
}

/**
 * The adapter alone as a GGUF LoRA (general.type "adapter"): per adapted linear `<name>.lora_a`
 * (ne [in, r], PEFT lora_A) and `<name>.lora_b` (ne [r, out], PEFT lora_B). llama.cpp scales by
 * alpha/r, so rsLoRA's alpha/sqrt(r) is written as alpha·sqrt(r).
 */
export function writeLoraGguf(
  c: GemmaConfig,
  adapter: { lora: { r: number; alpha: number; rslora: boolean }; tensors: Map<string, NamedTensor> },
  file: string,
  name: string,
): { file: string; bytes: number } {
  const row = ARCHS[c.modelType];
  if (!row) throw new GgufUnsupportedError(`No GGUF architecture for model_type "${c.modelType}"`);
  const list = [...adapter.tensors].sort(([a], [b]) => (a < b ? -1 : 1));
  const infos: TensorInfo[] = [], datas: Float32Array[] = [];
  for (const [peft, t] of list) {
    const m = /^base_model\.model\.(.+)\.lora_([AB])\.weight$/.exec(peft);
    if (!m) throw new RangeError(`Adapter tensor "${peft}" is not a PEFT LoRA weight`);
    const base = row.tensorName(`${m[1]}.weight`)!;
    infos.push({ name: `${base}.lora_${m[2].toLowerCase()}`, ne: [...t.shape].reverse(), type: GGML.F32, byteLength: t.data.length * 4 });
    datas.push(t.data);
  }
  const { r, alpha, rslora } = adapter.lora;
  const meta: [string, MetaValue][] = [
    ["general.architecture", { str: row.arch }],
    ["general.type", { str: "adapter" }],
    ["general.name", { str: name }],
    ["adapter.type", { str: "lora" }],
    ["adapter.lora.alpha", { f32: rslora ? alpha * Math.sqrt(r) : alpha }],
  ];
  const bytes = writeGguf(file, meta, infos, (i) => encode(GGML.F32, datas[i]));
  return { file, bytes };
}
