/**
 * Field readers shared by every generation: refusals of what transformers would run differently from
 * us, layer types and RoPE. The table of fields and what each does is in docs/GEMMA4.md.
 */

export type LayerType = "sliding" | "full";

/** One decoder layer's geometry. */
export interface LayerSpec {
  type: LayerType;
  headDim: number;
  kvHeads: number;
  /** MLP width (Gemma 4: per layer; double in KV-shared layers with use_double_wide_mlp). */
  intermediate: number;
  /** The layer whose keys/values this one attends to: itself, or (Gemma 4 KV sharing) an earlier one. */
  kvSource: number;
  /** Full Gemma 4 layers with attention_k_eq_v: no v_proj, V is the raw K projection. */
  kEqV: boolean;
}

type Raw = Record<string, unknown>;

export function layerSpecs(types: LayerType[], headDim: number, kvHeads: number, intermediate: number): LayerSpec[] {
  return types.map((type, i) => ({ type, headDim, kvHeads, intermediate, kvSource: i, kEqV: false }));
}

const TANH_GELU = ["gelu_pytorch_tanh", "gelu_new"];

/**
 * Refuses, by name, configs that transformers would run with a feature we do not implement, and
 * variants we do not support at all — before any tensor is read.
 */
export function refuseUnsupported(c: Raw, source: string): void {
  const t = String(c.model_type ?? "");
  const refuse = (what: string) => {
    throw new RangeError(
      `Cannot use "${source}": ${what}. Supported: Gemma 1, 2, 3 and 4 text decoders (also inside multimodal Gemma 3 / Gemma 4 checkpoints), unquantized (F32/BF16/F16 safetensors)`,
    );
  };
  if (t.startsWith("gemma3n")) refuse(`model_type "${t}" is Gemma 3n (AltUp, LAuReL and activation sparsity), which is not supported`);
  if (/audio|speech|whisper/.test(t) || ("audio_config" in c && !("text_config" in c) && !("hidden_size" in c))) {
    refuse(`model_type ${JSON.stringify(t)} is an audio model without a Gemma text decoder`);
  }
  const q = c.quantization_config as Raw | undefined;
  if (q && typeof q === "object") refuse(`the checkpoint is quantized (quantization_config.quant_method ${JSON.stringify(q.quant_method ?? "unknown")})`);
  if (c.attention_bias === true) refuse(`attention_bias is true (transformers would add biases to q/k/v/o_proj)`);
  if (typeof c.attention_dropout === "number" && c.attention_dropout > 0) {
    refuse(`attention_dropout is ${c.attention_dropout} (transformers drops attention probabilities while training; only 0 is supported)`);
  }
  if (c.tie_word_embeddings === false) refuse(`tie_word_embeddings is false (a separate lm_head; every released Gemma ties it)`);
  const act = c.hidden_activation;
  if (act !== undefined && act !== null && !TANH_GELU.includes(String(act))) {
    refuse(`hidden_activation is ${JSON.stringify(act)}; only tanh GELU ("gelu_pytorch_tanh") is supported`);
  }
  const ha = c.hidden_act;
  if (ha !== undefined && ha !== null && ![...TANH_GELU, "gelu"].includes(String(ha))) refuse(`hidden_act is ${JSON.stringify(ha)}; only GELU is supported`);
}

export function resolveLayerTypes(c: Raw, generation: 1 | 2 | 3 | 4, n: number, source: string): LayerType[] {
  if (generation === 1) return Array(n).fill("full");
  const lt = c.layer_types;
  if (Array.isArray(lt)) {
    if (lt.length !== n) {
      throw new RangeError(`Cannot use "${source}": layer_types has ${lt.length} entries but num_hidden_layers is ${n}`);
    }
    const types = lt.map((t, i): LayerType => {
      if (t === "sliding_attention") return "sliding";
      if (t === "full_attention") return "full";
      throw new RangeError(`Cannot use "${source}": layer_types[${i}] is ${JSON.stringify(t)}; expected "sliding_attention" or "full_attention"`);
    });
    // transformers' Gemma4TextConfig forces the last layer to full attention.
    if (generation === 4 && n > 0) types[n - 1] = "full";
    return types;
  }
  // Gemma 2: even layers slide, odd are global.
  if (generation === 2) return Array.from({ length: n }, (_, i) => (i % 2 === 0 ? "sliding" : "full"));
  const p = Number(c.sliding_window_pattern ?? c._sliding_window_pattern ?? 6);
  if (!Number.isInteger(p) || p < 1) throw new RangeError(`Cannot use "${source}": sliding_window_pattern must be a positive integer`);
  const types = Array.from({ length: n }, (_, i): LayerType => ((i + 1) % p === 0 ? "full" : "sliding"));
  if (generation === 4 && n > 0) types[n - 1] = "full";
  return types;
}

