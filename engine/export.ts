/**
 * Export a run's model, or any local Hugging Face Gemma directory with an optional adapter: the PEFT
 * adapter as it is, a merged full checkpoint in Hugging Face layout (loads in transformers), or the
 * browser-ready ONNX folder transformers.js loads (verified in it). GGUF is engine/export/run.ts.
 * Also a store-only zip. The verb is cli/export.ts; formats and checks: docs/EXPORTS.md.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { loadModel, readConfig, resolveCheckpoint, resolveModelPath } from "./model_dir.ts";
import type { GemmaConfig } from "./gemma/config.ts";
import { hubIdOf } from "./hub_id.ts";
import { readAdapter } from "./peft.ts";
import { loraScaling, mergeLora } from "./lora.ts";
import { checkpointName, paramSpecs } from "./gemma/params.ts";
import { readTensorBytes, type TensorToWrite, writeSafetensors } from "./safetensors.ts";
import { webExportRefusal, writeWebExport } from "./export/onnx_web.ts";
import { type OnnxVerification, verifyOnnxExport, writeOnnxModelCard } from "./export/onnx_probe.ts";
import { loadTokenizer } from "./tokenizer.ts";

export interface RunSource {
  runDir: string;
  /** "final" or "checkpoint-<step>"; default: final, else the newest checkpoint. */
  checkpoint?: string;
  dataDir: string;
}

/** Any local Hugging Face Gemma directory (or "demo"), optionally with a PEFT adapter to merge in. */
export interface ModelSource {
  model: string;
  adapter?: string;
  /** Where the demo model lives. */
  dataDir: string;
}

export type ExportSource = RunSource | ModelSource;

export interface Located {
  /** What is exported: the adapter folder (lora) or the whole model's folder (full). */
  dir: string;
  method: "lora" | "full";
  /** The base model as the run or --model names it ("demo", a directory). */
  baseModel: string;
  /** A name for the exported files: the run's name, else the model folder's (letters, digits, . _ -). */
  name: string;
  /** The base model's Hub id when known (engine/hub_id.ts). */
  hubId: string | null;
}

const TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "generation_config.json"];
const HUB_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,95}\/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$/;

const fileName = (s: string) => s.replace(/[^A-Za-z0-9._-]+/g, "-").replace(/^[-.]+|-+$/g, "").slice(0, 80) || "model";

/** The adapter's own record of its base, when that is a Hub id rather than a local path. */
function adapterHubId(adapterDir: string): string | null {
  try {
    const b = String(JSON.parse(fs.readFileSync(path.join(adapterDir, "adapter_config.json"), "utf8")).base_model_name_or_path ?? "");
    return HUB_ID.test(b) && !fs.existsSync(b) ? b : hubIdOf(b);
  } catch {
    return null;
  }
}

/** Where the weights to export are, for a run's checkpoint or a model directory (+ adapter). */
export function locate(src: ExportSource): Located {
  if ("model" in src) {
    if (!src.model) throw new RangeError("--model is empty: give a Hugging Face model directory (config.json, *.safetensors, tokenizer.json) or demo");
    if (src.model !== "demo") readConfig(path.resolve(src.model));
    const base = src.model === "demo" ? "demo" : path.resolve(src.model);
    const baseName = hubIdOf(base)?.split("/")[1] ?? path.basename(base);
    if (!src.adapter) return { dir: base, method: "full", baseModel: base, name: fileName(baseName), hubId: hubIdOf(base) };
    const adapter = path.resolve(src.adapter);
    if (!fs.existsSync(path.join(adapter, "adapter_config.json"))) {
      throw new RangeError(
        `--adapter "${adapter}" is not a PEFT adapter folder (no adapter_config.json); give the folder that holds adapter_config.json and adapter_model.safetensors`,
      );
    }
    return { dir: adapter, method: "lora", baseModel: base, name: fileName(`${baseName}-${path.basename(adapter)}`), hubId: hubIdOf(base) ?? adapterHubId(adapter) };
  }
  let run: { config?: { method?: string; model?: string; name?: string } };
  try {
    run = JSON.parse(fs.readFileSync(path.join(src.runDir, "run.json"), "utf8"));
  } catch {
    throw new RangeError(`"${src.runDir}" is not a run directory (no readable run.json)`);
  }
  const cfg = run.config ?? (run as { method?: string; model?: string; name?: string });
  let name = src.checkpoint;
  if (!name) {
    if (fs.existsSync(path.join(src.runDir, "final"))) name = "final";
    else {
      const cks = fs.existsSync(path.join(src.runDir, "checkpoints")) ? fs.readdirSync(path.join(src.runDir, "checkpoints")).filter((n) => /^checkpoint-\d+$/.test(n)) : [];
      name = cks.sort((a, b) => Number(a.split("-")[1]) - Number(b.split("-")[1])).at(-1);
      if (!name) throw new RangeError(`Run "${src.runDir}" has no final model and no checkpoint to export`);
    }
  }
  if (!/^(final|checkpoint-\d+)$/.test(name)) throw new RangeError(`--checkpoint must be "final" or "checkpoint-<step>", got "${name}"`);
  const dir = name === "final" ? path.join(src.runDir, "final") : path.join(src.runDir, "checkpoints", name);
  if (!fs.existsSync(dir)) throw new RangeError(`Run "${src.runDir}" has no ${name}`);
  const method = cfg.method === "full" ? "full" : "lora";
  const baseModel = String(cfg.model ?? "demo");
  const runName = fileName(String(cfg.name ?? path.basename(src.runDir)));
  return {
    dir,
    method,
    baseModel,
    name: name === "final" ? runName : `${runName}-${name}`,
    hubId: hubIdOf(baseModel) ?? (method === "lora" ? adapterHubId(dir) : null),
  };
}

