/**
 * Test support: a small Gemma 3 text shape with realistic weight scales, shared by the base-precision
 * quality test (engine/quant/quality_test.ts) and the decode quality test (engine/generate_quant_test.ts).
 */
import { type GemmaConfig, normalizeConfig } from "../gemma/config.ts";
import { paramSpecs } from "../gemma/params.ts";
import { rng } from "../lora.ts";

/** 4 layers (3 sliding, 1 full), hidden 256, vocab 2048: big enough for whole 32-wide blocks everywhere. */
export function realisticConfig(name: string): GemmaConfig {
  return normalizeConfig({
    model_type: "gemma3_text",
    hidden_size: 256,
    intermediate_size: 1024,
    num_hidden_layers: 4,
    num_attention_heads: 4,
    num_key_value_heads: 1,
    head_dim: 64,
    query_pre_attn_scalar: 64,
    vocab_size: 2048,
    sliding_window: 16,
    layer_types: ["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"],
  }, name);
}

/**
 * Realistic scales: projections of std 0.02 (initializer_range) with heavy tails (1 % of weights
 * 8× larger, as trained LLM weights have outlier channels, the case absmax blocks handle worst),
 * embeddings of std 0.05, and norm gains of 1–1.5 (trained norms are not the identity), so the fp32
 * model's next-token distributions are peaked (NLLs spread over several nats), not uniform.
 */
export function realisticWeights(c: GemmaConfig, seed: number): Map<string, Float32Array> {
  const r = rng(seed);
  const normal = () => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
  const w = new Map<string, Float32Array>();
  for (const s of paramSpecs(c)) {
    const a = new Float32Array(s.shape.reduce((x, y) => x * y, 1));
    for (let i = 0; i < a.length; i++) {
      if (s.kind === "norm") a[i] = 0.5 * r(); // (1 + w): gains of 1–1.5
      else if (s.kind === "embedding") a[i] = 0.05 * normal();
      else a[i] = 0.02 * normal() * (r() < 0.01 ? 8 : 1);
    }
    w.set(s.name, a);
  }
  return w;
}
