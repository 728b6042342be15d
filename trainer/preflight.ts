/**
 * The measured pre-flight: tokens per epoch, steps, and a time estimate from a few real steps of the
 * actual graph on this machine (same model, method, batch size and length bucket as the run). It runs
 * the worker's own preparation and optimizer step (trainer/prepare.ts), so the time counts the
 * forward+backward of every micro-batch and the AdamW update.
 */
import type { RunConfig } from "../config/training.ts";
import { collate } from "../engine/data/mod.ts";
import { createTrainer, prepareRun, trainStep } from "./prepare.ts";

export interface Estimate {
  trainExamples: number;
  tokensPerEpoch: number;
  steps: number;
  /** One optimizer step: `gradAccum` × forward+backward + the optimizer. */
  stepMs: number;
  /** Of `stepMs`, the gradient norm, clipping and AdamW update. */
  optimizerMs: number;
  probeSteps: number;
  totalMs: number;
}

const cache = new Map<string, Estimate>();

export async function probeStep(cfg: RunConfig, dataDir: string, probeSteps = 2): Promise<Estimate> {
  const key = JSON.stringify([cfg.model, cfg.dataset, cfg.method, cfg.lora, cfg.batchSize, cfg.gradAccum, cfg.maxLength, cfg.maxSteps, cfg.epochs, cfg.seed]);
  const hit = cache.get(key);
  if (hit) return hit;
  const prep = await prepareRun(cfg, dataDir);
  // The longest examples give the slowest (largest bucket) step: a conservative estimate.
  const sorted = [...prep.data.train].sort((a, b) => b.ids.length - a.ids.length);
  const batch = collate(sorted.slice(0, cfg.batchSize), prep.padId, cfg.maxLength);
  const { engine, optimizer } = await createTrainer(prep);
  try {
    const t = { engine, optimizer, cfg, schedule: prep.schedule };
    // One micro-batch a probe step: the micro-batches of a step cost the same, the update is once a step.
    await trainStep(t, 0, () => batch, 1); // builds the graph, allocates the optimizer state, warms up
    let fbMs = 0, optMs = 0;
    for (let i = 1; i <= probeSteps; i++) {
      const s = await trainStep(t, i, () => batch, 1);
      fbMs += s.forwardBackwardMs;
      optMs += s.optimizerMs;
    }
    const optimizerMs = optMs / probeSteps;
    const stepMs = (fbMs / probeSteps) * cfg.gradAccum + optimizerMs;
    const est = {
      trainExamples: prep.data.train.length,
      tokensPerEpoch: prep.data.trainTokens,
      steps: prep.totalSteps,
      stepMs,
      optimizerMs,
      probeSteps,
      totalMs: stepMs * prep.totalSteps,
    };
    cache.set(key, est);
    return est;
  } finally {
    engine.release();
    optimizer.close();
  }
}