/** The base model's directory (the demo model is made on first use). */
export async function baseDirOf(l: Located, dataDir: string): Promise<string> {
  return await resolveModelPath(l.baseModel, dataDir);
}

/** The weights to export as one model: the base with the adapter merged in, or the tuned weights themselves. */
export async function mergedWeights(l: Located, baseDir: string): Promise<{ config: GemmaConfig; weights: Map<string, Float32Array>; base?: Map<string, Float32Array> }> {
  if (l.method === "full") {
    const m = await loadModel(l.dir === l.baseModel ? baseDir : l.dir);
    return { config: m.config, weights: m.weights };
  }
  const base = await loadModel(baseDir);
  const a = readAdapter(l.dir);
  return { config: base.config, weights: mergeLora(base.weights, a.tensors, loraScaling(a.lora)), base: base.weights };
}

function copyFiles(from: string, to: string, names: string[]) {
  for (const n of names) if (fs.existsSync(path.join(from, n))) fs.copyFileSync(path.join(from, n), path.join(to, n));
}

function freshDir(out: string) {
  if (fs.existsSync(out) && fs.readdirSync(out).length) throw new RangeError(`Output directory "${out}" is not empty; choose another --out`);
  fs.mkdirSync(out, { recursive: true });
}

/** The PEFT adapter files (LoRA runs, or --model with --adapter); the base is named by its Hub id when known. */
export function exportAdapter(src: ExportSource, out: string): string[] {
  const l = locate(src);
  if (l.method !== "lora") {
    throw new RangeError(
      "model" in src
        ? "--adapter (the adapter export) needs an adapter: give --adapter DIR with --model"
        : "This run fine-tuned every weight; it has no adapter. Use --merged (the model itself)",
    );
  }
  freshDir(out);
  const files = ["adapter_model.safetensors", "adapter_config.json", "README.md"].filter((n) => fs.existsSync(path.join(l.dir, n)));
  copyFiles(l.dir, out, files);
  if (l.hubId) {
    const file = path.join(out, "adapter_config.json");
    const cfg = JSON.parse(fs.readFileSync(file, "utf8"));
    if (cfg.base_model_name_or_path !== l.hubId) fs.writeFileSync(file, JSON.stringify({ ...cfg, base_model_name_or_path: l.hubId }, null, 2) + "\n");
  }
  return files;
}

/** Base + adapter merged (or the fully tuned weights) as a Hugging Face checkpoint. */
export async function exportMerged(src: ExportSource, out: string): Promise<void> {
  const l = locate(src);
  const baseDir = await baseDirOf(l, src.dataDir);
  freshDir(out);
  const text = (await mergedWeights(l, baseDir)).weights;
  writeWholeCheckpoint(baseDir, text, path.join(out, "model.safetensors"));
  const cfg = JSON.parse(fs.readFileSync(path.join(baseDir, "config.json"), "utf8"));
  // The text weights are written as float32; a multimodal config says so for its text part.
  const f32 = (c: Record<string, unknown>) => ({ ...c, torch_dtype: "float32", ...("dtype" in c ? { dtype: "float32" } : {}) });
  const outCfg = cfg.text_config ? { ...cfg, text_config: f32(cfg.text_config) } : f32(cfg);
  fs.writeFileSync(path.join(out, "config.json"), JSON.stringify(outCfg, null, 2) + "\n");
  copyFiles(baseDir, out, TOKENIZER_FILES);
}

