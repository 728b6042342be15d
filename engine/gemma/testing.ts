/**
 * Test fixtures shared by engine tests: tiny random Gemma configs of every generation (including
 * "stress" settings where every feature changes the output) and a direct graph runner.
 */
import type * as ortTypes from "onnxruntime-node";
import { type GemmaConfig, normalizeConfig } from "./config.ts";
import { paramSpecs } from "./params.ts";
import { attentionMask, buildModelGraph, type LoraSpec, ropeTables, typeHeadDim } from "./model.ts";
import { createSession, type Device, tensor } from "../session.ts";
import { rng } from "../lora.ts";
import type { DType } from "../onnx/builder.ts";

/** A raw HF-style config.json for a tiny model of a generation. */
export function tinyRawConfig(generation: 1 | 2 | 3, stress = false): Record<string, unknown> {
  const common = {
    vocab_size: 48,
    hidden_size: 32,
    intermediate_size: 48,
    num_hidden_layers: 3,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    head_dim: 8,
    rms_norm_eps: 1e-6,
    max_position_embeddings: 128,
    bos_token_id: 2,
    eos_token_id: 1,
    pad_token_id: 0,
  };
  if (generation === 1) return { ...common, model_type: "gemma", num_key_value_heads: 1, hidden_act: "gelu", rope_theta: 10000 };
  if (generation === 2) {
    return {
      ...common,
      model_type: "gemma2",
      query_pre_attn_scalar: 16,
      sliding_window: stress ? 3 : 4096,
      attn_logit_softcapping: stress ? 2.0 : 50.0,
      final_logit_softcapping: stress ? 1.5 : 30.0,
      rope_theta: 10000,
    };
  }
  return {
    ...common,
    model_type: "gemma3_text",
    query_pre_attn_scalar: 8,
    sliding_window: stress ? 3 : 512,
    sliding_window_pattern: 2,
    rope_theta: 1e6,
    rope_local_base_freq: 10000,
    rope_scaling: stress ? { rope_type: "linear", factor: 8 } : null,
    // transformers applies the final cap of a Gemma 3 CausalLM and ignores the attention cap.
    final_logit_softcapping: stress ? 1.5 : null,
    attn_logit_softcapping: stress ? 2.0 : null,
  };
}

export function tinyConfig(generation: 1 | 2 | 3, stress = false): GemmaConfig {
  return normalizeConfig(tinyRawConfig(generation, stress), `tiny-gemma-${generation}`);
}

/**
 * Tiny Gemma 4 stress configs where every feature changes the output: "ple" (per-layer embeddings,
 * KV sharing, double-wide MLP), "kv" (K=V full layers), "moe" (experts beside the dense MLP). Head dims
 * differ per layer type, the window is 3, half of each full head rotates, and the soft-cap is small.
 */
