/**
 * Which base precision a LoRA run uses (docs/QUANT.md "Default policy"), whether a device runs it,
 * and the memory a run needs with it (the create view's estimate).
 *
 * The default is the smallest precision whose token-NLL shift from the float32 base stays within
 * the bound for the model's size. The shifts are measured by engine/quant/quality_test.ts on
 * checkpoints with realistic weight scales; the bounds are the ones that test enforces.
 */
import { type GemmaConfig, layerCheckpointable } from "../gemma/config.ts";
import { countParams, estimateMemory, type MemoryEstimate, paramSpecs } from "../gemma/params.ts";
import { type BasePrecision, bytesPerWeight } from "./blocks.ts";
import type { Device } from "../session.ts";

/** Mean |ΔNLL| per token (nats) from the fp32 base that each precision must stay within (quality_test.ts). */
export const NLL_BOUND = { bf16: 0.02, int8: 0.05, int4: 0.5 } as const;

/**
 * The size from which 4-bit is the default. Measured on the quality test's checkpoint (quality_test.ts,
 * docs/QUANT.md "Bounds"), int4 moves the token NLL by ~0.4 nats, int8 by ~0.03: a cost worth paying
 * only where the model would not fit otherwise. Under 2B parameters (gemma-3-270m, gemma-3-1b: ≤ 4 GB
 * with an int8 base) the default is int8; from 2B on (gemma-2-2b, 9B, 12B) int4, QLoRA's setting.
 */
export const INT4_FROM_PARAMS = 2e9;

export interface PrecisionChoice {
  precision: BasePrecision;
  /** One sentence for the create view and the run log: what was chosen and why. */
  reason: string;
}

/** The default base precision for LoRA on this model (full fine-tuning is always fp32). */
export function defaultBasePrecision(c: GemmaConfig, method: "lora" | "full" = "lora"): PrecisionChoice {
  if (method === "full") return { precision: "fp32", reason: "full fine-tuning trains every weight in float32" };
  const n = countParams(c);
  const size = n >= 1e9 ? `${(n / 1e9).toFixed(1)}B` : `${Math.round(n / 1e6)}M`;
  if (n >= INT4_FROM_PARAMS) {
    return {
      precision: "int4",
      reason: `int4, the smallest base whose measured NLL shift is within bound (≤ ${NLL_BOUND.int4} nats/token) for a model of ${size} parameters (≥ 2B)`,
    };
  }
  return {
    precision: "int8",
    reason:
      `int8, the smallest base whose measured NLL shift is within bound (≤ ${NLL_BOUND.int8} nats/token) for a model of ${size} parameters (under 2B, 4-bit is not the default)`,
  };
}

/** The precision a run uses: the configured one, else the default policy's. */
export function resolveBasePrecision(c: GemmaConfig, cfg: { method: "lora" | "full"; basePrecision?: BasePrecision }): PrecisionChoice {
  if (cfg.basePrecision) return { precision: cfg.basePrecision, reason: `${cfg.basePrecision}, as configured` };
  return defaultBasePrecision(c, cfg.method);
}

export class BasePrecisionError extends RangeError {
  override name = "BasePrecisionError";
}

const probes = new Map<string, Promise<string | null>>();

/**
 * Whether `device` runs the frozen-weight kernels of `precision` (engine/quant/graph.ts): a one-layer
 * graph dequantizing a weight and multiplying by it, run on the device and checked against the CPU
 * result. null when it works, else why not. Cached per process.
 */
export function probeBasePrecision(device: Device, precision: BasePrecision): Promise<string | null> {
  if (device === "cpu" || precision === "fp32") return Promise.resolve(null);
  const key = `${device}:${precision}`;
  let p = probes.get(key);
  if (!p) {
    p = (async () => {
      const { Graph } = await import("../onnx/builder.ts");
      const o = await import("../onnx/ops.ts");
      const { FrozenInputs, frozenFeeds } = await import("./graph.ts");
      const { quantize } = await import("./blocks.ts");
      const { createSession, tensor } = await import("../session.ts");
      const g = new Graph();
      const x = g.input("x", [2, 64]);
      // Both kernels a LoRA step runs: the forward product from the blocks and the dequantized W (dX = dY·W).
      const frozen = new FrozenInputs(g, precision);
      g.output(o.add(g, frozen.matmul(x, "w", [4, 64]), o.gemm(g, x, frozen.weight("w", [4, 64]), { transB: true })), "y");
      const w = Float32Array.from({ length: 256 }, (_, i) => Math.sin(i) * 0.05);
      const feeds = { x: tensor("float32", Float32Array.from({ length: 128 }, (_, i) => Math.cos(i)), [2, 64]), ...frozenFeeds("w", quantize(w, [4, 64], precision)) };
      const results: Float32Array[] = [];
      for (const d of ["cpu", device] as const) {
        try {
          const s = await createSession(g.toBytes(), { device: d });
          results.push((await s.run(feeds)).y.data as Float32Array);
          await s.release();
        } catch (e) {
          return (e as Error).message.split("\n")[0];
        }
      }
      const [a, b] = results;
      for (let i = 0; i < a.length; i++) if (!(Math.abs(a[i] - b[i]) <= 1e-3 * (1 + Math.abs(a[i])))) return "its result differs from the CPU's";
      return null;
    })();
    probes.set(key, p);
  }
  return p;
}