/**
 * Every tensor of the base checkpoint, in one file: the text decoder's from `text` (internal names →
 * the checkpoint's names, float32), everything else — vision/audio towers, projectors, the stored
 * k/v of Gemma 4 KV-shared layers — copied byte for byte, one tensor in memory at a time.
 */
export function writeWholeCheckpoint(baseDir: string, text: Map<string, Float32Array>, file: string): void {
  const { config, entries } = resolveCheckpoint(baseDir);
  const ext = new Map(paramSpecs(config).map((s) => [checkpointName(config, s.name), s]));
  const tensors: TensorToWrite[] = [...entries.values()].sort((a, b) => (a.name < b.name ? -1 : 1)).map((e): TensorToWrite => {
    const s = ext.get(e.name);
    if (s) {
      const data = text.get(s.name);
      if (!data) throw new RangeError(`Cannot export: the tuned model has no tensor "${s.name}"`);
      return { name: e.name, dtype: "F32", shape: s.shape, data };
    }
    // A stored tied head follows the (possibly tuned) embedding.
    if (e.name.endsWith("lm_head.weight")) return { name: e.name, dtype: "F32", shape: e.shape, data: text.get("model.embed_tokens.weight")! };
    return { name: e.name, dtype: e.dtype, shape: e.shape, raw: () => readTensorBytes(e) };
  });
  writeSafetensors(file, tensors, { format: "pt" });
}

/**
 * The browser-ready ONNX folder (engine/export/onnx_web.ts: the layout transformers.js loads), then,
 * unless `verify` is false, the probe through transformers.js itself; the result is returned and
 * written into the folder's model card (README.md).
 */
export async function exportOnnx(src: ExportSource, out: string, opts: { verify?: boolean } = {}): Promise<OnnxVerification | null> {
  const merged = fs.mkdtempSync(path.join(path.dirname(path.resolve(out)), ".merge-"));
  fs.rmSync(merged, { recursive: true });
  try {
    await exportMerged(src, merged);
    const m = await loadModel(merged);
    const refusal = webExportRefusal(m.config);
    if (refusal) throw new RangeError(`Cannot export "${"runDir" in src ? src.runDir : src.model}" as ONNX: ${refusal}`);
    freshDir(out);
    writeWebExport(m.config, m.weights, merged, out);
    const v = opts.verify === false ? null : await verifyOnnxExport(out, m, await loadTokenizer(merged));
    writeOnnxModelCard(out, v);
    return v;
  } finally {
    fs.rmSync(merged, { recursive: true, force: true });
  }
}

/** A store-only (uncompressed) zip of files, enough for downloads of adapters and small models. */
export function zipFiles(files: { name: string; data: Uint8Array }[]): Uint8Array {
  const enc = new TextEncoder();
  const parts: Uint8Array[] = [], central: Uint8Array[] = [];
  let offset = 0;
  for (const f of files) {
    const name = enc.encode(f.name);
    const crc = crc32(f.data);
    const local = new Uint8Array(30 + name.length);
    const dv = new DataView(local.buffer);
    dv.setUint32(0, 0x04034b50, true);
    dv.setUint16(4, 20, true);
    dv.setUint32(14, crc, true);
    dv.setUint32(18, f.data.length, true);
    dv.setUint32(22, f.data.length, true);
    dv.setUint16(26, name.length, true);
    local.set(name, 30);
    const cen = new Uint8Array(46 + name.length);
    const cv = new DataView(cen.buffer);
    cv.setUint32(0, 0x02014b50, true);
    cv.setUint16(4, 20, true);
    cv.setUint16(6, 20, true);
    cv.setUint32(16, crc, true);
    cv.setUint32(20, f.data.length, true);
    cv.setUint32(24, f.data.length, true);
    cv.setUint16(28, name.length, true);
    cv.setUint32(42, offset, true);
    cen.set(name, 46);
    parts.push(local, f.data);
    central.push(cen);
    offset += local.length + f.data.length;
  }
  const cenSize = central.reduce((s, c) => s + c.length, 0);
  const end = new Uint8Array(22);
  const ev = new DataView(end.buffer);
  ev.setUint32(0, 0x06054b50, true);
  ev.setUint16(8, files.length, true);
  ev.setUint16(10, files.length, true);
  ev.setUint32(12, cenSize, true);
  ev.setUint32(16, offset, true);
  const out = new Uint8Array(offset + cenSize + 22);
  let p = 0;
  for (const x of [...parts, ...central, end]) {
    out.set(x, p);
    p += x.length;
  }
  return out;
}

let CRC_TABLE: Uint32Array | null = null;
export function crc32(data: Uint8Array): number {
  if (!CRC_TABLE) {
    CRC_TABLE = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      CRC_TABLE[n] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = CRC_TABLE[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
