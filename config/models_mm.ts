/**
 * Presets for multimodal Gemma 3 and for Gemma 4 (docs/GEMMA4.md §Presets): tiny random checkpoints
 * with a small fake vision (and audio) tower for tests, and the real architectures' shapes for bench.
 * Real-size Gemma 4 values: transformers' converter configs, the 31B config verbatim (docs/GEMMA4.md
 * §Presets names the sources); Gemma 3 4b/12b/27b: the released config.json text parts.
 */
import { G3_COMMON, type PresetDef, TINY } from "./models.ts";

const T = (n: number, every: number) => Array.from({ length: n }, (_, i) => ((i + 1) % every === 0 ? "full_attention" : "sliding_attention"));

/** A few tensors standing in for a vision tower and projector (their bytes must survive merged exports). */
function fakeVision(prefix: string, H: number): { name: string; shape: number[] }[] {
  return [
    { name: `${prefix}vision_tower.vision_model.embeddings.patch_embedding.weight`, shape: [16, 3, 2, 2] },
    { name: `${prefix}vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.weight`, shape: [16, 16] },
    { name: `${prefix}vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight`, shape: [32, 16] },
    { name: `${prefix}vision_tower.vision_model.post_layernorm.weight`, shape: [16] },
    { name: `${prefix}multi_modal_projector.mm_input_projection_weight`, shape: [16, H] },
    { name: `${prefix}multi_modal_projector.mm_soft_emb_norm.weight`, shape: [16] },
  ];
}

function fakeGemma4Towers(H: number, audio: boolean): { name: string; shape: number[] }[] {
  const out = [
    { name: "model.vision_tower.encoder.layers.0.self_attn.q_proj.linear.weight", shape: [16, 16] },
    { name: "model.vision_tower.patch_embedder.input_proj.weight", shape: [16, 12] },
    { name: "model.embed_vision.embedding_projection.weight", shape: [H, 16] },
  ];
  if (audio) {
    out.push({ name: "model.audio_tower.layers.0.self_attn.q_proj.linear.weight", shape: [16, 16] });
    out.push({ name: "model.embed_audio.embedding_projection.weight", shape: [H, 16] });
  }
  return out;
}

const G3_MM_TOP = {
  architectures: ["Gemma3ForConditionalGeneration"],
  model_type: "gemma3",
  boi_token_index: 255999,
  eoi_token_index: 256000,
  image_token_index: 262144,
  mm_tokens_per_image: 256,
  eos_token_id: [1, 106],
  initializer_range: 0.02,
  vision_config: { model_type: "siglip_vision_model", hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2, image_size: 4, patch_size: 2 },
};

function g3mm(text: Record<string, unknown>, vision = G3_MM_TOP.vision_config): Record<string, unknown> {
  const { architectures: _a, ...t } = { ...G3_COMMON, ...text };
  return { ...G3_MM_TOP, vision_config: vision, text_config: { ...t, model_type: "gemma3_text" } };
}

