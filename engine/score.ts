/**
 * Per-token NLLs of a sequence under a model (optionally with a PEFT adapter),
 * and with `grad` the L2 norm of d(mean_nll)/dW for every weight tensor. The verb is cli/score.ts.
 */
import { loadModel } from "./model_dir.ts";
import { readAdapter } from "./peft.ts";
import { TrainEngine } from "./train_engine.ts";
import type { Device } from "./device.ts";
import type { BasePrecision } from "./quant/blocks.ts";
import { loadFrozen } from "./quant/base.ts";
import { checkBasePrecision } from "./quant/policy.ts";

/** A no-op LoRA (B = 0) for scoring a low-precision base without an adapter: the engine's LoRA path. */
const NO_ADAPTER = { r: 1, alpha: 1, dropout: 0, rslora: false, targets: ["q_proj"] };

export interface ScoreResult {
  ids: number[];
  token_nll: number[];
  mean_nll: number;
  grad_l2?: Record<string, number>;
}

export async function score(o: {
  model: string;
  adapter?: string;
  ids: number[];
  grad?: boolean;
  device?: Device;
  threads?: number;
  /**
   * The frozen base's precision (docs/QUANT.md; default fp32): bf16 / int8 / int4 load the base as a
   * LoRA run holds it, so the NLLs are the ones that run trains against.
   */
  basePrecision?: BasePrecision;
}): Promise<ScoreResult> {
  if (o.ids.length < 2) throw new RangeError("score needs at least 2 tokens (each NLL predicts the next token)");
  const precision = o.basePrecision ?? "fp32";
  const adapter = o.adapter ? readAdapter(o.adapter) : undefined;
  if (precision !== "fp32" && o.grad && !adapter) {
    throw new RangeError(`score: grad reports d(mean_nll)/dW of every weight, which needs the float32 base; use base precision fp32, or give an adapter (its LoRA gradients)`);
  }
  if (o.device && o.device !== "cpu") await checkBasePrecision(o.device, precision);
  const model = precision === "fp32" ? await loadModel(o.model) : loadFrozen(o.model, precision);
  const engine = await TrainEngine.create({
    model,
    method: adapter || precision !== "fp32" ? "lora" : "full",
    lora: adapter ? { ...adapter.lora, dropout: 0 } : precision !== "fp32" ? NO_ADAPTER : undefined,
    adapter: adapter?.tensors,
    device: o.device,
    threads: o.threads,
    seed: 0,
  });
  try {
    const T = o.ids.length;
    const batch = { inputIds: Int32Array.from(o.ids), labels: Int32Array.from(o.ids), batchSize: 1, seqLen: T };
    const tokenNll = await engine.tokenNll(batch);
    const mean = tokenNll.reduce((a, b) => a + b, 0) / tokenNll.length;
    const result: ScoreResult = { ids: o.ids, token_nll: tokenNll, mean_nll: mean };
    if (o.grad) {
      engine.zeroGrads();
      await engine.forwardBackward(batch);
      result.grad_l2 = {};
      // forwardBackward gives d(Σ nll)/dW; the contract is the gradient of the mean.
      for (const [name, g] of engine.grads) {
        let s = 0;
        for (let i = 0; i < g.length; i++) s += g[i] * g[i];
        result.grad_l2[name] = Math.sqrt(s) / tokenNll.length;
      }
    }
    return result;
  } finally {
    engine.release();
  }
}
