/**
 * A frozen base model in a chosen precision (docs/QUANT.md): the projections as FrozenTensors, the
 * tied embedding as an EmbeddingTable in bf16, and the norms (tiny) in float32. Loading goes tensor
 * by tensor, so no whole float32 copy of the model ever exists: a bf16 checkpoint's bits are kept as
 * read; int8/int4 quantize each tensor right after reading it and drop its float32 form.
 */
import type { GemmaConfig } from "../gemma/config.ts";
import { collectAfterDropping } from "../gc.ts";
import { paramSpecs } from "../gemma/params.ts";
import { describeModel, type LoadedModel, loadModel, resolveCheckpoint } from "../model_dir.ts";
import { type PrecisionChoice, resolveBasePrecision } from "./policy.ts";
import { readTensorF32, type TensorEntry } from "../safetensors.ts";
import * as fs from "node:fs";
import { type BasePrecision, frozenBytes, type FrozenTensor, quantize, toBf16Bits } from "./blocks.ts";
import { EmbeddingTable } from "./table.ts";

export interface FrozenBase {
  precision: BasePrecision;
  /** Projection weights by HF name. */
  linears: Map<string, FrozenTensor>;
  embedding: EmbeddingTable;
  /** Gemma 4's per-layer embedding table [vocab, L·Dp], also kept in bf16 and read by rows. */
  ple?: EmbeddingTable;
}

/** Gemma 4's per-layer embedding table (engine/gemma/staged.ts PLE_TABLE). */
const PLE_TABLE = "model.embed_tokens_per_layer.weight";

/** A model the engines take with a low-precision base: `weights` then holds only the norms. */
export interface FrozenModel {
  config: GemmaConfig;
  weights: Map<string, Float32Array>;
  base: FrozenBase;
}

/**
 * Converts float32 weights to a frozen base, deleting each float32 tensor from `weights` as soon as
 * it is converted (the map is left with the norms), so the peak is one tensor above the result.
 */
export function freezeWeights(config: GemmaConfig, weights: Map<string, Float32Array>, precision: Exclude<BasePrecision, "fp32">): FrozenModel {
  const linears = new Map<string, FrozenTensor>();
  let embedding: EmbeddingTable | null = null, ple: EmbeddingTable | undefined;
  for (const s of paramSpecs(config)) {
    const w = weights.get(s.name);
    if (!w) throw new RangeError(`Model has no tensor "${s.name}"`);
    // Norms, buffers and MoE experts (3-d, frozen, fed as they are) stay float32 in `weights`.
    if (s.kind === "norm" || s.kind === "buffer" || s.kind === "expert") continue;
    if (s.name === PLE_TABLE) ple = EmbeddingTable.fromBf16(toBf16Bits(w), s.shape[0], s.shape[1]);
    else if (s.kind === "embedding") embedding = EmbeddingTable.fromBf16(toBf16Bits(w), config.vocabSize, config.hiddenSize);
    else linears.set(s.name, quantize(w, s.shape, precision));
    weights.delete(s.name);
  }
  return { config, weights, base: { precision, linears, embedding: embedding!, ...(ple ? { ple } : {}) } };
}

/** Reads a bf16 tensor's bits as stored (no float32 in between). */
function readBf16Bits(e: TensorEntry): Uint16Array {
  const fd = fs.openSync(e.file, "r");
  try {
    const out = new Uint16Array(e.byteLength / 2);
    const got = fs.readSync(fd, new Uint8Array(out.buffer), 0, e.byteLength, e.dataOffset);
    if (got !== e.byteLength) throw new RangeError(`Cannot load "${e.file}": tensor "${e.name}" is truncated`);
    return out;
  } finally {
    fs.closeSync(fd);
  }
}

