/**
 * Test checkpoints for export checks: tiny random Gemmas whose layers, not the tied embedding's
 * self-similarity, decide the next token. With zero (identity) norms the residual stream carries
 * the input embedding and greedy decoding repeats the last token; random per-channel norms and
 * post-norms of 2 (as trained Gemmas have large ones) make the layers count and the greedy tokens vary.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { initModel } from "../init_model.ts";
import { loadModel } from "../model_dir.ts";
import { rng } from "../lora.ts";
import { paramSpecs } from "../gemma/params.ts";
import { writeSafetensors } from "../safetensors.ts";

export interface TinyOptions {
  preset: string;
  out: string;
  seed?: number;
  /** config.json overrides (e.g. a wider hidden size for k-quant blocks). */
  config?: Record<string, unknown>;
}

export async function realisticTiny(o: TinyOptions): Promise<string> {
  const dir = await initModel({ preset: o.preset, out: o.out, seed: o.seed ?? 7, std: 0.1, embedStd: 0.3 });
  if (o.config) {
    const file = path.join(dir, "config.json");
    fs.writeFileSync(file, JSON.stringify({ ...JSON.parse(fs.readFileSync(file, "utf8")), ...o.config }, null, 2));
    // New shapes need new weights: re-initialise at those shapes.
    const tmp = await initModelAt(dir, o.seed ?? 7);
    fs.renameSync(tmp, path.join(dir, "model.safetensors"));
  }
  const m = await loadModel(dir);
  const next = rng((o.seed ?? 7) + 92);
  for (const [name, w] of m.weights) {
    // Gemma 4's other multipliers (layer_scalar, the router's scales) stay 1 in init-model: vary them
    // too, so an exporter that drops one is seen.
    const multiplier = /(layer_scalar|router\.scale|router\.per_expert_scale)$/.test(name);
    if (!name.endsWith("norm.weight") && !multiplier) continue;
    // Norms as stored: 0 ± 0.5, post-norms 1 ± 0.5 (for Gemma 1–3 multipliers of 1 and 2; for Gemma 4's
    // plain weights smaller ones, with which llama.cpp's f32 NLLs stay well inside 5e-3 while the
    // greedy tokens vary); the router's scales 1 ± 0.5, layer_scalar 1.5 ± 0.5 (a stream that grows
    // keeps the logits large, so the soft-cap counts).
    const offset = /layer_scalar$/.test(name) ? 1.5 : multiplier || /post_/.test(name) ? 1 : 0;
    for (let i = 0; i < w.length; i++) w[i] = offset + (next() - 0.5);
  }
  writeSafetensors(path.join(dir, "model.safetensors"), paramSpecs(m.config).map((s) => ({ name: s.name, dtype: "F32" as const, shape: s.shape, data: m.weights.get(s.name)! })));
  return dir;
}

/** Fresh normal weights (std 0.1, embedding 0.3) at the shapes of dir's config.json. */
async function initModelAt(dir: string, seed: number): Promise<string> {
  const { readConfig } = await import("../model_dir.ts");
  const c = readConfig(dir);
  const next = rng(seed);
  const gauss = () => Math.sqrt(-2 * Math.log(Math.max(next(), 1e-12))) * Math.cos(2 * Math.PI * next());
  const file = path.join(dir, "model.fresh.safetensors");
  writeSafetensors(
    file,
    paramSpecs(c).map((s) => {
      const data = new Float32Array(s.shape.reduce((a, b) => a * b, 1));
      if (s.kind !== "norm") { for (let i = 0; i < data.length; i++) data[i] = gauss() * (s.kind === "embedding" ? 0.3 : 0.1); }
      return { name: s.name, dtype: "F32" as const, shape: s.shape, data };
    }),
  );
  return file;
}