export type Gemma4Variant = "ple" | "kv" | "moe";
export function tinyRawConfig4(variant: Gemma4Variant): Record<string, unknown> {
  const common = {
    model_type: "gemma4_text",
    vocab_size: 48,
    hidden_size: 32,
    intermediate_size: 24,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    head_dim: 8,
    global_head_dim: 16,
    rms_norm_eps: 1e-6,
    max_position_embeddings: 128,
    bos_token_id: 2,
    eos_token_id: 1,
    pad_token_id: 0,
    sliding_window: 3,
    final_logit_softcapping: 1.5,
    rope_parameters: { sliding_attention: { rope_type: "default", rope_theta: 10000 }, full_attention: { rope_type: "proportional", partial_rotary_factor: 0.5, rope_theta: 100 } },
  };
  if (variant === "ple") {
    return {
      ...common,
      num_hidden_layers: 4,
      layer_types: ["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
      num_kv_shared_layers: 2,
      use_double_wide_mlp: true,
      hidden_size_per_layer_input: 4,
      vocab_size_per_layer_input: 48,
    };
  }
  const kv = { ...common, num_hidden_layers: 3, layer_types: ["sliding_attention", "full_attention", "full_attention"], attention_k_eq_v: true, num_global_key_value_heads: 1 };
  return variant === "kv" ? kv : { ...kv, enable_moe_block: true, num_experts: 4, top_k_experts: 2, moe_intermediate_size: 8 };
}

export function tinyConfig4(variant: Gemma4Variant): GemmaConfig {
  return normalizeConfig(tinyRawConfig4(variant), `tiny-gemma-4-${variant}`);
}

/** Random weights: normal-ish with `std` for matrices, small random offsets for norms. */
export function randomWeights(c: GemmaConfig, seed: number, std = 0.2): Map<string, Float32Array> {
  const r = rng(seed);
  const w = new Map<string, Float32Array>();
  for (const s of paramSpecs(c)) {
    const n = s.shape.reduce((a, b) => a * b, 1);
    const scale = s.kind === "norm" || s.kind === "buffer" ? 0.3 : std;
    // Plain-weight norms (Gemma 4), layer scalars and router scales are multipliers: around 1.
    const centre = (s.kind === "norm" && c.normOffset === 0) || s.kind === "buffer" ? 1 : 0;
    // Sum of 3 uniforms ≈ normal, std 1.
    w.set(s.name, Float32Array.from({ length: n }, () => centre + (r() + r() + r() - 1.5) * 2 * scale));
  }
  return w;
}

export interface RunResult {
  loss: number;
  nll: Float64Array;
  logits?: Float64Array;
  grads: Map<string, Float64Array>;
}

/**
 * Runs the model graph on one sequence with every position selected (P = T−1 targets), in float32
 * or float64. `lora` adds LoRA inputs.
 */
export async function runSequence(
  c: GemmaConfig,
  weights: Map<string, ArrayLike<number>>,
  ids: number[],
  o: {
    float?: DType;
    method?: "forward" | "full" | "lora";
    lora?: { spec: LoraSpec; tensors: Map<string, ArrayLike<number>> };
    logits?: boolean;
    device?: Device;
  },
): Promise<RunResult> {
  const float = o.float ?? "float32";
  const T = ids.length, P = T - 1;
  const graph = buildModelGraph(c, { batch: 1, seq: T, positions: P, method: o.method ?? "forward", lora: o.lora?.spec, float, logits: o.logits });
  const session = await createSession(graph.bytes, { device: o.device });
  const F = float === "float64" ? Float64Array : Float32Array;
  const feeds: Record<string, ortTypes.Tensor> = {
    input_ids: tensor("int64", BigInt64Array.from(ids.map(BigInt)), [T]),
    sel: tensor("int64", BigInt64Array.from({ length: P }, (_, i) => BigInt(i)), [P]),
    tgt: tensor("int64", BigInt64Array.from(ids.slice(1).map(BigInt)), [P, 1]),
    tw: tensor(float, new F(P).fill(1), [P]),
  };
  for (const type of new Set(c.layerTypes)) {
    const { cos, sin } = ropeTables(c, type, T);
    feeds[`rope_cos_${type}`] = tensor(float, F.from(cos), [T, typeHeadDim(c, type)]);
    feeds[`rope_sin_${type}`] = tensor(float, F.from(sin), [T, typeHeadDim(c, type)]);
    feeds[`mask_${type}`] = tensor(float, F.from(attentionMask(c, type, T)), [T, T]);
  }
  for (const s of paramSpecs(c)) feeds[s.name] = tensor(float, F.from(weights.get(s.name)!), s.shape);
  if (o.lora) {
    for (const name of graph.loraInputs) {
      const t = o.lora.tensors.get(name)!;
      const shape = name.includes("lora_A") ? [o.lora.spec.r, t.length / o.lora.spec.r] : [t.length / o.lora.spec.r, o.lora.spec.r];
      feeds[name] = tensor(float, F.from(t), shape);
    }
  }
  const out = await session.run(feeds);
  await session.release();
  const grads = new Map<string, Float64Array>();
  for (const name of graph.trainable) grads.set(name, Float64Array.from(out[`grad.${name}`].data as Float32Array));
  return {
    loss: Number(out.loss.data[0]),
    nll: Float64Array.from(out.nll.data as Float32Array),
    logits: out.logits ? Float64Array.from(out.logits.data as Float32Array) : undefined,
    grads,
  };
}

/**
 * Whole-model gradients of the float64 graph against central finite differences: two random elements
 * of each named tensor (`names`, default every tensor with a gradient). Returns the worst relative error,
 * where it was, and the analytic run (for further checks on its gradient names).
 */
export async function finiteDifferenceCheck(
  c: GemmaConfig,
  w: Map<string, Float64Array>,
  ids: number[],
  seed: number,
  names?: string[],
): Promise<{ worst: number; where: string; full: RunResult }> {
  const full = await runSequence(c, w, ids, { float: "float64", method: "full" });
  const r = rng(seed);
  const h = 1e-5;
  let worst = 0, where = "";
  for (const name of names ?? [...full.grads.keys()]) {
    const data = w.get(name)!;
    for (let s = 0; s < 2; s++) {
      const i = Math.floor(r() * data.length);
      const orig = data[i];
      data[i] = orig + h;
      const lp = (await runSequence(c, w, ids, { float: "float64" })).loss;
      data[i] = orig - h;
      const lm = (await runSequence(c, w, ids, { float: "float64" })).loss;
      data[i] = orig;
      const numeric = (lp - lm) / (2 * h), analytic = full.grads.get(name)![i];
      const err = Math.abs(numeric - analytic) / Math.max(1e-4, Math.abs(numeric));
      if (err > worst) [worst, where] = [err, `${name}[${i}] analytic ${analytic} numeric ${numeric}`];
    }
  }
  return { worst, where, full };
}
