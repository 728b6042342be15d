/**
 * Every tensor of a Gemma checkpoint's text decoder for a config (docs/GEMMA.md §Parameters, docs/GEMMA4.md
 * §Tensors), by internal name ("model.…", the CausalLM layout; checkpointName maps it to the
 * checkpoint's own prefix), with shapes, parameter counts and memory estimates.
 */
import type { GemmaConfig } from "./config.ts";

export interface ParamSpec {
  name: string;
  shape: number[];
  /** "buffer": stored but never trained (Gemma 4 layer_scalar); "expert": 3-D MoE tensors. */
  kind: "embedding" | "linear" | "norm" | "buffer" | "expert";
}

export const LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] as const;
export type LinearName = typeof LINEARS[number];

/** HF module path of a linear in layer i (internal prefix). */
export function linearPath(i: number, lin: LinearName): string {
  const mlp = lin === "gate_proj" || lin === "up_proj" || lin === "down_proj";
  return `model.layers.${i}.${mlp ? "mlp" : "self_attn"}.${lin}`;
}

/** The checkpoint's name for an internal tensor name (multimodal checkpoints nest the text model). */
export function checkpointName(c: GemmaConfig, name: string): string {
  return name.startsWith("model.") ? c.textPrefix + name.slice("model.".length) : name;
}

/** The linears layer i has: KV-shared layers have no k/v projection, K=V layers no v_proj. */
export function layerLinears(c: GemmaConfig, i: number): LinearName[] {
  const l = c.layers[i];
  return LINEARS.filter((lin) => {
    if (lin === "k_proj" || lin === "v_proj") {
      if (l.kvSource !== i) return false;
      if (lin === "v_proj" && l.kEqV) return false;
    }
    return true;
  });
}

/** [out, in] of layer i's linear. */
export function linearShape(c: GemmaConfig, lin: LinearName, i = 0): [number, number] {
  const l = c.layers[i];
  const H = c.hiddenSize, I = l.intermediate, Q = c.numHeads * l.headDim, KV = l.kvHeads * l.headDim;
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
  if (c.ple) {
    const LD = c.numLayers * c.ple.dim;
    out.push({ name: "model.embed_tokens_per_layer.weight", shape: [c.ple.vocab, LD], kind: "embedding" });
    out.push({ name: "model.per_layer_model_projection.weight", shape: [LD, H], kind: "linear" });
    out.push({ name: "model.per_layer_projection_norm.weight", shape: [c.ple.dim], kind: "norm" });
  }
  for (let i = 0; i < c.numLayers; i++) {
    const p = `model.layers.${i}`;
    const l = c.layers[i];
    const lins = layerLinears(c, i);
    const linear = (lin: LinearName) => out.push({ name: `${linearPath(i, lin)}.weight`, shape: linearShape(c, lin, i), kind: "linear" });
    out.push({ name: `${p}.input_layernorm.weight`, shape: [H], kind: "norm" });
    for (const lin of lins) if (lin === "q_proj" || lin === "k_proj" || lin === "v_proj" || lin === "o_proj") linear(lin);
    if (c.qkNorm) {
      out.push({ name: `${p}.self_attn.q_norm.weight`, shape: [l.headDim], kind: "norm" });
      if (l.kvSource === i) out.push({ name: `${p}.self_attn.k_norm.weight`, shape: [l.headDim], kind: "norm" });
    }
    out.push({ name: `${p}.post_attention_layernorm.weight`, shape: [H], kind: "norm" });
    if (c.generation >= 2) {
      out.push({ name: `${p}.pre_feedforward_layernorm.weight`, shape: [H], kind: "norm" });
      out.push({ name: `${p}.post_feedforward_layernorm.weight`, shape: [H], kind: "norm" });
    }
    for (const lin of ["gate_proj", "up_proj", "down_proj"] as const) linear(lin);
    if (c.moe) {
      const { experts: E, intermediate: I } = c.moe;
      out.push({ name: `${p}.router.proj.weight`, shape: [E, H], kind: "linear" });
      out.push({ name: `${p}.router.scale`, shape: [H], kind: "norm" });
      out.push({ name: `${p}.router.per_expert_scale`, shape: [E], kind: "norm" });
      out.push({ name: `${p}.experts.gate_up_proj`, shape: [E, 2 * I, H], kind: "expert" });
      out.push({ name: `${p}.experts.down_proj`, shape: [E, H, I], kind: "expert" });
      for (const n of ["pre_feedforward_layernorm_2", "post_feedforward_layernorm_1", "post_feedforward_layernorm_2"]) {
        out.push({ name: `${p}.${n}.weight`, shape: [H], kind: "norm" });
      }
    }
    if (c.ple) {
      out.push({ name: `${p}.per_layer_input_gate.weight`, shape: [c.ple.dim, H], kind: "linear" });
      out.push({ name: `${p}.per_layer_projection.weight`, shape: [H, c.ple.dim], kind: "linear" });
      out.push({ name: `${p}.post_per_layer_input_norm.weight`, shape: [H], kind: "norm" });
    }
    if (c.layerScalar) out.push({ name: `${p}.layer_scalar`, shape: [1], kind: "buffer" });
  }
  out.push({ name: "model.norm.weight", shape: [H], kind: "norm" });
  return out;
}

