/**
 * Per-token NLLs of a sequence under a model (optionally with a PEFT adapter),
 * and with `grad` the L2 norm of d(mean_nll)/dW for every weight tensor. The verb is cli/score.ts.
 */
import { loadModel } from "./model_dir.ts";
import { readAdapter } from "./peft.ts";
import { TrainEngine } from "./train_engine.ts";
import type { Device } from "./device.ts";

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
}): Promise<ScoreResult> {
  if (o.ids.length < 2) throw new RangeError("score needs at least 2 tokens (each NLL predicts the next token)");
  const model = await loadModel(o.model);
  const adapter = o.adapter ? readAdapter(o.adapter) : undefined;
  const engine = await TrainEngine.create({
    model,
    method: adapter ? "lora" : "full",
    lora: adapter ? { ...adapter.lora, dropout: 0 } : undefined,
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
