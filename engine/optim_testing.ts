/**
 * The full fine-tuning run the optimizer tests share (engine/optim_parallel_test.ts, engine/optim8_test.ts):
 * a 2-layer Gemma 3 just above the two-thread threshold (vocabulary 65536 × hidden 64 = 4.2M elements in
 * E), four fixed batches, AdamW with clipping by the global norm.
 */
import { ok } from "node:assert/strict";
import { AdamW, clipFactor, type MomentStorage, PARALLEL_MIN_ELEMENTS } from "./optim.ts";
import { TrainEngine } from "./train_engine.ts";
import { normalizeConfig } from "./gemma/config.ts";
import { randomWeights } from "./gemma/testing.ts";
import { rng } from "./lora.ts";
import { TIMEOUTS, waitFor } from "../tests/_timeouts.ts";

const CONFIG = normalizeConfig({
  model_type: "gemma3_text",
  vocab_size: 65536,
  hidden_size: 64,
  intermediate_size: 96,
  num_hidden_layers: 2,
  num_attention_heads: 2,
  num_key_value_heads: 1,
  head_dim: 32,
  query_pre_attn_scalar: 32,
  sliding_window: 4,
}, "optimizer test");
const WEIGHTS = randomWeights(CONFIG, 5, 0.05);

export interface FullRunOptions {
  moments: MomentStorage;
  parallel: boolean;
  steps: number;
  lr: number;
  maxNorm: number;
  /** Token ids are drawn from 0…tokens−1. */
  tokens: number;
}

/** Per step: the loss (mean over labelled tokens) and the gradient norm; the optimizer is returned closed. */
export async function fullRun(o: FullRunOptions): Promise<{ losses: number[]; norms: number[]; optimizer: AdamW }> {
  ok(CONFIG.vocabSize * CONFIG.hiddenSize >= PARALLEL_MIN_ELEMENTS);
  const r = rng(11);
  const B = 2, T = 16;
  const batches = Array.from({ length: 4 }, () => {
    const ids = Int32Array.from({ length: B * T }, () => Math.floor(r() * o.tokens));
    const labels = ids.slice();
    labels.fill(-100, 0, 5);
    return { inputIds: ids, labels, batchSize: B, seqLen: T };
  });
  const weights = new Map([...WEIGHTS].map(([k, v]) => [k, v.slice()]));
  const e = await TrainEngine.create({ model: { config: CONFIG, weights }, method: "full", seed: 1, headChunkElements: 32 * 4096 });
  const opt = new AdamW(e.trainable, { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, moments: o.moments }, { parallel: o.parallel });
  if (o.parallel) await waitFor("the optimizer's worker to start", () => opt.parallel, TIMEOUTS.request);
  const losses: number[] = [], norms: number[] = [];
  for (let s = 0; s < o.steps; s++) {
    e.zeroGrads();
    const out = await e.forwardBackward(batches[s % batches.length]);
    const norm = opt.gradNorm(e.grads, 1 / out.tokens);
    opt.update(e.grads, o.lr, clipFactor(norm, o.maxNorm) / out.tokens);
    losses.push(out.lossSum / out.tokens);
    norms.push(norm);
  }
  ok(!o.parallel || opt.parallel, "the worker stopped during the run");
  opt.close();
  e.release();
  return { losses, norms, optimizer: opt };
}
