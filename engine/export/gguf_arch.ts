/**
 * What llama.cpp expects of each Gemma architecture (docs/GGUF.md §2): the architecture name, the
 * hyperparameter keys, how Hugging Face tensor names map to GGUF names, the norm convention, and
 * what llama.cpp hard-codes that a checkpoint may differ from. One row a generation; a new
 * generation (Gemma 4 text) is a new row, not new branches in the writer.
 */
import type { GemmaConfig } from "../gemma/config.ts";
import type { MetaValue } from "./gguf_file.ts";

/** A refusal: llama.cpp would compute something else than the checkpoint does. */
export class GgufUnsupportedError extends RangeError {
  override name = "GgufUnsupportedError";
}

export interface ArchRow {
  arch: string;
  /** HF name → GGUF name (null: not written, e.g. a tied lm_head). */
  tensorName(hf: string): string | null;
  /** Gemma RMSNorm computes x·(1+w); llama.cpp computes x·w, so stored norm weights get +1. */
  normPlusOne: boolean;
  meta(c: GemmaConfig): [string, MetaValue][];
  /** Throws GgufUnsupportedError naming the field; returns warnings for what is only approximate. */
  check(c: GemmaConfig): string[];
}

const LAYER: Record<string, string> = {
  "input_layernorm": "attn_norm",
  "self_attn.q_proj": "attn_q",
  "self_attn.k_proj": "attn_k",
  "self_attn.v_proj": "attn_v",
  "self_attn.o_proj": "attn_output",
  "self_attn.q_norm": "attn_q_norm",
  "self_attn.k_norm": "attn_k_norm",
  "pre_feedforward_layernorm": "ffn_norm",
  "post_feedforward_layernorm": "post_ffw_norm",
  "mlp.gate_proj": "ffn_gate",
  "mlp.up_proj": "ffn_up",
  "mlp.down_proj": "ffn_down",
};

/** Gemma 1 has two norms a layer, and its second one is llama.cpp's ffn_norm; Gemma 2+ have four. */
function namer(postAttention: string) {
  return (hf: string): string | null => {
    if (hf === "model.embed_tokens.weight") return "token_embd.weight";
    if (hf === "model.norm.weight") return "output_norm.weight";
    if (hf === "lm_head.weight") return null;
    const m = /^model\.layers\.(\d+)\.(.+)\.weight$/.exec(hf);
    if (!m) throw new GgufUnsupportedError(`No GGUF name for tensor "${hf}"`);
    const g = m[2] === "post_attention_layernorm" ? postAttention : LAYER[m[2]];
    if (!g) throw new GgufUnsupportedError(`No GGUF name for tensor "${hf}"`);
    return `blk.${m[1]}.${g}.weight`;
  };
}

function common(arch: string, c: GemmaConfig): [string, MetaValue][] {
  return [
    [`${arch}.context_length`, { u32: c.maxPositionEmbeddings }],
    [`${arch}.embedding_length`, { u32: c.hiddenSize }],
    [`${arch}.block_count`, { u32: c.numLayers }],
    [`${arch}.feed_forward_length`, { u32: c.intermediateSize }],
    [`${arch}.attention.head_count`, { u32: c.numHeads }],
    [`${arch}.attention.head_count_kv`, { u32: c.numKvHeads }],
    [`${arch}.attention.key_length`, { u32: c.headDim }],
    [`${arch}.attention.value_length`, { u32: c.headDim }],
    [`${arch}.attention.layer_norm_rms_epsilon`, { f32: c.rmsNormEps }],
  ];
}

/**
 * llama.cpp scales queries by 1/sqrt(head_dim), except for the layer count of the 27B model, where
 * it uses 1/sqrt(hidden/heads); query_pre_attn_scalar is not read.
 */
function checkQueryScale(c: GemmaConfig, layers27b: number | null) {
  const expected = layers27b !== null && c.numLayers === layers27b ? c.hiddenSize / c.numHeads : c.headDim;
  if (Math.abs(c.queryPreAttnScalar - expected) > 1e-6) {
    throw new GgufUnsupportedError(
      `query_pre_attn_scalar is ${c.queryPreAttnScalar}, but llama.cpp scales attention by 1/sqrt(${expected}) for a ${c.numLayers}-layer ${c.modelType} and does not read the field; the GGUF would compute different attention`,
    );
  }
}

/** The period P with layer i sliding iff i mod P < P−1 (llama.cpp's only layer pattern), or null. */
export function slidingPeriod(types: GemmaConfig["layerTypes"], preferred: number): number | null {
  const fits = (p: number) => types.every((t, i) => (i % p < p - 1) === (t === "sliding"));
  if (fits(preferred)) return preferred;
  for (let p = 1; p <= types.length + 1; p++) if (fits(p)) return p;
  return null;
}

