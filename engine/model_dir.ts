/**
 * A Hugging Face model directory: config.json, safetensors (single or sharded), tokenizer files.
 * loadModel reads every tensor as float32 by its HF name; describeModel reads headers only.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { type GemmaConfig, normalizeConfig } from "./gemma/config.ts";
import { countParams, paramSpecs } from "./gemma/params.ts";
import { listCheckpoint, readTensorF32 } from "./safetensors.ts";

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
  layers: number;
  hiddenSize: number;
  vocabSize: number;
  parameters: number;
  storedDtype: string;
  sizeBytes: number;
  hasTokenizer: boolean;
  config: GemmaConfig;
}

export function readConfig(dir: string): GemmaConfig {
  const file = path.join(dir, "config.json");
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new RangeError(`Model directory "${dir}" does not exist`);
  if (!fs.existsSync(file)) throw new RangeError(`"${dir}" is not a Hugging Face model directory: config.json is missing`);
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e) {
    throw new SyntaxError(`Cannot read "${file}": ${(e as Error).message}`);
  }
  return normalizeConfig(raw, file);
}

/** Header-only description (fast: reads no tensor data). */
export function describeModel(dir: string): ModelInfo {
  const config = readConfig(dir);
  const entries = listCheckpoint(dir);
  const dtypes = new Set([...entries.values()].map((e) => e.dtype));
  const files = new Set([...entries.values()].map((e) => e.file));
  let sizeBytes = 0;
  for (const f of files) sizeBytes += fs.statSync(f).size;
  return {
    dir,
    generation: config.generation,
    modelType: config.modelType,
    layers: config.numLayers,
    hiddenSize: config.hiddenSize,
    vocabSize: config.vocabSize,
    parameters: countParams(config),
    storedDtype: [...dtypes].join("+"),
    sizeBytes,
    hasTokenizer: fs.existsSync(path.join(dir, "tokenizer.json")) && fs.existsSync(path.join(dir, "tokenizer_config.json")),
    config,
  };
}

/** Loads every weight as float32; checks names and shapes against the config. */
export function loadModel(dir: string): Promise<LoadedModel> {
  const config = readConfig(dir);
  const entries = listCheckpoint(dir);
  const weights = new Map<string, Float32Array>();
  const shapes = new Map<string, number[]>();
  const dtypes = new Set<string>();
  // Some exports prefix the text model differently; only plain `model.` is supported.
  for (const s of paramSpecs(config)) {
    const e = entries.get(s.name);
    if (!e) throw new RangeError(`Cannot load "${dir}": tensor "${s.name}" is missing from the checkpoint`);
    if (e.shape.join(",") !== s.shape.join(",")) {
      throw new RangeError(`Cannot load "${dir}": tensor "${s.name}" has shape [${e.shape}], config.json implies [${s.shape}]`);
    }
    weights.set(s.name, readTensorF32(e));
    shapes.set(s.name, s.shape);
    dtypes.add(e.dtype);
  }
  const lmHead = entries.get("lm_head.weight");
  if (lmHead) {
    // Tied in every released Gemma; an untied head would silently differ, so refuse it.
    const a = readTensorF32(lmHead), b = weights.get("model.embed_tokens.weight")!;
    for (let i = 0; i < a.length; i += Math.max(1, Math.floor(a.length / 1000))) {
      if (a[i] !== b[i]) throw new RangeError(`Cannot load "${dir}": lm_head.weight differs from the embeddings (untied heads are not supported)`);
    }
  }
  let sizeBytes = 0;
  for (const f of new Set([...entries.values()].map((e) => e.file))) sizeBytes += fs.statSync(f).size;
  return Promise.resolve({ dir, config, weights, shapes, storedDtype: [...dtypes].join("+"), sizeBytes });
}