/** Parameters as transformers counts them (buffers such as layer_scalar are not parameters). */
export function countParams(c: GemmaConfig): number {
  return paramSpecs(c).reduce((s, p) => s + (p.kind === "buffer" ? 0 : p.shape.reduce((a, b) => a * b, 1)), 0);
}

/** LoRA parameter count for rank r on the given target modules. */
export function countLoraParams(c: GemmaConfig, r: number, targets: readonly string[]): number {
  let n = 0;
  for (let i = 0; i < c.numLayers; i++) {
    for (const lin of layerLinears(c, i)) {
      if (!targets.includes(lin)) continue;
      const [o, inF] = linearShape(c, lin, i);
      n += r * (o + inF);
    }
  }
  return n;
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
  o: { method: "lora" | "full"; batchSize: number; seqLen: number; loraR?: number; loraTargets?: readonly string[]; optimizer?: "adamw" | "adamw-8bit" },
): MemoryEstimate {
  const weightsBytes = countParams(c) * 4;
  const trainable = o.method === "full" ? countParams(c) : countLoraParams(c, o.loraR ?? 8, o.loraTargets ?? LINEARS);
  // Full fine-tuning updates the weights in place: only LoRA tensors are extra.
  const trainableBytes = o.method === "full" ? 0 : trainable * 4;
  // The gradient (float32) and exp_avg, exp_avg_sq: float32, or a byte each plus a float32 absmax per
  // 256 (engine/optim8.ts; the few tensors under 4096 elements that stay float32 are noise here).
  const optimizerBytes = trainable * (4 + (o.optimizer === "adamw-8bit" ? 2 * (1 + 4 / 256) : 8));
  const N = o.batchSize * o.seqLen;
  let perToken = 0, scores = 0;
  for (const l of c.layers) {
    const moe = c.moe ? 3 * c.moe.topK * c.moe.intermediate + c.moe.experts : 0;
    perToken += 8 * c.hiddenSize + 3 * l.intermediate + moe + 4 * (c.numHeads + 2 * l.kvHeads) * l.headDim + (c.ple ? 3 * c.ple.dim : 0);
    scores += o.batchSize * c.numHeads * o.seqLen * o.seqLen * 3;
  }
  const headChunks = 4 * 1024 * 1024 + 2 * N * c.hiddenSize;
  const activationBytes = 4 * (N * perToken + scores + headChunks);
  return {
    weightsBytes,
    trainableBytes,
    optimizerBytes,
    activationBytes,
    totalBytes: weightsBytes + trainableBytes + optimizerBytes + activationBytes,
  };
}