export function multimodalPresets(): Record<string, PresetDef> {
  const tiny = { ...TINY, vocab_size: 262208, sliding_window: 64, layer_types: ["sliding_attention", "full_attention"], rope_scaling: { rope_type: "linear", factor: 8 } };
  const siglip = { model_type: "siglip_vision_model", hidden_size: 1152, intermediate_size: 4304, num_hidden_layers: 27, num_attention_heads: 16, image_size: 896, patch_size: 14 };
  const big = { vocab_size: 262208, sliding_window: 1024, sliding_window_pattern: 6, rope_scaling: { rope_type: "linear", factor: 8 }, max_position_embeddings: 131072 };
  return {
    // transformers 4.5x layout (what the released files use) and the 5.x one.
    "tiny-3-mm": { generation: 3, dtype: "F32", tokenizer: "gemma3", textPrefix: "language_model.model.", extra: fakeVision("", 64), config: g3mm(tiny) },
    "tiny-3-mm-v5": { generation: 3, dtype: "F32", tokenizer: "gemma3", textPrefix: "model.language_model.", extra: fakeVision("model.", 64), config: g3mm(tiny) },
    "gemma-3-4b": {
      generation: 3,
      dtype: "BF16",
      tokenizer: "gemma3",
      textPrefix: "language_model.model.",
      config: g3mm({ ...big, hidden_size: 2560, intermediate_size: 10240, num_hidden_layers: 34, num_attention_heads: 8, num_key_value_heads: 4 }, siglip),
    },
    "gemma-3-12b": {
      generation: 3,
      dtype: "BF16",
      tokenizer: "gemma3",
      textPrefix: "language_model.model.",
      config: g3mm({ ...big, hidden_size: 3840, intermediate_size: 15360, num_hidden_layers: 48, num_attention_heads: 16, num_key_value_heads: 8 }, siglip),
    },
    "gemma-3-27b": {
      generation: 3,
      dtype: "BF16",
      tokenizer: "gemma3",
      textPrefix: "language_model.model.",
      config: g3mm({
        ...big,
        hidden_size: 5376,
        intermediate_size: 21504,
        num_hidden_layers: 62,
        num_attention_heads: 32,
        num_key_value_heads: 16,
        head_dim: 128,
        query_pre_attn_scalar: 168,
      }, siglip),
    },
  };
}

const G4_TEXT = {
  model_type: "gemma4_text",
  attention_bias: false,
  attention_dropout: 0.0,
  hidden_activation: "gelu_pytorch_tanh",
  bos_token_id: 2,
  eos_token_id: 1,
  pad_token_id: 0,
  rms_norm_eps: 1e-6,
  initializer_range: 0.02,
  final_logit_softcapping: 30.0,
  head_dim: 256,
  global_head_dim: 512,
  vocab_size: 262144,
  tie_word_embeddings: true,
  use_cache: true,
  rope_parameters: {
    sliding_attention: { rope_type: "default", rope_theta: 10000.0 },
    full_attention: { rope_type: "proportional", partial_rotary_factor: 0.25, rope_theta: 1000000.0 },
  },
  attention_k_eq_v: false,
  num_global_key_value_heads: null,
  num_kv_shared_layers: 0,
  use_double_wide_mlp: false,
  hidden_size_per_layer_input: 0,
  vocab_size_per_layer_input: 262144,
  enable_moe_block: false,
  num_experts: null,
  top_k_experts: null,
  moe_intermediate_size: null,
};

/** Gemma4ForCausalLM (text-only repack) or Gemma4ForConditionalGeneration around a text config. */
function g4(text: Record<string, unknown>, multimodal: boolean, audio = false): Record<string, unknown> {
  const t = { ...G4_TEXT, ...text };
  if (!multimodal) return { ...t, architectures: ["Gemma4ForCausalLM"] };
  return {
    architectures: ["Gemma4ForConditionalGeneration"],
    model_type: "gemma4",
    text_config: t,
    eos_token_id: [1, 106],
    vision_config: { model_type: "gemma4_vision", hidden_size: 16 },
    audio_config: audio ? { model_type: "gemma4_audio", hidden_size: 16 } : null,
    boi_token_id: 255999,
    eoi_token_id: 258882,
    image_token_id: 258880,
    audio_token_id: 258881,
    tie_word_embeddings: true,
  };
}

