/**
 * Timing of one training (or forward-only, or decoding) step of a random-init model of a given
 * shape, built in memory. The `bench` verb (cli/bench.ts) prints the result as one JSON line.
 */
import type { Device } from "./device.ts";
import * as fs from "node:fs";
import * as os from "node:os";
import { heapRetention, MMAP_THRESHOLD } from "./malloc.ts";
import { type GemmaConfig, normalizeConfig } from "./gemma/config.ts";
import { countParams, paramSpecs } from "./gemma/params.ts";
import { rng } from "./lora.ts";
import { defaultActivations, TrainEngine } from "./train_engine.ts";
import { collectGarbage } from "./gc.ts";
import { LORA_TARGETS } from "../config/training.ts";
import { generateIds, Generator } from "./generate.ts";
import { AdamW } from "./optim.ts";
import { presetConfig } from "./init_model.ts";
import { type BasePrecision, quantize } from "./quant/blocks.ts";
import type { FrozenTensor } from "./quant/blocks.ts";
import { EmbeddingTable } from "./quant/table.ts";
import { baseBytes, type FrozenModel } from "./quant/base.ts";
import type { EngineModel } from "./train_engine.ts";

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

/** The real-size shapes notes/PERF.md tabulates (`bench --preset`): [preset, layers kept]. */
export const REAL_SIZE_PRESETS: [string, number | undefined][] = [
  ["gemma-3-270m", undefined],
  ["gemma-3-1b", undefined],
  ["gemma-2-2b", undefined],
  ["gemma-2-9b", 8],
  ["gemma-4-e2b", undefined],
];