/** Loads a model directory straight into a frozen base (names and shapes checked as loadModel does). */
export function loadFrozen(dir: string, precision: Exclude<BasePrecision, "fp32">): FrozenModel {
  // Names, shapes and dtypes checked (and a multimodal checkpoint's text prefix found) as loadModel does.
  const { config, entries, text } = resolveCheckpoint(dir);
  const weights = new Map<string, Float32Array>();
  const linears = new Map<string, FrozenTensor>();
  let embedding: EmbeddingTable | null = null, ple: EmbeddingTable | undefined;
  for (const s of paramSpecs(config)) {
    const e = text.get(s.name)!;
    if (s.kind === "norm" || s.kind === "buffer" || s.kind === "expert") weights.set(s.name, readTensorF32(e));
    // A bf16 per-layer table stays in the checkpoint, read by rows (4.7 GB for E2B that is never resident).
    else if (s.name === PLE_TABLE && e.dtype === "BF16") ple = EmbeddingTable.fromFile(e.file, e.dataOffset, s.shape[0], s.shape[1]);
    else if (s.name === PLE_TABLE) ple = EmbeddingTable.fromBf16(toBf16Bits(readTensorF32(e)), s.shape[0], s.shape[1]);
    // So does a bf16 tied embedding (the head reads it in chunks each step, from the page cache).
    else if (s.kind === "embedding" && e.dtype === "BF16") embedding = EmbeddingTable.fromFile(e.file, e.dataOffset, config.vocabSize, config.hiddenSize);
    else if (s.kind === "embedding") embedding = EmbeddingTable.fromBf16(toBf16Bits(readTensorF32(e)), config.vocabSize, config.hiddenSize);
    else if (precision === "bf16" && e.dtype === "BF16") linears.set(s.name, { kind: "bf16", shape: s.shape as [number, number], bits: readBf16Bits(e) });
    else {
      const w = readTensorF32(e);
      linears.set(s.name, quantize(w, s.shape, precision));
      // The float32 read is garbage: collect once 128 MB of it piled up (a collection per projection cost
      // 3.7 s of gemma-3-270m's 7.7 s load; a 9B projection alone is 205 MB and still gets one each).
      collectAfterDropping(w.byteLength, 128 << 20);
    }
  }
  const head = [...entries.values()].find((e) => e.name.endsWith("lm_head.weight"));
  if (head) {
    // Tied in every released Gemma; an untied head would silently differ, so refuse it (as loadModel does).
    const a = head.dtype === "BF16" ? readBf16Bits(head) : toBf16Bits(readTensorF32(head));
    for (let i = 0; i < a.length; i += Math.max(1, Math.floor(a.length / 1000))) {
      if (a[i] !== embedding!.bitsAt(i)) throw new RangeError(`Cannot load "${dir}": lm_head.weight differs from the embeddings (untied heads are not supported)`);
    }
  }
  return { config, weights, base: { precision, linears, embedding: embedding!, ...(ple ? { ple } : {}) } };
}

/** Bytes the frozen base holds (projections + table; the norms are negligible). */
export function baseBytes(b: FrozenBase): number {
  let n = b.embedding.bytes + (b.ple?.bytes ?? 0);
  for (const t of b.linears.values()) n += frozenBytes(t);
  return n;
}

/**
 * The model a training run loads (trainer/worker.ts): float32 as loadModel gives it, or, for LoRA
 * with a low base precision (the configured one, else the default policy, engine/quant/policy.ts),
 * the frozen base straight from the checkpoint. `precision` says which and why, for the run log.
 */
export async function loadForTraining(
  dir: string,
  cfg: { method: "lora" | "full"; basePrecision?: BasePrecision },
): Promise<LoadedModel & { base?: FrozenBase; precision: PrecisionChoice }> {
  const info = describeModel(dir);
  const precision = resolveBasePrecision(info.config, cfg);
  if (precision.precision === "fp32") return { ...(await loadModel(dir)), precision };
  const frozen = loadFrozen(dir, precision.precision);
  const shapes = new Map(paramSpecs(frozen.config).map((s) => [s.name, s.shape]));
  return { dir, ...frozen, shapes, storedDtype: info.storedDtype, sizeBytes: info.sizeBytes, precision };
}
