/**
 * `gemma-tuner bench`: one training (or forward-only) step of a random-init model of a given shape,
 * built in memory, timed over a few steps. Prints one JSON line.
 */
import * as fs from "node:fs";
import { flagHelp, parseFlags, UsageError } from "../config/cli.ts";
import { normalizeConfig } from "./gemma/config.ts";
import { countParams, paramSpecs } from "./gemma/params.ts";
import { rng } from "./lora.ts";
import { TrainEngine } from "./train_engine.ts";
import { LORA_TARGETS } from "../config/training.ts";
import { Generator, generateIds } from "./generate.ts";
import { AdamW } from "./optim.ts";

const FLAGS = {
  generation: { kind: "number" as const, help: "Gemma generation", default: 3 },
  hidden: { kind: "number" as const, help: "hidden size", default: 640 },
  heads: { kind: "number" as const, help: "attention heads", default: 4 },
  "kv-heads": { kind: "number" as const, help: "key/value heads", default: 1 },
  "head-dim": { kind: "number" as const, help: "head dim", default: 256 },
  intermediate: { kind: "number" as const, help: "MLP size", default: 2048 },
  vocab: { kind: "number" as const, help: "vocabulary size", default: 262144 },
  layers: { kind: "number" as const, help: "layers", default: 2 },
  method: { kind: "string" as const, help: "lora | full | forward | generate", default: "lora" },
  batch: { kind: "number" as const, help: "batch size", default: 4 },
  seq: { kind: "number" as const, help: "sequence length", default: 128 },
  steps: { kind: "number" as const, help: "timed steps (after one warm-up)", default: 5 },
  rank: { kind: "number" as const, help: "LoRA rank", default: 8 },
  labelled: { kind: "number" as const, help: "fraction of each row that is labelled (the rest is a masked prompt)", default: 1 },
  threads: { kind: "number" as const, help: "intra-op threads" },
  help: { kind: "boolean" as const, help: "show this help" },
};

export function peakRssMb(): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync("/proc/self/status", "utf8"));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

export async function benchCommand(args: string[]): Promise<number> {
  const f = parseFlags("bench", args, FLAGS);
  if (f.help) {
    console.log(flagHelp("gemma-tuner bench [--generation 3] [--hidden 640 …] [--method lora|full|forward] [--batch 4] [--seq 128] [--steps 5]", FLAGS));
    return 0;
  }
  const method = String(f.method);
  if (!["lora", "full", "forward", "generate"].includes(method)) throw new UsageError(`bench: --method must be lora, full, forward or generate, got "${method}"`);
  const gen = f.generation as number;
  const modelType = { 1: "gemma", 2: "gemma2", 3: "gemma3_text" }[gen];
  if (!modelType) throw new UsageError(`bench: --generation must be 1, 2 or 3`);
  const config = normalizeConfig({
    model_type: modelType,
    hidden_size: f.hidden,
    num_attention_heads: f.heads,
    num_key_value_heads: f["kv-heads"],
    head_dim: f["head-dim"],
    intermediate_size: f.intermediate,
    vocab_size: f.vocab,
    num_hidden_layers: f.layers,
    query_pre_attn_scalar: f["head-dim"],
    sliding_window: 512,
    attn_logit_softcapping: gen === 2 ? 50 : null,
    final_logit_softcapping: gen === 2 ? 30 : null,
  }, "bench flags");
  const next = rng(1);
  const weights = new Map<string, Float32Array>();
  for (const s of paramSpecs(config)) {
    const a = new Float32Array(s.shape.reduce((x, y) => x * y, 1));
    if (s.kind !== "norm") for (let i = 0; i < a.length; i++) a[i] = (next() - 0.5) * 0.04;
    weights.set(s.name, a);
  }
  const B = f.batch as number, T = f.seq as number;
  if (method === "generate") {
    const gen = new Generator({ config, weights }, { threads: f.threads as number | undefined });
    const prompt = Array.from({ length: 16 }, () => 2 + Math.floor(next() * 1000));
    const newTokens = Math.max(8, (f.steps as number) * 8);
    // A first pass builds the graphs; the timed pass decodes from a fresh cache.
    await generateIds(gen, prompt, { temperature: 0, maxNewTokens: 4, stopIds: [] });
    const r = await generateIds(gen, prompt, { temperature: 0, maxNewTokens: newTokens, stopIds: [] });
    console.log(JSON.stringify({
      method,
      layers: config.numLayers,
      vocab: config.vocabSize,
      prompt_tokens: prompt.length,
      new_tokens: r.ids.length,
      decode_tokens_per_second: r.tokensPerSecond,
      peak_rss_mb: peakRssMb(),
      parameters: countParams(config),
    }));
    gen.release();
    return 0;
  }
  const engine = await TrainEngine.create({
    model: { config, weights },
    method: method === "full" ? "full" : "lora",
    lora: { r: f.rank as number, alpha: 16, dropout: 0, rslora: false, targets: [...LORA_TARGETS] },
    threads: f.threads as number | undefined,
    seed: 1,
  });
  // A training step as the trainer runs it (and as PyTorch's is measured, scripts/torch_baseline.py):
  // forward, backward and the AdamW update, with the optimizer's moments in memory.
  const optimizer = method === "forward" ? null : new AdamW(engine.trainable, { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 });
  const ids = Int32Array.from({ length: B * T }, () => Math.floor(next() * config.vocabSize));
  const labels = ids.slice();
  // --labelled < 1 masks the start of each row as a prompt (−100), as chat fine-tuning does.
  const masked = Math.round(T * (1 - (f.labelled as number)));
  for (let r = 0; r < B; r++) labels.fill(-100, r * T, r * T + masked);
  const batch = { inputIds: ids, labels, batchSize: B, seqLen: T };
  const times: number[] = [];
  const steps = f.steps as number;
  let firstMs = 0;
  for (let s = 0; s <= steps; s++) {
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
  // 2 FLOPs per weight per token forward, ×3 with the backward (LoRA skips weight gradients: ×2).
  const mult = method === "forward" ? 2 : method === "full" ? 6 : 4;
  console.log(JSON.stringify({
    method,
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
    labelled_fraction: f.labelled,
    optimizer_included: method !== "forward",
  }));
  engine.release();
  return 0;
}
