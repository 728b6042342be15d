/** Config normalisation for every spelling in docs/GEMMA.md §Config, and refusals that say what is supported. */
import { normalizeConfig } from "./config.ts";
import { countParams } from "./params.ts";

function eq(a: unknown, b: unknown, label: string) {
  if (JSON.stringify(a) !== JSON.stringify(b)) throw new Error(`${label}: expected ${JSON.stringify(b)}, got ${JSON.stringify(a)}`);
}

const G3_270M = {
  _sliding_window_pattern: 6,
  architectures: ["Gemma3ForCausalLM"],
  attn_logit_softcapping: null,
  final_logit_softcapping: null,
  head_dim: 256,
  hidden_activation: "gelu_pytorch_tanh",
  hidden_size: 640,
  intermediate_size: 2048,
  layer_types: [...Array(18)].map((_, i) => ((i + 1) % 6 === 0 ? "full_attention" : "sliding_attention")),
  max_position_embeddings: 32768,
  model_type: "gemma3_text",
  num_attention_heads: 4,
  num_hidden_layers: 18,
  num_key_value_heads: 1,
  query_pre_attn_scalar: 256,
  rms_norm_eps: 1e-6,
  rope_local_base_freq: 10000.0,
  rope_scaling: null,
  rope_theta: 1000000.0,
  sliding_window: 512,
  vocab_size: 262144,
  eos_token_id: 1,
  use_bidirectional_attention: false,
};

Deno.test("gemma-3-270m (v4 spelling with layer_types): bases, window, full layers 5/11/17, exact parameter count", () => {
  const c = normalizeConfig(G3_270M, "270m");
  eq(c.generation, 3, "generation");
  eq(c.layerTypes.map((t, i) => (t === "full" ? i : -1)).filter((i) => i >= 0), [5, 11, 17], "full layers");
  eq([c.ropeThetaFull, c.ropeThetaSliding, c.ropeScalingFull, c.slidingWindow], [1e6, 1e4, 1, 512], "rope/window");
  eq([c.attnSoftcap, c.finalSoftcap, c.queryPreAttnScalar], [null, null, 256], "caps/scalar");
  eq(countParams(c), 268098176, "parameters (docs/GEMMA.md §Parameters)");
});

Deno.test("gemma-3-1b with sliding_window_pattern (no layer_types): globals 5, 11, 17, 23; count", () => {
  const { layer_types: _l, _sliding_window_pattern: _p, ...rest } = G3_270M;
  const c = normalizeConfig({ ...rest, sliding_window_pattern: 6, hidden_size: 1152, intermediate_size: 6912, num_hidden_layers: 26, eos_token_id: [1, 106] }, "1b");
  eq(c.layerTypes.map((t, i) => (t === "full" ? i : -1)).filter((i) => i >= 0), [5, 11, 17, 23], "full layers");
  eq(c.eosTokenIds, [1, 106], "eos list");
  eq(countParams(c), 999885952, "parameters (docs/GEMMA.md §Parameters)");
});

Deno.test("transformers v5 rope_parameters per layer type, with linear scaling on full layers only", () => {
  const { rope_theta: _t, rope_local_base_freq: _b, rope_scaling: _s, ...rest } = G3_270M;
  const c = normalizeConfig({
    ...rest,
    rope_parameters: { full_attention: { rope_type: "linear", rope_theta: 1e6, factor: 8 }, sliding_attention: { rope_type: "default", rope_theta: 1e4 } },
  }, "v5");
  eq([c.ropeThetaFull, c.ropeThetaSliding, c.ropeScalingFull], [1e6, 1e4, 8], "v5 rope");
  const v4 = normalizeConfig({ ...G3_270M, rope_scaling: { rope_type: "linear", factor: 8.0 } }, "v4 scaling");
  eq(v4.ropeScalingFull, 8, "v4 rope_scaling");
});

Deno.test("gemma-2-2b: even layers slide, softcaps 50/30, parameter count", () => {
  const c = normalizeConfig({
    model_type: "gemma2",
    attn_logit_softcapping: 50.0,
    final_logit_softcapping: 30.0,
    head_dim: 256,
    hidden_act: "gelu_pytorch_tanh",
    hidden_size: 2304,
    intermediate_size: 9216,
    num_attention_heads: 8,
    num_hidden_layers: 26,
    num_key_value_heads: 4,
    query_pre_attn_scalar: 256,
    rope_theta: 10000.0,
    sliding_window: 4096,
    vocab_size: 256000,
  }, "2-2b");
  eq(c.layerTypes.slice(0, 4), ["sliding", "full", "sliding", "full"], "layer types");
  eq([c.attnSoftcap, c.finalSoftcap, c.slidingWindow, c.ropeThetaSliding], [50, 30, 4096, 10000], "caps");
  eq(countParams(c), 2614341888, "parameters (docs/GEMMA.md §Parameters)");
});

