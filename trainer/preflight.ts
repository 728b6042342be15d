/**
 * The measured pre-flight: tokens per epoch, steps, and a time estimate from a few real steps of the
 * actual graph on this machine (same model, method, batch size and length bucket as the run).
 */
import type { RunConfig } from "../config/training.ts";
import { loadModel, resolveModelPath } from "../engine/model_dir.ts";
import { loadTokenizer } from "../engine/tokenizer.ts";
import { BatchPlan, collate, prepareDataset } from "../engine/data/mod.ts";

export interface Estimate {
  trainExamples: number;
  tokensPerEpoch: number;
  steps: number;
  stepMs: number;
  probeSteps: number;
  totalMs: number;
}

const cache = new Map<string, Estimate>();

export async function probeStep(cfg: RunConfig, dataDir: string, probeSteps = 2): Promise<Estimate> {
  const key = JSON.stringify([cfg.model, cfg.dataset, cfg.method, cfg.lora, cfg.batchSize, cfg.gradAccum, cfg.maxLength, cfg.maxSteps, cfg.epochs, cfg.seed]);
  const hit = cache.get(key);
  if (hit) return hit;
  const modelDir = await resolveModelPath(cfg.model, dataDir);
  const model = await loadModel(modelDir);
  const tok = await loadTokenizer(modelDir);
  const data = await prepareDataset(cfg.dataset, tok, { maxLength: cfg.maxLength, seed: cfg.seed, chat: tok.chat });
  const plan = new BatchPlan(data.train.length, cfg.batchSize, cfg.seed);
  const steps = cfg.maxSteps ?? Math.max(1, Math.ceil((cfg.epochs ?? 1) * plan.perEpoch / cfg.gradAccum));
  // The longest examples give the slowest (largest bucket) step: a conservative estimate.
  const sorted = [...data.train].sort((a, b) => b.ids.length - a.ids.length);
  const batch = collate(sorted.slice(0, cfg.batchSize), tok.padId, cfg.maxLength);
  // Imported here: train_engine.ts loads ONNX Runtime, which the server loads only when a model is needed.
  const { TrainEngine } = await import("../engine/train_engine.ts");
  const engine = await TrainEngine.create({ model, method: cfg.method, lora: cfg.lora, seed: cfg.seed, device: cfg.device, threads: cfg.threads });
  try {
    await engine.forwardBackward(batch); // builds the graph and warms up
    const t0 = performance.now();
    for (let i = 0; i < probeSteps; i++) await engine.forwardBackward(batch);
    const stepMs = ((performance.now() - t0) / probeSteps) * cfg.gradAccum;
    const est = {
      trainExamples: data.train.length,
      tokensPerEpoch: data.trainTokens,
      steps,
      stepMs,
      probeSteps,
      totalMs: stepMs * steps,
    };
    cache.set(key, est);
    return est;
  } finally {
    engine.release();
  }
}