export interface RopeFields {
  ropeThetaFull: number;
  ropeThetaSliding: number;
  ropeScalingFull: number;
  ropePartialFull: number;
}

export function resolveRope(c: Raw, generation: 1 | 2 | 3 | 4, source: string): RopeFields {
  const params = c.rope_parameters as Record<string, Raw> | undefined;
  if (generation === 4) {
    // Gemma 4 has only the per-layer-type form; its defaults are transformers'.
    const full = (params?.full_attention ?? { rope_type: "proportional", partial_rotary_factor: 0.25, rope_theta: 1e6 }) as Raw;
    const sliding = (params?.sliding_attention ?? { rope_type: "default", rope_theta: 1e4 }) as Raw;
    if ((sliding.rope_type ?? "default") !== "default") {
      throw new RangeError(`Cannot use "${source}": rope_parameters.sliding_attention.rope_type ${JSON.stringify(sliding.rope_type)} is not supported (only "default")`);
    }
    const ft = full.rope_type ?? "default";
    if (ft !== "default" && ft !== "proportional") {
      throw new RangeError(`Cannot use "${source}": rope_parameters.full_attention.rope_type ${JSON.stringify(ft)} is not supported ("proportional" or "default")`);
    }
    const p = ft === "proportional" ? Number(full.partial_rotary_factor ?? 1) : 1;
    if (!(p > 0 && p <= 1)) throw new RangeError(`Cannot use "${source}": partial_rotary_factor must be in (0, 1], got ${JSON.stringify(full.partial_rotary_factor)}`);
    const f = Number(full.factor ?? 1);
    if (!(f > 0)) throw new RangeError(`Cannot use "${source}": rope_parameters.full_attention.factor must be a positive number`);
    return { ropeThetaFull: Number(full.rope_theta ?? 1e6), ropeThetaSliding: Number(sliding.rope_theta ?? 1e4), ropeScalingFull: f, ropePartialFull: p };
  }
  if (params && typeof params === "object") {
    // transformers v5: per layer type, or one flat dict for every layer.
    const flat = "rope_theta" in params || "rope_type" in params;
    const full = (flat ? params : params.full_attention) as Raw | undefined;
    const sliding = (flat ? params : params.sliding_attention) as Raw | undefined;
    if (sliding && (sliding.rope_type ?? "default") !== "default" && !flat) {
      throw new RangeError(`Cannot use "${source}": rope_parameters.sliding_attention.rope_type ${JSON.stringify(sliding.rope_type)} is not supported (only "default")`);
    }
    return {
      ropeThetaFull: Number(full?.rope_theta ?? (generation === 3 ? 1e6 : 1e4)),
      ropeThetaSliding: Number(sliding?.rope_theta ?? 1e4),
      ropeScalingFull: linearFactor(full, source),
      ropePartialFull: 1,
    };
  }
  const theta = Number(c.rope_theta ?? (generation === 3 ? 1e6 : 1e4));
  return {
    ropeThetaFull: theta,
    ropeThetaSliding: generation === 3 ? Number(c.rope_local_base_freq ?? 1e4) : theta,
    ropeScalingFull: linearFactor(c.rope_scaling as Raw | null | undefined, source),
    ropePartialFull: 1,
  };
}

function linearFactor(s: Raw | null | undefined, source: string): number {
  if (!s) return 1;
  const type = s.rope_type ?? s.type ?? "default";
  if (type === "default") return 1;
  if (type !== "linear") throw new RangeError(`Cannot use "${source}": rope scaling type ${JSON.stringify(type)} is not supported (only "linear")`);
  const f = Number(s.factor);
  if (!(f > 0)) throw new RangeError(`Cannot use "${source}": rope scaling factor must be a positive number`);
  return f;
}