Deno.test("gemma-2b / 7b (Gemma 1, hidden_act gelu → tanh GELU anyway): scalar = head_dim, counts", () => {
  const base = { model_type: "gemma", head_dim: 256, hidden_act: "gelu", rope_theta: 10000.0, vocab_size: 256000, rope_scaling: null };
  const c2 = normalizeConfig({ ...base, hidden_size: 2048, intermediate_size: 16384, num_attention_heads: 8, num_hidden_layers: 18, num_key_value_heads: 1 }, "2b");
  eq([c2.queryPreAttnScalar, c2.slidingWindow, c2.layerTypes.every((t) => t === "full")], [256, null, true], "gemma 1");
  eq(countParams(c2), 2506172416, "2b parameters");
  const c7 = normalizeConfig({ ...base, hidden_size: 3072, intermediate_size: 24576, num_attention_heads: 16, num_hidden_layers: 28, num_key_value_heads: 16 }, "7b");
  eq(countParams(c7), 8537680896, "7b parameters");
});

Deno.test("unsupported checkpoints are refused with what is supported", () => {
  for (
    const [raw, re] of [
      [{ model_type: "gemma3", text_config: { model_type: "siglip" } }, /text_config.model_type is "siglip"/],
      [{ model_type: "gemma3n", text_config: {} }, /Gemma 3n/],
      [{ model_type: "gemma3n_text", hidden_size: 8 }, /Gemma 3n/],
      [{ ...G3_270M, quantization_config: { quant_method: "bitsandbytes" } }, /quantized.*bitsandbytes/],
      [{ ...G3_270M, attention_bias: true }, /attention_bias/],
      [{ ...G3_270M, hidden_activation: "silu" }, /hidden_activation is "silu"/],
      [{ ...G3_270M, tie_word_embeddings: false }, /tie_word_embeddings/],
      [{ ...G3_270M, attention_dropout: 0.1 }, /attention_dropout/],
      [{ ...G3_270M, rope_scaling: { rope_type: "yarn", factor: 4 } }, /"yarn" is not supported/],
      [{ model_type: "gemma3_audio" }, /audio model/],
      [{ model_type: "llama", hidden_size: 8 }, /not a Gemma text model.*Supported/],
      [{ ...G3_270M, use_bidirectional_attention: true }, /bidirectional/],
      [{ ...G3_270M, layer_types: ["sliding_attention"] }, /layer_types has 1 entries/],
      [{ ...G3_270M, hidden_size: "big" }, /hidden_size/],
    ] as [Record<string, unknown>, RegExp][]
  ) {
    let msg = "";
    try {
      normalizeConfig(raw, "cfg.json");
    } catch (e) {
      msg = (e as Error).message;
    }
    if (!re.test(msg) || !msg.includes("cfg.json")) throw new Error(`expected ${re}, got "${msg}"`);
  }
});

Deno.test("soft-caps follow transformers: Gemma 3 CausalLM applies final_logit_softcapping, never the attention cap; the multimodal class neither", () => {
  const capped = { ...G3_270M, attn_logit_softcapping: 50, final_logit_softcapping: 30 };
  const c = normalizeConfig(capped, "g3 caps");
  eq([c.attnSoftcap, c.finalSoftcap], [null, 30], "Gemma3ForCausalLM");
  const mm = normalizeConfig({ model_type: "gemma3", architectures: ["Gemma3ForConditionalGeneration"], text_config: capped, vision_config: {} }, "g3 mm");
  eq([mm.attnSoftcap, mm.finalSoftcap, mm.multimodal, mm.architecture], [null, null, true, "Gemma3ForConditionalGeneration"], "Gemma3ForConditionalGeneration");
  const g2 = normalizeConfig({ ...capped, model_type: "gemma2" }, "g2 caps");
  eq([g2.attnSoftcap, g2.finalSoftcap], [50, 30], "Gemma 2");
});

