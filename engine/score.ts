/**
 * `gemma-tuner score`: per-token NLLs of a sequence under a model (optionally with a PEFT adapter),
 * and with --grad the L2 norm of d(mean_nll)/dW for every weight tensor.
 */
import { flagHelp, parseFlags, parseIds, UsageError } from "../config/cli.ts";
import { loadModel } from "./model_dir.ts";
import { loadTokenizer } from "./tokenizer.ts";
import { readAdapter } from "./peft.ts";
import { TrainEngine } from "./train_engine.ts";
import { type Device, parseDevice } from "./session.ts";

const FLAGS = {
  model: { kind: "string" as const, help: "model directory (Hugging Face layout)" },
  adapter: { kind: "string" as const, help: "PEFT LoRA adapter directory" },
  ids: { kind: "string" as const, help: "comma-separated token ids, used exactly as given" },
  text: { kind: "string" as const, help: "text to tokenize (BOS added)" },
  grad: { kind: "boolean" as const, help: "add grad_l2: L2 norm of d(mean_nll)/dW per weight tensor" },
  device: { kind: "string" as const, help: "cpu | webgpu | cuda", default: "cpu" },
  threads: { kind: "number" as const, help: "intra-op threads" },
  help: { kind: "boolean" as const, help: "show this help" },
};

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

export async function scoreCommand(args: string[]): Promise<number> {
  const f = parseFlags("score", args, FLAGS);
  if (f.help) {
    console.log(flagHelp("gemma-tuner score --model DIR [--adapter DIR] (--ids 2,105,… | --text STR) [--grad] [--device cpu|webgpu|cuda]", FLAGS));
    return 0;
  }
  if (!f.model) throw new UsageError("score: --model DIR is required");
  if (!f.ids === !f.text) throw new UsageError("score: give exactly one of --ids or --text");
  const device = parseDevice("score", f.device);
  let ids: number[];
  if (f.ids) {
    ids = parseIds("score", String(f.ids));
  } else {
    const tok = await loadTokenizer(String(f.model));
    ids = tok.encode(String(f.text), { addSpecialTokens: true });
  }
  const r = await score({ model: String(f.model), adapter: f.adapter as string | undefined, ids, grad: !!f.grad, device, threads: f.threads as number | undefined });
  console.log(JSON.stringify(r));
  return 0;
}
