/**
 * Model presets for `init-model`: tiny random models for tests and the demo, and the real
 * architectures' shapes (docs/GEMMA.md §Parameters) for benchmarks. Values are config.json fields.
 */

import { gemma4Presets, multimodalPresets } from "./models_mm.ts";

export type Preset = Record<string, unknown>;

export const G3_COMMON = {
  architectures: ["Gemma3ForCausalLM"],
  model_type: "gemma3_text",
  attention_bias: false,
  attention_dropout: 0.0,
  attn_logit_softcapping: null,
  final_logit_softcapping: null,
  hidden_activation: "gelu_pytorch_tanh",
  bos_token_id: 2,
  eos_token_id: [1, 106],
  pad_token_id: 0,
  rms_norm_eps: 1e-6,
  initializer_range: 0.02,
  rope_local_base_freq: 10000.0,
  rope_theta: 1000000.0,
  rope_scaling: null,
  use_bidirectional_attention: false,
  query_pre_attn_scalar: 256,
  head_dim: 256,
  max_position_embeddings: 32768,
  vocab_size: 262144,
  use_cache: true,
};
const G2_COMMON = {
  architectures: ["Gemma2ForCausalLM"],
  model_type: "gemma2",
  attention_bias: false,
  attention_dropout: 0.0,
  attn_logit_softcapping: 50.0,
  final_logit_softcapping: 30.0,
  hidden_act: "gelu_pytorch_tanh",
  hidden_activation: "gelu_pytorch_tanh",
  bos_token_id: 2,
  eos_token_id: 1,
  pad_token_id: 0,
  rms_norm_eps: 1e-6,
  initializer_range: 0.02,
  rope_theta: 10000.0,
  query_pre_attn_scalar: 256,
  head_dim: 256,
  sliding_window: 4096,
  max_position_embeddings: 8192,
  vocab_size: 256000,
  use_cache: true,
};
const G1_COMMON = {
  architectures: ["GemmaForCausalLM"],
  model_type: "gemma",
  attention_bias: false,
  attention_dropout: 0.0,
  hidden_act: "gelu",
  bos_token_id: 2,
  eos_token_id: 1,
  pad_token_id: 0,
  rms_norm_eps: 1e-6,
  initializer_range: 0.02,
  rope_theta: 10000.0,
  rope_scaling: null,
  head_dim: 256,
  max_position_embeddings: 8192,
  vocab_size: 256000,
  use_cache: true,
};

/** Tiny shapes shared by the `tiny` presets: every generation, the real Gemma 3 tokenizer (vocab 262144). */
export const TINY = {
  hidden_size: 64,
  intermediate_size: 128,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 1,
  head_dim: 16,
  query_pre_attn_scalar: 16,
  vocab_size: 262144,
  max_position_embeddings: 2048,
};

/** A preset: config.json fields, the stored dtype, and for multimodal checkpoints where the text goes and the fake towers. */
export interface PresetDef {
  generation: 1 | 2 | 3 | 4;
  config: Preset;
  dtype: "F32" | "BF16";
  tokenizer: "gemma3";
  /** Prefix of the text decoder's tensors (default "model."). */
  textPrefix?: string;
  /** Tensors outside the text decoder (a small fake vision/audio tower), written random in BF16. */
  extra?: { name: string; shape: number[] }[];
}

export const PRESETS: Record<string, PresetDef> = {
  "tiny-3": { generation: 3, dtype: "F32", tokenizer: "gemma3", config: { ...G3_COMMON, ...TINY, sliding_window: 64, layer_types: ["sliding_attention", "full_attention"] } },
  "tiny-2": { generation: 2, dtype: "F32", tokenizer: "gemma3", config: { ...G2_COMMON, ...TINY, sliding_window: 64, eos_token_id: [1, 106] } },
  "tiny-1": { generation: 1, dtype: "F32", tokenizer: "gemma3", config: { ...G1_COMMON, ...TINY, eos_token_id: [1, 106] } },
  "gemma-3-270m": {
    generation: 3,
    dtype: "BF16",
    tokenizer: "gemma3",
    config: {
      ...G3_COMMON,
      hidden_size: 640,
      intermediate_size: 2048,
      num_hidden_layers: 18,
      num_attention_heads: 4,
      num_key_value_heads: 1,
      sliding_window: 512,
      _sliding_window_pattern: 6,
    },
  },
  "gemma-3-1b": {
    generation: 3,
    dtype: "BF16",
    tokenizer: "gemma3",
    config: {
      ...G3_COMMON,
      hidden_size: 1152,
      intermediate_size: 6912,
      num_hidden_layers: 26,
      num_attention_heads: 4,
      num_key_value_heads: 1,
      sliding_window: 512,
      sliding_window_pattern: 6,
    },
  },
  "gemma-2-2b": {
    generation: 2,
    dtype: "BF16",
    tokenizer: "gemma3",
    config: { ...G2_COMMON, hidden_size: 2304, intermediate_size: 9216, num_hidden_layers: 26, num_attention_heads: 8, num_key_value_heads: 4, vocab_size: 262144 },
  },
  "gemma-2-9b": {
    generation: 2,
    dtype: "BF16",
    tokenizer: "gemma3",
    config: { ...G2_COMMON, hidden_size: 3584, intermediate_size: 14336, num_hidden_layers: 42, num_attention_heads: 16, num_key_value_heads: 8 },
  },
  "gemma-2b": {
    generation: 1,
    dtype: "BF16",
    tokenizer: "gemma3",
    config: { ...G1_COMMON, hidden_size: 2048, intermediate_size: 16384, num_hidden_layers: 18, num_attention_heads: 8, num_key_value_heads: 1, vocab_size: 262144 },
  },
};

Object.assign(PRESETS, multimodalPresets(), gemma4Presets());

/** The built-in `demo` model: a tiny Gemma 3 whose embeddings are large enough for LoRA to move the logits. */
export const DEMO = { preset: "tiny-3", seed: 1234, embedStd: 0.5 };