Deno.test("multimodal Gemma 3 (4b): text_config nested, wrapper token ids, 262208 vocab, parameter count of the text decoder", () => {
  const { vocab_size: _v, eos_token_id: _e, ...text } = G3_270M;
  const c = normalizeConfig({
    model_type: "gemma3",
    architectures: ["Gemma3ForConditionalGeneration"],
    eos_token_id: [1, 106],
    text_config: {
      ...text,
      model_type: "gemma3_text",
      hidden_size: 2560,
      intermediate_size: 10240,
      num_hidden_layers: 34,
      num_attention_heads: 8,
      num_key_value_heads: 4,
      layer_types: undefined,
      sliding_window: 1024,
      rope_scaling: { rope_type: "linear", factor: 8 },
      vocab_size: 262208,
    },
    vision_config: { model_type: "siglip_vision_model" },
  }, "4b");
  eq(
    [c.generation, c.multimodal, c.vocabSize, c.eosTokenIds, c.slidingWindow, c.ropeScalingFull, c.textPrefix],
    [3, true, 262208, [1, 106], 1024, 8, "language_model.model."],
    "4b",
  );
  // By hand: 262208·2560 embedding + 34 × (q, o 2048·2560 and k, v 1024·2560 = 3·5242880; MLP 3·10240·2560; norms 4·2560 + 2·256) + 2560.
  eq(countParams(c), 671252480 + 34 * (3 * 5242880 + 78643200 + 10752) + 2560, "text decoder parameters of gemma-3-4b");
});

Deno.test("Gemma 4 presets: E2B/E4B KV sources (13/14, 22/23), layer patterns, double-wide MLP; 31B K=V geometry", async () => {
  const { presetConfig } = await import("../init_model.ts");
  const e2b = presetConfig("gemma-4-e2b").config;
  eq(e2b.layers.map((l, i) => (l.kvSource === i ? -1 : l.kvSource)).slice(15), [13, 13, 13, 13, 14, 13, 13, 13, 13, 14, 13, 13, 13, 13, 14, 13, 13, 13, 13, 14], "E2B KV sources");
  eq([e2b.layers[14].intermediate, e2b.layers[15].intermediate, e2b.ple, e2b.normOffset, e2b.queryPreAttnScalar, e2b.finalSoftcap], [
    6144,
    12288,
    { dim: 256, vocab: 262144 },
    0,
    1,
    30,
  ], "E2B");
  eq(e2b.layerTypes.map((t, i) => (t === "full" ? i : -1)).filter((i) => i >= 0), [4, 9, 14, 19, 24, 29, 34], "E2B full layers");
  const e4b = presetConfig("gemma-4-e4b").config;
  eq([e4b.layers[24].kvSource, e4b.layers[29].kvSource, e4b.layers[23].kvSource], [22, 23, 23], "E4B KV sources");
  const b31 = presetConfig("gemma-4-31b").config;
  const full = b31.layers[5], sl = b31.layers[4];
  eq([full.headDim, full.kvHeads, full.kEqV, sl.headDim, sl.kvHeads, sl.kEqV, b31.ropePartialFull, b31.ropeThetaFull], [512, 4, true, 256, 16, false, 0.25, 1e6], "31B geometry");
  eq(countParams(presetConfig("gemma-4-26b-a4b").config) > 25e9, true, "26B-A4B size");
});

Deno.test("Gemma 4 proportional RoPE: full layers turn channels 0–63 and 256–319 with inv_freq over the whole 512 (spec values)", async () => {
  const { presetConfig } = await import("../init_model.ts");
  const { ropeTables } = await import("./model.ts");
  const c = presetConfig("gemma-4-31b").config;
  const { cos, sin } = ropeTables(c, "full", 2); // position 1: angle = inv_freq
  const D = 512;
  const ang = (j: number) => Math.atan2(sin[D + j], cos[D + j]);
  for (const [j, want] of [[0, 1], [1, 0.947463525655], [2, 0.897687132447], [63, 0.033376246943]] as const) {
    if (Math.abs(ang(j) - want) > 1e-6 || Math.abs(ang(j + 256) - want) > 1e-6) throw new Error(`full inv_freq[${j}] = ${ang(j)}, expected ${want}`);
  }
  for (const j of [64, 100, 255]) if (cos[D + j] !== 1 || sin[D + j] !== 0) throw new Error(`channel ${j} should not rotate`);
  const s = ropeTables(c, "sliding", 2);
  if (Math.abs(Math.atan2(s.sin[256 + 1], s.cos[256 + 1]) - 0.93057204093) > 1e-6) throw new Error("sliding inv_freq[1]");
  let msg = "";
  try {
    normalizeConfig({ ...(c.raw.text_config as object), use_bidirectional_attention: "all" }, "g4");
  } catch (e) {
    msg = (e as Error).message;
  }
  if (!/use_bidirectional_attention is "all"/.test(msg)) throw new Error(`"all" not refused: ${msg}`);
});