function swaPattern(c: GemmaConfig, preferred: number): number {
  const p = slidingPeriod(c.layerTypes, preferred);
  if (p === null) {
    const shown = c.layerTypes.map((t) => (t === "sliding" ? "S" : "F")).join("");
    throw new GgufUnsupportedError(
      `layer_types (${shown}) is not a repeating run of sliding layers ending in one full-attention layer, the only layer pattern llama.cpp's ${c.modelType === "gemma2" ? "gemma2" : "gemma3"} architecture has`,
    );
  }
  return p;
}

/** Gemma 4 has no row yet: its export is refused by name (GgufUnsupportedError). */
export const ARCHS: Partial<Record<GemmaConfig["modelType"], ArchRow>> = {
  gemma: {
    arch: "gemma",
    tensorName: namer("ffn_norm"),
    normPlusOne: true,
    meta: (c) => [...common("gemma", c), ["gemma.rope.freq_base", { f32: c.ropeThetaFull }]],
    check: (c) => (checkQueryScale(c, null), c.ropeScalingFull !== 1 ? [`rope_scaling factor ${c.ropeScalingFull} is not written: llama.cpp's gemma architecture reads no RoPE scaling`] : []),
  },
  gemma2: {
    arch: "gemma2",
    tensorName: namer("post_attention_norm"),
    normPlusOne: true,
    meta: (c) => [
      ...common("gemma2", c),
      ["gemma2.rope.freq_base", { f32: c.ropeThetaFull }],
      ["gemma2.attention.sliding_window", { u32: c.slidingWindow ?? c.maxPositionEmbeddings }],
      ["gemma2.attention.sliding_window_pattern", { u32: swaPattern(c, 2) }],
      ["gemma2.attn_logit_softcapping", { f32: c.attnSoftcap! }],
      ["gemma2.final_logit_softcapping", { f32: c.finalSoftcap! }],
    ],
    check: (c) => {
      checkQueryScale(c, 46);
      // llama.cpp's gemma2 graph always soft-caps (defaults 50 and 30 when the keys are absent).
      if (c.attnSoftcap === null) throw new GgufUnsupportedError("attn_logit_softcapping is null, but llama.cpp's gemma2 architecture always soft-caps attention logits");
      if (c.finalSoftcap === null) throw new GgufUnsupportedError("final_logit_softcapping is null, but llama.cpp's gemma2 architecture always soft-caps the final logits");
      if (c.ropeThetaSliding !== c.ropeThetaFull) throw new GgufUnsupportedError("Gemma 2 with a different RoPE base on sliding layers is not expressible for llama.cpp's gemma2 architecture");
      swaPattern(c, 2);
      return [];
    },
  },
  gemma3_text: {
    arch: "gemma3",
    tensorName: namer("post_attention_norm"),
    normPlusOne: true,
    meta: (c) => {
      const m = [...common("gemma3", c), ["gemma3.rope.freq_base", { f32: c.ropeThetaFull }]] as [string, MetaValue][];
      if (c.slidingWindow !== null) {
        m.push(["gemma3.attention.sliding_window", { u32: c.slidingWindow }]);
        m.push(["gemma3.attention.sliding_window_pattern", { u32: swaPattern(c, 6) }]);
        m.push(["gemma3.rope.freq_base_swa", { f32: c.ropeThetaSliding }]);
      }
      if (c.ropeScalingFull !== 1) {
        m.push(["gemma3.rope.scaling.type", { str: "linear" }]);
        m.push(["gemma3.rope.scaling.factor", { f32: c.ropeScalingFull }]);
      }
      return m;
    },
    check: (c) => {
      checkQueryScale(c, 62);
      const warnings: string[] = [];
      if (c.slidingWindow !== null) {
        const p = swaPattern(c, 6);
        // Older llama.cpp builds hard-code 5 sliding : 1 full and a sliding RoPE base of 10000.
        if (p !== 6) warnings.push(`layer pattern: every ${p}th layer is full attention (llama.cpp's gemma3 default is every 6th); written as gemma3.attention.sliding_window_pattern, which llama.cpp builds before 2025 ignore`);
        if (c.ropeThetaSliding !== 10000) warnings.push(`rope_local_base_freq is ${c.ropeThetaSliding} (llama.cpp's gemma3 default is 10000); written as gemma3.rope.freq_base_swa`);
      }
      return warnings;
    },
  },
};