export function gemma4Presets(): Record<string, PresetDef> {
  const tiny = {
    hidden_size: 64,
    intermediate_size: 96,
    num_attention_heads: 4,
    num_key_value_heads: 1,
    head_dim: 16,
    global_head_dim: 32,
    max_position_embeddings: 2048,
    sliding_window: 64,
  };
  // PLE + KV sharing + double-wide MLP (the E2B/E4B machinery): layers 2, 3 reuse layers 0, 1.
  const e = {
    ...tiny,
    num_hidden_layers: 4,
    layer_types: ["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
    num_kv_shared_layers: 2,
    use_double_wide_mlp: true,
    hidden_size_per_layer_input: 8,
  };
  // K=V full layers (12B/26B/31B).
  const kv = {
    ...tiny,
    num_hidden_layers: 3,
    num_key_value_heads: 2,
    layer_types: ["sliding_attention", "sliding_attention", "full_attention"],
    attention_k_eq_v: true,
    num_global_key_value_heads: 1,
  };
  const moe = { ...kv, enable_moe_block: true, num_experts: 4, top_k_experts: 2, moe_intermediate_size: 16 };
  const P = (config: Record<string, unknown>, mm: boolean, extra?: { name: string; shape: number[] }[]): PresetDef => ({
    generation: 4,
    dtype: "F32",
    tokenizer: "gemma3",
    textPrefix: mm ? "model.language_model." : "model.",
    extra,
    config,
  });
  const real = (config: Record<string, unknown>): PresetDef => ({ generation: 4, dtype: "BF16", tokenizer: "gemma3", textPrefix: "model.language_model.", config });
  return {
    "tiny-4": P(g4(e, false), false),
    "tiny-4-mm": P(g4(e, true, true), true, fakeGemma4Towers(64, true)),
    "tiny-4-kv": P(g4(kv, false), false),
    "tiny-4-kv-mm": P(g4(kv, true), true, fakeGemma4Towers(64, false)),
    "tiny-4-moe": P(g4(moe, false), false),
    "tiny-4-moe-mm": P(g4(moe, true), true, fakeGemma4Towers(64, false)),
    "gemma-4-e2b": real(
      g4(
        {
          hidden_size: 1536,
          intermediate_size: 6144,
          num_hidden_layers: 35,
          num_attention_heads: 8,
          num_key_value_heads: 1,
          layer_types: T(35, 5),
          sliding_window: 512,
          max_position_embeddings: 131072,
          num_kv_shared_layers: 20,
          use_double_wide_mlp: true,
          hidden_size_per_layer_input: 256,
        },
        true,
        true,
      ),
    ),
    "gemma-4-e4b": real(
      g4(
        {
          hidden_size: 2560,
          intermediate_size: 10240,
          num_hidden_layers: 42,
          num_attention_heads: 8,
          num_key_value_heads: 2,
          layer_types: T(42, 6),
          sliding_window: 512,
          max_position_embeddings: 131072,
          num_kv_shared_layers: 18,
          hidden_size_per_layer_input: 256,
        },
        true,
        true,
      ),
    ),
    "gemma-4-12b": real(
      g4({
        hidden_size: 3840,
        intermediate_size: 15360,
        num_hidden_layers: 48,
        num_attention_heads: 16,
        num_key_value_heads: 8,
        layer_types: T(48, 6),
        sliding_window: 1024,
        max_position_embeddings: 262144,
        attention_k_eq_v: true,
        num_global_key_value_heads: 1,
        use_bidirectional_attention: "vision",
      }, true),
    ),
    "gemma-4-26b-a4b": real(
      g4({
        hidden_size: 2816,
        intermediate_size: 2112,
        num_hidden_layers: 30,
        num_attention_heads: 16,
        num_key_value_heads: 8,
        layer_types: T(30, 6),
        sliding_window: 1024,
        max_position_embeddings: 262144,
        attention_k_eq_v: true,
        num_global_key_value_heads: 2,
        enable_moe_block: true,
        num_experts: 128,
        top_k_experts: 8,
        moe_intermediate_size: 704,
        use_bidirectional_attention: "vision",
      }, true),
    ),
    "gemma-4-31b": real(
      g4({
        hidden_size: 5376,
        intermediate_size: 21504,
        num_hidden_layers: 60,
        num_attention_heads: 32,
        num_key_value_heads: 16,
        layer_types: T(60, 6),
        sliding_window: 1024,
        max_position_embeddings: 262144,
        attention_k_eq_v: true,
        num_global_key_value_heads: 4,
        use_bidirectional_attention: "vision",
      }, true),
    ),
  };
}