/** Refuses, before any run starts, a precision the device cannot run: naming device, precision and what works. */
export async function checkBasePrecision(device: Device, precision: BasePrecision): Promise<void> {
  const why = await probeBasePrecision(device, precision);
  if (why === null) return;
  const works: BasePrecision[] = [];
  for (const p of ["fp32", "bf16", "int8", "int4"] as const) if ((await probeBasePrecision(device, p)) === null) works.push(p);
  throw new BasePrecisionError(
    `Base precision ${precision} cannot run on device ${device} (${why}); on ${device} use ${works.join(", ") || "none"}, or device cpu, which runs every precision`,
  );
}

/** A frozen LoRA base's bytes at `precision`: projections in blocks, the tables in bf16 unless fp32, the rest fp32. */
function frozenBaseBytes(c: GemmaConfig, precision: BasePrecision): number {
  let bytes = 0;
  for (const s of paramSpecs(c)) {
    const n = s.shape.reduce((a, b) => a * b, 1);
    if (s.kind === "linear") bytes += n * bytesPerWeight(precision, s.shape[1]);
    else if (s.kind === "embedding") bytes += n * (precision === "fp32" ? 4 : 2);
    else bytes += n * 4;
  }
  return bytes;
}

/**
 * The memory estimate of a run's settings, the one the create page (before the run) and the worker
 * (run.json modelInfo.memoryEstimateMb) both show: estimateMemory (engine/gemma/params.ts) with the frozen
 * weights in that precision (projections in their blocks, tables in bf16) and, for LoRA with
 * per-layer checkpointing, the activations of one layer plus each layer's input instead of all of them,
 * and one frozen weight's dequantized form at a time.
 */
export function estimateRunMemory(
  c: GemmaConfig,
  cfg: {
    method: "lora" | "full";
    basePrecision?: BasePrecision;
    optimizer?: "adamw" | "adamw-8bit";
    batchSize: number;
    maxLength: number;
    lora: { r: number; targets: readonly string[] };
  },
): MemoryEstimate & { basePrecision: BasePrecision } {
  const o = {
    method: cfg.method,
    basePrecision: cfg.basePrecision,
    optimizer: cfg.optimizer,
    batchSize: cfg.batchSize,
    seqLen: cfg.maxLength,
    loraR: cfg.lora.r,
    loraTargets: cfg.lora.targets,
  };
  const base = estimateMemory(c, o);
  const precision = o.method === "full" ? "fp32" : (o.basePrecision ?? defaultBasePrecision(c).precision);
  // Full fine-tuning holds every weight in fp32, as estimateMemory counts them; a LoRA base per its precision.
  const weightsBytes = o.method === "full" ? base.weightsBytes : frozenBaseBytes(c, precision);
  let activationBytes = base.activationBytes;
  // Per-layer checkpointing (engine/train_engine.ts defaultActivations): LoRA and full fine-tuning
  // wherever layerCheckpointable (engine/gemma/config.ts) allows it (Gemma 4 LoRA too, not MoE).
  if (layerCheckpointable(c, o.method)) {
    // One layer's share of the activations alive, and every layer's input h.
    const L = c.numLayers, N = o.batchSize * o.seqLen;
    // Each frozen weight is dequantized right before its own product and freed after it
    // (engine/quant/graph.ts), so one weight's float32 form and its unpacked bytes are alive, not a layer's:
    // bf16 W and its int32 indices (8 B a weight), int8/int4 W and its uint8 codes (5 B).
    const largest = Math.max(0, ...paramSpecs(c).filter((s) => s.kind === "linear").map((s) => s.shape[0] * s.shape[1]));
    const transient = precision === "fp32" ? 0 : largest * (precision === "bf16" ? 8 : 5);
    activationBytes = base.activationBytes / L * 2 + 4 * L * N * c.hiddenSize + transient;
  }
  const totalBytes = weightsBytes + base.trainableBytes + base.optimizerBytes + activationBytes;
  return { ...base, weightsBytes, activationBytes, totalBytes, basePrecision: precision };
}
