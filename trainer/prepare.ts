/**
 * What a training run and the create page's estimate probe share: loading the model, tokenizer and
 * dataset for a RunConfig (`prepareRun`), the step count (`totalSteps`), the engine and optimizer
 * (`createTrainer`) and one optimizer step (`trainStep`: the micro-batches' forward+backward, the
 * gradient norm, clipping and the AdamW update). The probe times the same `trainStep` the worker runs,
 * so the estimate counts the optimizer (the larger part of a full fine-tuning step on a small model).
 *
 * The server imports this module (trainer/preflight.ts): ONNX Runtime is loaded by `createTrainer`
 * only, on first use, so `serve` starts without it.
 */
import type { RunConfig } from "../config/training.ts";
import { type Batch, BatchPlan, type PreparedDataset } from "../engine/data/mod.ts";
import { type LoadedModel, resolveModelPath } from "../engine/model_dir.ts";
import { loadForTraining } from "../engine/quant/base.ts";
import { AdamW, clipFactor, lrAt, type Schedule } from "../engine/optim.ts";
import { prepareData } from "./data_worker.ts";
import type { TrainEngine } from "../engine/train_engine.ts";

/** The model, tokenizer, dataset and schedule of a run, before any graph is built. */
export interface PreparedRun {
  cfg: RunConfig;
  /** The resolved model directory (a path, "demo" made concrete). */
  modelDir: string;
  model: LoadedModel;
  /** The tokenizer's pad id (the tokenizer itself stays on the thread that tokenized the dataset). */
  padId: number;
  data: PreparedDataset;
  plan: BatchPlan;
  totalSteps: number;
  schedule: Schedule;
}

/** Optimizer steps of a run: `maxSteps`, else `epochs` over the batch plan in steps of `gradAccum` micro-batches. */
export function totalSteps(cfg: Pick<RunConfig, "maxSteps" | "epochs" | "gradAccum">, plan: BatchPlan): number {
  return cfg.maxSteps ?? Math.max(1, Math.ceil((cfg.epochs ?? 1) * plan.perEpoch / cfg.gradAccum));
}

/**
 * Loads what a run trains on. `onPhase` hears "Loading model" and "Reading dataset" as each begins (the
 * worker turns them into status lines).
 */
export async function prepareRun(cfg: RunConfig, dataDir: string, onPhase: (message: string) => void = () => {}): Promise<PreparedRun> {
  onPhase("Loading model");
  const modelDir = await resolveModelPath(cfg.model, dataDir);
  // The tokenizer and dataset on a second thread, beside the model load (trainer/data_worker.ts).
  const prepared = prepareData({ modelDir, dataset: cfg.dataset, maxLength: cfg.maxLength, seed: cfg.seed });
  prepared.catch(() => {}); // awaited below; a model error first must not leave it unhandled
  // LoRA keeps the frozen base in its precision (engine/quant: the configured one, else the size policy).
  const model = await loadForTraining(modelDir, cfg);
  if (cfg.method === "lora") onPhase(`Loading model (base weights: ${model.precision.reason})`);
  onPhase("Reading dataset");
  const { data, padId } = await prepared;
  const plan = new BatchPlan(data.train.length, cfg.batchSize, cfg.seed);
  const steps = totalSteps(cfg, plan);
  const schedule: Schedule = { kind: cfg.schedule, peakLr: cfg.learningRate, warmupSteps: cfg.warmupSteps, totalSteps: steps };
  return { cfg, modelDir, model, padId, data, plan, totalSteps: steps, schedule };
}

/** The engine and its AdamW for a prepared run; `adapter` carries the LoRA tensors of a resumed checkpoint. */
export async function createTrainer(prep: PreparedRun, adapter?: Map<string, Float32Array>): Promise<{ engine: TrainEngine; optimizer: AdamW }> {
  const { cfg, model } = prep;
  // Imported here: train_engine.ts loads ONNX Runtime, which the server loads only when a model is needed.
  const { TrainEngine } = await import("../engine/train_engine.ts");
  const engine = await TrainEngine.create({
    model,
    method: cfg.method,
    lora: cfg.method === "lora" ? cfg.lora : undefined,
    adapter: adapter && cfg.method === "lora" ? new Map([...adapter].map(([n, d]) => [n, { shape: [], data: d }])) : undefined,
    device: cfg.device,
    threads: cfg.threads,
    seed: cfg.seed,
  });
  const optimizer = new AdamW(engine.trainable, {
    beta1: cfg.adamBeta1,
    beta2: cfg.adamBeta2,
    eps: cfg.adamEps,
    weightDecay: cfg.weightDecay,
    moments: cfg.optimizer === "adamw-8bit" ? "8bit" : "fp32",
  });
  return { engine, optimizer };
}

/** What one optimizer step did and how long its parts took. */
export interface StepOutcome {
  /** Mean token loss over the step's micro-batches. */
  loss: number;
  lr: number;
  gradNorm: number;
  tokens: number;
  /** Forward+backward of all micro-batches (collation included). */
  forwardBackwardMs: number;
  /** Gradient norm, clipping and the AdamW update. */
  optimizerMs: number;
}

/**
 * Optimizer step `step` (0-based): `microBatches` forward+backward passes (micro-batch k gets
 * `batchOf(k)` and LoRA dropout seed k), then the update with the gradients normalised by the token
 * count across micro-batches and clipped to `maxGradNorm`. Throws RangeError for a batch with no
 * trained tokens or a non-finite loss.
 */
export async function trainStep(
  t: { engine: TrainEngine; optimizer: AdamW; cfg: RunConfig; schedule: Schedule },
  step: number,
  batchOf: (k: number) => Batch,
  microBatches = t.cfg.gradAccum,
): Promise<StepOutcome> {
  const { engine, optimizer, cfg } = t;
  const t0 = performance.now();
  engine.zeroGrads();
  let lossSum = 0, tokens = 0;
  for (let a = 0; a < microBatches; a++) {
    const k = step * microBatches + a;
    const r = await engine.forwardBackward(batchOf(k), { dropoutSeed: k });
    lossSum += r.lossSum;
    tokens += r.tokens;
  }
  if (tokens === 0) throw new RangeError(`Step ${step + 1}: the batch has no trained tokens`);
  const loss = lossSum / tokens;
  if (!Number.isFinite(loss)) {
    throw new RangeError(`Step ${step + 1}: the loss is ${loss}; lower learningRate or maxGradNorm`);
  }
  const t1 = performance.now();
  const scale = 1 / tokens; // token-count normalisation across micro-batches
  const gradNorm = optimizer.gradNorm(engine.grads, scale);
  const lr = lrAt(step, t.schedule);
  optimizer.update(engine.grads, lr, scale * clipFactor(gradNorm, cfg.maxGradNorm));
  return { loss, lr, gradNorm, tokens, forwardBackwardMs: t1 - t0, optimizerMs: performance.now() - t1 };
}
