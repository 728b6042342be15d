/**
 * The engine as the server sees it: the one module routes import from engine/. Everything here loads
 * without ONNX Runtime; what needs it (generation) is imported on first use, so `serve` starts
 * without loading the native module (tested in tests/serve_lazy_test.ts).
 */
import type { GenerateOptions, GenerateResult, Generator } from "./generate.ts";
import type { RunSource } from "./export.ts";

export { describeModel, type ModelInfo, resolveModelPath } from "./model_dir.ts";
export { estimateMemory } from "./gemma/params.ts";
// The run's estimate follows its base precision and per-layer recompute (docs/QUANT.md "Memory").
export { estimateRunMemory } from "./quant/policy.ts";
export { normalizeConfig } from "./gemma/config.ts";
export { inspectDataset, invalidRows, tokenizeExample } from "./data/mod.ts";
export { loadTokenizer, type Tokenizer } from "./tokenizer.ts";
export { type ChatMessage, chatPromptIds } from "./chat_format.ts";
export { type ChatHandle, type ChatResult, ContextLengthError, ModelCache, type ModelEntry } from "./model_cache.ts";
export type { Generator };
export { type DeviceStatus, probeDevices } from "./devices.ts";
export type { Device } from "./device.ts";
export type { RunSource } from "./export.ts";

/** engine/generate.ts `generateIds`, imported when first called. */
export async function generateIds(gen: Generator, prompt: number[], opts: GenerateOptions = {}): Promise<GenerateResult> {
  return (await import("./generate.ts")).generateIds(gen, prompt, opts);
}

// Export builds on the model code, which reaches ONNX Runtime (frozen-weight feeds), so it is lazy too.

/** engine/export.ts `exportAdapter`: the PEFT adapter files of a run model into `out`. */
export async function exportAdapter(src: RunSource, out: string): Promise<string[]> {
  return (await import("./export.ts")).exportAdapter(src, out);
}

/** engine/export.ts `exportMerged`: a Hugging Face checkpoint with the adapter merged in. */
export async function exportMerged(src: RunSource, out: string): Promise<void> {
  return (await import("./export.ts")).exportMerged(src, out);
}

/** engine/export.ts `zipFiles`: a store-only zip archive. */
export async function zipFiles(files: { name: string; data: Uint8Array }[]): Promise<Uint8Array> {
  return (await import("./export.ts")).zipFiles(files);
}

// Job bundles for a cluster (engine/handoff/): pure TypeScript, no ONNX Runtime.
export { buildBundle, type BundleOptions } from "./handoff/bundle.ts";
export { type HandoffConfig, LAUNCHERS, mapAxolotl, mapTrl, parseHandoffConfig, slug, STRATEGIES, TARGETS } from "./handoff/mapping.ts";
export { readConfig } from "./model_dir.ts";
