/**
 * Timing of one training (or forward-only, or decoding) step of a random-init model of a given
 * shape, built in memory. The `bench` verb (cli/bench.ts) prints the result as one JSON line.
 */
import type { Device } from "./device.ts";
import * as fs from "node:fs";
import { type GemmaConfig, normalizeConfig } from "./gemma/config.ts";
import { countParams, paramSpecs } from "./gemma/params.ts";
import { rng } from "./lora.ts";
import { TrainEngine } from "./train_engine.ts";
import { LORA_TARGETS } from "../config/training.ts";
import { Generator, generateIds } from "./generate.ts";
import { AdamW } from "./optim.ts";
import { presetConfig } from "./init_model.ts";

export type BenchMethod = "lora" | "full" | "forward" | "generate";
export const BENCH_METHODS: BenchMethod[] = ["lora", "full", "forward", "generate"];

export interface BenchShape {
  /** A real architecture from config/models.ts (e.g. gemma-4-e2b); then only `layers` of the rest applies. */
  preset?: string;
  generation: 1 | 2 | 3;
  hidden: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  intermediate: number;
  vocab: number;
  layers: number;
}

export interface BenchOptions {
  method: BenchMethod;
  batch: number;
  seq: number;
  /** Timed steps, after one warm-up. */
  steps: number;
  rank: number;
  /** Fraction of each row that is labelled (the rest is a masked prompt). */
  labelled: number;
  threads?: number;
  device?: Device;
}

export function peakRssMb(): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync("/proc/self/status", "utf8"));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

function benchConfig(s: BenchShape): GemmaConfig {
  if (s.preset) return presetConfig(s.preset, s.layers).config;
  const modelType = { 1: "gemma", 2: "gemma2", 3: "gemma3_text" }[s.generation];
  if (!modelType) throw new RangeError(`bench: generation must be 1, 2 or 3, got ${s.generation}`);
  return normalizeConfig({
    model_type: modelType,
    hidden_size: s.hidden,
    num_attention_heads: s.heads,
    num_key_value_heads: s.kvHeads,
    head_dim: s.headDim,
    intermediate_size: s.intermediate,
    vocab_size: s.vocab,
    num_hidden_layers: s.layers,
    query_pre_attn_scalar: s.headDim,
    sliding_window: 512,
    attn_logit_softcapping: s.generation === 2 ? 50 : null,
    final_logit_softcapping: s.generation === 2 ? 30 : null,
  }, "bench flags");
}

/** Runs the benchmark; returns the JSON object the verb prints. */
export async function bench(shape: BenchShape, o: BenchOptions): Promise<Record<string, unknown>> {
  const config = benchConfig(shape);
  const method = o.method;
  const next = rng(1);
  const weights = new Map<string, Float32Array>();
  for (const s of paramSpecs(config)) {
    const a = new Float32Array(s.shape.reduce((x, y) => x * y, 1));
    // Gemma 4 norms, layer scalars and router scales are multipliers (1); Gemma 1–3 norms offsets (0).
    if (s.kind === "buffer" || (s.kind === "norm" && config.normOffset === 0)) a.fill(1);
    else if (s.kind !== "norm") for (let i = 0; i < a.length; i++) a[i] = (next() - 0.5) * 0.04;
    weights.set(s.name, a);
  }
  const B = o.batch, T = o.seq;
  if (method === "generate") {
    const gen = new Generator({ config, weights }, { threads: o.threads, device: o.device });
    const prompt = Array.from({ length: 16 }, () => 2 + Math.floor(next() * 1000));
    const newTokens = Math.max(8, o.steps * 8);
    // A first pass builds the graphs; the timed pass decodes from a fresh cache.
    await generateIds(gen, prompt, { temperature: 0, maxNewTokens: 4, stopIds: [] });
    const r = await generateIds(gen, prompt, { temperature: 0, maxNewTokens: newTokens, stopIds: [] });
    gen.release();
    return {
      method,
      device: o.device ?? "cpu",
      layers: config.numLayers,
      vocab: config.vocabSize,
      prompt_tokens: prompt.length,
      new_tokens: r.ids.length,
      decode_tokens_per_second: r.tokensPerSecond,
      peak_rss_mb: peakRssMb(),
      parameters: countParams(config),
    };
  }
  const engine = await TrainEngine.create({
    model: { config, weights },
    method: method === "full" ? "full" : "lora",
    lora: { r: o.rank, alpha: 16, dropout: 0, rslora: false, targets: [...LORA_TARGETS] },
    threads: o.threads,
    device: o.device,
    seed: 1,
  });
  // A training step as the trainer runs it (and as PyTorch's is measured, scripts/torch_baseline.py):
  // forward, backward and the AdamW update, with the optimizer's moments in memory.
  const optimizer = method === "forward" ? null : new AdamW(engine.trainable, { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 });
  const ids = Int32Array.from({ length: B * T }, () => Math.floor(next() * config.vocabSize));
  const labels = ids.slice();
  // labelled < 1 masks the start of each row as a prompt (−100), as chat fine-tuning does.
  const masked = Math.round(T * (1 - o.labelled));
  for (let r = 0; r < B; r++) labels.fill(-100, r * T, r * T + masked);
  const batch = { inputIds: ids, labels, batchSize: B, seqLen: T };
  const times: number[] = [];
  let firstMs = 0;
  for (let s = 0; s <= o.steps; s++) {
    const t0 = performance.now();
    if (method === "forward") await engine.evaluate(batch);
    else {
      engine.zeroGrads();
      const r = await engine.forwardBackward(batch);
      optimizer!.update(engine.grads, 1e-5, 1 / r.tokens);
    }
    const ms = performance.now() - t0;
    if (s === 0) firstMs = ms;
    else times.push(ms);
  }
  times.sort((a, b) => a - b);
  const stepMs = times[Math.floor(times.length / 2)];
  const params = countParams(config);
  const trainable = [...engine.trainable.values()].reduce((a, t) => a + t.data.length, 0);
  engine.release();
  // 2 FLOPs per weight per token forward, ×3 with the backward (LoRA skips weight gradients: ×2).
  const mult = method === "forward" ? 2 : method === "full" ? 6 : 4;
  return {
    method,
    device: o.device ?? "cpu",
    batch: B,
    seq: T,
    layers: config.numLayers,
    vocab: config.vocabSize,
    tokens_per_second: (B * T) / (stepMs / 1000),
    step_ms: stepMs,
    first_step_ms: firstMs,
    peak_rss_mb: peakRssMb(),
    flops_per_token: mult * params,
    parameters: params,
    trainable_parameters: method === "forward" ? 0 : trainable,
    labelled_fraction: o.labelled,
    optimizer_included: method !== "forward",
  };
}
