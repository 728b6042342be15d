/**
 * Every tensor of a Gemma checkpoint for a config (spec/GEMMA.md §2.5): HF names and shapes,
 * parameter counts and memory estimates.
 */
import type { GemmaConfig } from "./config.ts";

export interface ParamSpec {
  name: string;
  shape: number[];
  kind: "embedding" | "linear" | "norm";
}

export const LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] as const;
export type LinearName = typeof LINEARS[number];

/** HF module path of a linear in layer i. */
export function linearPath(i: number, lin: LinearName): string {
  const mlp = lin === "gate_proj" || lin === "up_proj" || lin === "down_proj";
  return `model.layers.${i}.${mlp ? "mlp" : "self_attn"}.${lin}`;
}

/** [out, in] of each linear. */
export function linearShape(c: GemmaConfig, lin: LinearName): [number, number] {
  const H = c.hiddenSize, I = c.intermediateSize, Q = c.numHeads * c.headDim, KV = c.numKvHeads * c.headDim;
  switch (lin) {
    case "q_proj":
      return [Q, H];
    case "k_proj":
    case "v_proj":
      return [KV, H];
    case "o_proj":
      return [H, Q];
    case "gate_proj":
    case "up_proj":
      return [I, H];
    case "down_proj":
      return [H, I];
  }
}

export function paramSpecs(c: GemmaConfig): ParamSpec[] {
  const H = c.hiddenSize;
  const out: ParamSpec[] = [{ name: "model.embed_tokens.weight", shape: [c.vocabSize, H], kind: "embedding" }];
  for (let i = 0; i < c.numLayers; i++) {
    const p = `model.layers.${i}`;
    out.push({ name: `${p}.input_layernorm.weight`, shape: [H], kind: "norm" });
    for (const lin of ["q_proj", "k_proj", "v_proj", "o_proj"] as const) {
      out.push({ name: `${linearPath(i, lin)}.weight`, shape: linearShape(c, lin), kind: "linear" });
    }
    if (c.generation === 3) {
      out.push({ name: `${p}.self_attn.q_norm.weight`, shape: [c.headDim], kind: "norm" });
      out.push({ name: `${p}.self_attn.k_norm.weight`, shape: [c.headDim], kind: "norm" });
    }
    out.push({ name: `${p}.post_attention_layernorm.weight`, shape: [H], kind: "norm" });
    if (c.generation >= 2) {
      out.push({ name: `${p}.pre_feedforward_layernorm.weight`, shape: [H], kind: "norm" });
      out.push({ name: `${p}.post_feedforward_layernorm.weight`, shape: [H], kind: "norm" });
    }
    for (const lin of ["gate_proj", "up_proj", "down_proj"] as const) {
      out.push({ name: `${linearPath(i, lin)}.weight`, shape: linearShape(c, lin), kind: "linear" });
    }
  }
  out.push({ name: "model.norm.weight", shape: [H], kind: "norm" });
  return out;
}

export function countParams(c: GemmaConfig): number {
  return paramSpecs(c).reduce((s, p) => s + p.shape.reduce((a, b) => a * b, 1), 0);
}

/** LoRA parameter count for rank r on the given target modules. */
export function countLoraParams(c: GemmaConfig, r: number, targets: readonly string[]): number {
  let n = 0;
  for (const lin of LINEARS) {
    if (!targets.includes(lin)) continue;
    const [o, i] = linearShape(c, lin);
    n += r * (o + i);
  }
  return n * c.numLayers;
}

export interface MemoryEstimate {
  weightsBytes: number;
  trainableBytes: number;
  optimizerBytes: number;
  activationBytes: number;
  totalBytes: number;
}

/**
 * A rough fp32 estimate of peak memory for one training step as the engine runs it: weights, the
 * gradient and AdamW's two moments of the trainable part, activations of the body (per token and
 * layer: residual stream, attention and MLP intermediates; attention scores), and the LM head's
 * vocabulary chunks (a few [P, rows] blocks of 1M elements: the whole [P,V] never exists).
 */
export function estimateMemory(
  c: GemmaConfig,
  o: { method: "lora" | "full"; batchSize: number; seqLen: number; loraR?: number; loraTargets?: readonly string[] },
): MemoryEstimate {
  const weightsBytes = countParams(c) * 4;
  const trainable = o.method === "full" ? countParams(c) : countLoraParams(c, o.loraR ?? 8, o.loraTargets ?? LINEARS);
  // Full fine-tuning updates the weights in place: only LoRA tensors are extra.
  const trainableBytes = o.method === "full" ? 0 : trainable * 4;
  const optimizerBytes = trainable * 4 * 3; // gradient, exp_avg, exp_avg_sq
  const N = o.batchSize * o.seqLen;
  const perTokenLayer = 8 * c.hiddenSize + 3 * c.intermediateSize + 4 * (c.numHeads + 2 * c.numKvHeads) * c.headDim;
  const scores = o.batchSize * c.numHeads * o.seqLen * o.seqLen * 3;
  const headChunks = 4 * 1024 * 1024 + 2 * N * c.hiddenSize;
  const activationBytes = 4 * (c.numLayers * (N * perTokenLayer + scores) + headChunks);
  return {
    weightsBytes,
    trainableBytes,
    optimizerBytes,
    activationBytes,
    totalBytes: weightsBytes + trainableBytes + optimizerBytes + activationBytes,
  };
}