export interface BenchOptions {
  method: BenchMethod;
  /** The frozen base's precision (LoRA, forward, generate): fp32, or bf16 / int8 / int4 (engine/quant). */
  basePrecision?: BasePrecision;
  /** The body's activations (TrainEngineOptions.activations); default the engine's. */
  activations?: "save" | "recompute" | "layer";
  /** AdamW's moments: float32 (default, torch.optim.AdamW's) or blockwise 8-bit (engine/optim8.ts). */
  optimizer?: "adamw" | "adamw-8bit";
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

/** Uniform values of standard deviation `std` (initializer_range 0.02, the real checkpoints' scale). */
function fillRandom(a: Float32Array, next: () => number, std = 0.02): Float32Array {
  const w = std * Math.sqrt(12);
  for (let i = 0; i < a.length; i++) a[i] = (next() - 0.5) * w;
  return a;
}

/**
 * A random table [rows, cols] straight into bf16 bits, a block at a time (no whole float32 copy).
 * `inFile`: written to a temporary file instead and read from it by rows, as a bf16 checkpoint's
 * tables are (engine/quant/base.ts loadFrozen); the file is unlinked once open.
 */
function randomBf16Table(rows: number, cols: number, next: () => number, inFile = false): EmbeddingTable {
  const total = rows * cols;
  const bits = inFile ? null : new Uint16Array(total);
  const file = inFile ? Deno.makeTempFileSync({ prefix: "gemma-tuner-bench-table-" }) : "";
  const fd = inFile ? fs.openSync(file, "w") : -1;
  const block = new Float32Array(1 << 20), u = new Uint32Array(block.buffer), out = new Uint16Array(block.length);
  try {
    for (let at = 0; at < total; at += block.length) {
      const n = Math.min(block.length, total - at);
      fillRandom(block.subarray(0, n), next);
      // Round to nearest even, as floatToBf16 (engine/safetensors.ts); no NaNs here.
      const dst = bits ? bits.subarray(at, at + n) : out.subarray(0, n);
      for (let i = 0; i < n; i++) dst[i] = (u[i] + 0x7fff + ((u[i] >>> 16) & 1)) >>> 16;
      if (!bits) fs.writeSync(fd, new Uint8Array(dst.buffer, 0, n * 2));
    }
  } finally {
    if (inFile) fs.closeSync(fd);
  }
  if (bits) return EmbeddingTable.fromBf16(bits, rows, cols);
  const t = EmbeddingTable.fromFile(file, 0, rows, cols);
  fs.unlinkSync(file);
  return t;
}

/**
 * A random-init model of the config in the given base precision: float32 throughout for fp32 (and
 * full fine-tuning), else each projection quantized right after it is made and the tables made in
 * bf16, so the peak is the frozen base plus one float32 projection (engine/quant/base.ts).
 */
export function benchModel(config: GemmaConfig, precision: BasePrecision, seed = 1): EngineModel {
  const next = rng(seed);
  const weights = new Map<string, Float32Array>();
  const linears = new Map<string, FrozenTensor>();
  let embedding: EmbeddingTable | null = null, ple: EmbeddingTable | undefined;
  for (const s of paramSpecs(config)) {
    const n = s.shape.reduce((x, y) => x * y, 1);
    // Gemma 4 norms, layer scalars and router scales are multipliers (1); Gemma 1–3 norms offsets (0).
    if (s.kind === "buffer" || s.kind === "norm") weights.set(s.name, new Float32Array(n).fill(s.kind === "buffer" || config.normOffset === 0 ? 1 : 0));
    else if (precision === "fp32" || s.kind === "expert") weights.set(s.name, fillRandom(new Float32Array(n), next));
    else if (s.kind === "embedding") {
      // Both tables in a file, read by rows and chunks, as a bf16 checkpoint's are (engine/quant/base.ts).
      const main = s.name === "model.embed_tokens.weight";
      const t = randomBf16Table(s.shape[0], s.shape[1], next, true);
      if (main) embedding = t;
      else ple = t;
    } else {
      linears.set(s.name, quantize(fillRandom(new Float32Array(n), next), s.shape, precision));
      // The float32 projection is garbage now; V8 would otherwise keep many of them (GBs at 1b) until it collects.
      collectGarbage();
    }
  }
  if (precision === "fp32") return { config, weights };
  const frozen: FrozenModel = { config, weights, base: { precision, linears, embedding: embedding!, ...(ple ? { ple } : {}) } };
  return frozen;
}

/** Runs the benchmark; returns the JSON object the verb prints. */
export async function bench(shape: BenchShape, o: BenchOptions): Promise<Record<string, unknown>> {
  const config = benchConfig(shape);
  const method = o.method;
  const precision = o.basePrecision ?? "fp32";
  if (method === "full" && precision !== "fp32") {
    throw new RangeError(`bench: full fine-tuning trains every weight in float32; --base-precision ${precision} works with lora, forward and generate`);
  }
  const next = rng(2);
  const t0 = performance.now();
  const model = benchModel(config, precision);
  const loadMs = performance.now() - t0;
  const buildPeakMb = peakRssMb();
  const weightBytes = model.base ? baseBytes(model.base) : [...model.weights.values()].reduce((a, w) => a + w.byteLength, 0);
  const common = {
    cpu: hostCpu(),
    // main.ts fixes glibc's mmap threshold (engine/malloc.ts); null where it did not, which changes the peaks.
    malloc_mmap_threshold: heapRetention()?.limited ? MMAP_THRESHOLD : null,
    preset: shape.preset ?? null,
    base_precision: precision,
    layers: config.numLayers,
    vocab: config.vocabSize,
    weight_mb: Math.round(weightBytes / 2 ** 20),
    build_ms: Math.round(loadMs),
    build_peak_rss_mb: Math.round(buildPeakMb),
  };
  const B = o.batch, T = o.seq;
  if (method === "generate") {
    const tg = performance.now();
    const gen = new Generator(model, { threads: o.threads, device: o.device });
    const prompt = Array.from({ length: 16 }, () => 2 + Math.floor(next() * 1000));
    const newTokens = Math.max(8, o.steps * 8);
    // A first pass builds the graph (and, for int8/int4, prepacks the blocks); the timed pass decodes from a fresh cache.
    await generateIds(gen, prompt, { temperature: 0, maxNewTokens: 4, stopIds: [] });
    const firstPassMs = performance.now() - tg;
    const r = await generateIds(gen, prompt, { temperature: 0, maxNewTokens: newTokens, stopIds: [] });
    gen.release();
    return {
      method,
      device: o.device ?? "cpu",
      ...common,
      prompt_tokens: prompt.length,
      new_tokens: r.ids.length,
      decode_tokens_per_second: r.tokensPerSecond,
      first_pass_ms: Math.round(firstPassMs),
      greedy_ids: r.ids.slice(0, 8),
      peak_rss_mb: peakRssMb(),
      parameters: countParams(config),
    };
  }
  const engine = await TrainEngine.create({
    model,
    method: method === "full" ? "full" : "lora",
    activations: o.activations,
    lora: { r: o.rank, alpha: 16, dropout: 0, rslora: false, targets: [...LORA_TARGETS] },
    threads: o.threads,
    device: o.device,
    seed: 1,
  });
  // A training step as the trainer runs it (and as PyTorch's is measured, scripts/torch_baseline.py):
  // forward, backward and the AdamW update, with the optimizer's moments in memory.
  const moments = o.optimizer === "adamw-8bit" ? "8bit" : "fp32";
  const optimizer = method === "forward" ? null : new AdamW(engine.trainable, { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, moments });
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
    // Progress on stderr (stdout keeps the one JSON line): a long shape's first step is known even if a later one is cut short.
    console.error(JSON.stringify({ bench_step: s, ms: Math.round(ms), peak_rss_mb: Math.round(peakRssMb()) }));
    if (s === 0) firstMs = ms;
    else times.push(ms);
  }
  times.sort((a, b) => a - b);
  // --steps 0 times the first step alone (a peak-memory run of a large shape).
  const stepMs = times.length ? times[Math.floor(times.length / 2)] : firstMs;
  const params = countParams(config);
  const trainable = [...engine.trainable.values()].reduce((a, t) => a + t.data.length, 0);
  engine.release();
  optimizer?.close();
  // 2 FLOPs per weight per token forward, ×3 with the backward (LoRA skips weight gradients: ×2).
  const mult = method === "forward" ? 2 : method === "full" ? 6 : 4;
  return {
    method,
    device: o.device ?? "cpu",
    ...common,
    activations: o.activations ?? (method === "forward" ? null : defaultActivations(method === "full" ? "full" : "lora", config)),
    batch: B,
    seq: T,
    tokens_per_second: (B * T) / (stepMs / 1000),
    step_ms: stepMs,
    first_step_ms: firstMs,
    peak_rss_mb: peakRssMb(),
    flops_per_token: mult * params,
    parameters: params,
    trainable_parameters: method === "forward" ? 0 : trainable,
    labelled_fraction: o.labelled,
    optimizer_included: method !== "forward",
    optimizer: method === "forward" ? null : (o.optimizer ?? "adamw"),
  };
}

/**
 * The host's processor: /proc/cpuinfo's model name with its family and model numbers (Linux), else
 * node:os's model string. Two hosts that both say "AMD EPYC" can differ 2× in float32 throughput (notes/PERF.md
 * "Full fine-tuning's step on a Zen 4 host"), so every bench result names it.
 */
export function hostCpu(cpuinfo: string | null = readCpuinfo()): string {
  const field = (name: string) => cpuinfo?.match(new RegExp(`^${name}\\s*:\\s*(.+)$`, "m"))?.[1].trim();
  const name = field("model name") ?? os.cpus()[0]?.model ?? "unknown";
  const family = field("cpu family"), model = field("model");
  return family && model ? `${name} (family ${family}, model ${model})` : name;
}

function readCpuinfo(): string | null {
  try {
    return fs.readFileSync("/proc/cpuinfo", "utf8");
  } catch {
    return null;
  }
}
