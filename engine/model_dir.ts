/**
 * A Hugging Face model directory: config.json, safetensors (single or sharded), tokenizer files.
 * loadModel reads the text decoder's tensors as float32 by internal name ("model.…"); in a
 * multimodal checkpoint the vision/audio towers are never read (docs/GEMMA4.md §Multimodal).
 * describeModel reads headers only.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { type GemmaConfig, normalizeConfig } from "./gemma/config.ts";
import { checkpointName, countParams, paramSpecs } from "./gemma/params.ts";
import { listCheckpoint, readTensorF32, type TensorEntry } from "./safetensors.ts";

export interface LoadedModel {
  dir: string;
  config: GemmaConfig;
  weights: Map<string, Float32Array>;
  shapes: Map<string, number[]>;
  storedDtype: string;
  sizeBytes: number;
}

export interface ModelInfo {
  dir: string;
  generation: 1 | 2 | 3 | 4;
  modelType: string;
  architecture: string;
  multimodal: boolean;
  layers: number;
  hiddenSize: number;
  vocabSize: number;
  /** Parameters of the text decoder (what is trained). */
  parameters: number;
  /** Tensors outside the text decoder (vision/audio towers, projectors), kept as they are. */
  otherTensors: number;
  otherBytes: number;
  storedDtype: string;
  sizeBytes: number;
  hasTokenizer: boolean;
  /** What the app can and cannot do with this model, in words (shown by the create view and the CLI). */
  notes: string[];
  config: GemmaConfig;
}

export function readConfig(dir: string): GemmaConfig {
  const file = path.join(dir, "config.json");
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch {
    throw new RangeError(`Model directory "${dir}" does not exist`);
  }
  if (st.isFile()) throw new RangeError(`"${dir}" is a file, not a model directory: give the folder that holds config.json and the *.safetensors files`);
  if (!st.isDirectory()) throw new RangeError(`"${dir}" is not a model directory (not a regular folder)`);
  if (!fs.existsSync(file)) throw new RangeError(`"${dir}" is not a Hugging Face model directory: config.json is missing`);
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e) {
    throw new SyntaxError(`Cannot read "${file}": ${(e as Error).message}`);
  }
  return normalizeConfig(raw, file);
}

const FLOAT = new Set(["F32", "BF16", "F16", "F64"]);
const QUANT_NAME = /\.(qweight|qzeros|scales|weight_scale|weight_zero_point|absmax|quant_map|SCB)$/;

/**
 * The config with its checkpoint prefix found, and every text tensor's entry checked against it
 * (names, shapes, float dtype) from the headers alone.
 */
export function resolveCheckpoint(dir: string): { config: GemmaConfig; entries: Map<string, TensorEntry>; text: Map<string, TensorEntry> } {
  const base = readConfig(dir);
  const entries = listCheckpoint(dir);
  for (const name of entries.keys()) {
    if (QUANT_NAME.test(name)) {
      throw new RangeError(`Cannot load "${dir}": tensor "${name}" is part of a quantized checkpoint; only unquantized F32/BF16/F16 safetensors are supported`);
    }
  }
  const candidates = base.multimodal ? ["model.language_model.", "language_model.model."] : ["model."];
  const prefix = candidates.find((p) => entries.has(`${p}embed_tokens.weight`));
  if (!prefix) {
    throw new RangeError(
      `Cannot load "${dir}": no text decoder found (expected ${candidates.map((p) => `"${p}embed_tokens.weight"`).join(" or ")}; config.json says ${base.architecture})`,
    );
  }
  const config = { ...base, textPrefix: prefix };
  const text = new Map<string, TensorEntry>();
  for (const s of paramSpecs(config)) {
    const name = checkpointName(config, s.name);
    const e = entries.get(name);
    if (!e) throw new RangeError(`Cannot load "${dir}": tensor "${name}" is missing from the checkpoint`);
    if (e.shape.join(",") !== s.shape.join(",")) {
      throw new RangeError(`Cannot load "${dir}": tensor "${name}" has shape [${e.shape}], config.json implies [${s.shape}]`);
    }
    if (!FLOAT.has(e.dtype)) throw new RangeError(`Cannot load "${dir}": tensor "${name}" is ${e.dtype} (quantized?); only F32/BF16/F16 weights are supported`);
    text.set(s.name, e);
  }
  return { config, entries, text };
}

/** Where a checkpoint keeps its text decoder (for adapter and checkpoint names); headers only. */
export function checkpointLayout(dir: string): { textPrefix: string; multimodal: boolean } {
  // No base to look at (tests that write checkpoints alone): the CausalLM layout, as before.
  if (!fs.existsSync(path.join(dir, "config.json"))) return { textPrefix: "model.", multimodal: false };
  const { config } = resolveCheckpoint(dir);
  return { textPrefix: config.textPrefix, multimodal: config.multimodal };
}

/** A checkpoint tensor name → the internal "model.…" name (either multimodal layout). */
export function internalName(name: string): string {
  return name.replace(/^(model\.language_model\.|language_model\.model\.)/, "model.");
}

/** Names of the checkpoint's tied LM head, if it stores one. */
function lmHeadEntry(entries: Map<string, TensorEntry>): TensorEntry | undefined {
  return entries.get("lm_head.weight") ?? entries.get("language_model.lm_head.weight");
}

export function modelNotes(c: GemmaConfig): string[] {
  const notes: string[] = [];
  if (c.multimodal) notes.push(`Multimodal checkpoint (${c.architecture}): the text decoder is trained; vision/audio tensors are kept byte for byte in merged exports.`);
  if (c.moe) {
    notes.push(
      `Mixture of experts (${c.moe.experts} experts, top ${c.moe.topK}): LoRA trains attention and the dense MLP with the experts frozen; full fine-tuning is not supported for this model.`,
    );
  }
  if (c.layers.some((l, i) => l.kvSource !== i)) notes.push("KV-shared layers reuse earlier layers' keys and values: LoRA never targets their k_proj/v_proj.");
  return notes;
}

/** Header-only description (fast: reads no tensor data). */
export function describeModel(dir: string): ModelInfo {
  const { config, entries, text } = resolveCheckpoint(dir);
  const textNames = new Set([...text.values()].map((e) => e.name));
  const dtypes = new Set([...text.values()].map((e) => e.dtype));
  const files = new Set([...entries.values()].map((e) => e.file));
  let sizeBytes = 0, otherTensors = 0, otherBytes = 0;
  for (const f of files) sizeBytes += fs.statSync(f).size;
  for (const e of entries.values()) {
    if (textNames.has(e.name) || e.name.startsWith(config.textPrefix) || e.name.endsWith("lm_head.weight")) continue;
    otherTensors++;
    otherBytes += e.byteLength;
  }
  return {
    dir,
    generation: config.generation,
    modelType: config.modelType,
    architecture: config.architecture,
    multimodal: config.multimodal,
    layers: config.numLayers,
    hiddenSize: config.hiddenSize,
    vocabSize: config.vocabSize,
    parameters: countParams(config),
    otherTensors,
    otherBytes,
    storedDtype: [...dtypes].join("+"),
    sizeBytes,
    hasTokenizer: fs.existsSync(path.join(dir, "tokenizer.json")) && fs.existsSync(path.join(dir, "tokenizer_config.json")),
    notes: modelNotes(config),
    config,
  };
}

/** Loads the text decoder's weights as float32 (by internal name); checks names and shapes against the config. */
export function loadModel(dir: string): Promise<LoadedModel> {
  const { config, entries, text } = resolveCheckpoint(dir);
  const weights = new Map<string, Float32Array>();
  const shapes = new Map<string, number[]>();
  const dtypes = new Set<string>();
  for (const [name, e] of text) {
    weights.set(name, readTensorF32(e));
    shapes.set(name, e.shape);
    dtypes.add(e.dtype);
  }
  const lmHead = lmHeadEntry(entries);
  if (lmHead) {
    // Tied in every released Gemma; an untied head would silently differ, so refuse it.
    const a = readTensorF32(lmHead), b = weights.get("model.embed_tokens.weight")!;
    for (let i = 0; i < a.length; i += Math.max(1, Math.floor(a.length / 1000))) {
      if (a[i] !== b[i]) throw new RangeError(`Cannot load "${dir}": ${lmHead.name} differs from the embeddings (untied heads are not supported)`);
    }
  }
  let sizeBytes = 0;
  for (const f of new Set([...entries.values()].map((e) => e.file))) sizeBytes += fs.statSync(f).size;
  return Promise.resolve({ dir, config, weights, shapes, storedDtype: [...dtypes].join("+"), sizeBytes });
}

/**
 * "demo" → the built-in demo model (created on first use, engine/init_model.ts); anything else must
 * be a valid model directory. Returns the absolute directory.
 */
export async function resolveModelPath(model: string, dataDir: string): Promise<string> {
  if (model === "demo") return await (await import("./init_model.ts")).ensureDemoModel(dataDir);
  const dir = path.resolve(model);
  readConfig(dir);
  return dir;
}
