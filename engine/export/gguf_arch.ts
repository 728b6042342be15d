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
  /** The GGUF shape (row-major, HF order) of a checkpoint tensor where it differs (Gemma 4: a padded PLE table). */
  shapeOf?(c: GemmaConfig, hf: string, shape: number[]): number[];
  /** The tensor's data as written, where it differs from the checkpoint's (same order as shapeOf). */
  dataOf?(c: GemmaConfig, hf: string, w: Float32Array): Float32Array;
  /** Tensors llama.cpp needs that the checkpoint does not store (Gemma 4: rope_freqs). */
  extraTensors?(c: GemmaConfig): { name: string; shape: number[]; data: Float32Array }[];
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
      `layer_types (${shown}) is not a repeating run of sliding layers ending in one full-attention layer, the only layer pattern llama.cpp's ${
        c.modelType === "gemma2" ? "gemma2" : "gemma3"
      } architecture has`,
    );
  }
  return p;
}

/** Gemma 4 tensors outside the layers; inside them, the Gemma 2/3 names plus PLE, layer_scalar and MoE. */
const GEMMA4_GLOBAL: Record<string, string> = {
  "model.embed_tokens.weight": "token_embd.weight",
  "model.norm.weight": "output_norm.weight",
  "model.embed_tokens_per_layer.weight": "per_layer_token_embd.weight",
  "model.per_layer_model_projection.weight": "per_layer_model_proj.weight",
  "model.per_layer_projection_norm.weight": "per_layer_proj_norm.weight",
};
const GEMMA4_LAYER: Record<string, string> = {
  ...Object.fromEntries(Object.entries(LAYER).map(([hf, g]) => [`${hf}.weight`, `${g}.weight`])),
  "post_attention_layernorm.weight": "post_attention_norm.weight",
  "pre_feedforward_layernorm_2.weight": "pre_ffw_norm_2.weight",
  "post_feedforward_layernorm_1.weight": "post_ffw_norm_1.weight",
  "post_feedforward_layernorm_2.weight": "post_ffw_norm_2.weight",
  "per_layer_input_gate.weight": "inp_gate.weight",
  "per_layer_projection.weight": "proj.weight",
  "post_per_layer_input_norm.weight": "post_norm.weight",
  "layer_scalar": "layer_output_scale.weight",
  // The router's proj/scale; the per-expert scale multiplies each expert's output, as llama.cpp's
  // down-projection scale does; the 3-D expert tensors keep their layout ([E, 2I, H]: gate rows, then up).
  "router.proj.weight": "ffn_gate_inp.weight",
  "router.scale": "ffn_gate_inp.scale",
  "router.per_expert_scale": "ffn_down_exps.scale",
  "experts.gate_up_proj": "ffn_gate_up_exps.weight",
  "experts.down_proj": "ffn_down_exps.weight",
};

function gemma4Name(hf: string): string | null {
  if (hf === "lm_head.weight") return null;
  if (hf in GEMMA4_GLOBAL) return GEMMA4_GLOBAL[hf];
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(hf);
  const g = m && GEMMA4_LAYER[m[2]];
  if (!g) throw new GgufUnsupportedError(`No GGUF name for Gemma 4 tensor "${hf}"`);
  return `blk.${m[1]}.${g}`;
}

/** The head dim of each layer type (llama.cpp has one per type: key_length and key_length_swa). */
function gemma4HeadDims(c: GemmaConfig): { swa: number; full: number } {
  const of = (t: "sliding" | "full") => [...new Set(c.layers.filter((l) => (l.type === "sliding") === (t === "sliding")).map((l) => l.headDim))];
  const swa = of("sliding"), full = of("full");
  if (swa.length === 0) {
    throw new GgufUnsupportedError("layer_types has no sliding_attention layer, but llama.cpp's gemma4 architecture always builds a sliding-window cache and needs one");
  }
  if (swa.length > 1 || full.length > 1) {
    throw new GgufUnsupportedError(
      `per-layer head dims differ within a layer type (sliding ${swa.join("/")}, full ${full.join("/")}); llama.cpp's gemma4 architecture has one head dim per type`,
    );
  }
  return { swa: swa[0], full: full[0] ?? swa[0] };
}

/** Layers from here on reuse earlier layers' keys/values (c.numLayers when none do). */
function gemma4FirstShared(c: GemmaConfig): number {
  const i = c.layers.findIndex((l, j) => l.kvSource !== j);
  return i < 0 ? c.numLayers : i;
}

const GEMMA4: ArchRow = {
  arch: "gemma4",
  tensorName: gemma4Name,
  // Gemma 4's RMSNorm multiplies by the stored weight itself, as llama.cpp does.
  normPlusOne: false,
  meta: (c) => {
    const A = "gemma4";
    const hd = gemma4HeadDims(c);
    const first = gemma4FirstShared(c);
    const m: [string, MetaValue][] = [
      [`${A}.context_length`, { u32: c.maxPositionEmbeddings }],
      [`${A}.embedding_length`, { u32: c.hiddenSize }],
      [`${A}.block_count`, { u32: c.numLayers }],
      [`${A}.feed_forward_length`, { i32s: c.layers.map((l) => l.intermediate) }],
      [`${A}.attention.head_count`, { u32: c.numHeads }],
      [`${A}.attention.head_count_kv`, { i32s: c.layers.map((l) => l.kvHeads) }],
      [`${A}.attention.key_length`, { u32: hd.full }],
      [`${A}.attention.value_length`, { u32: hd.full }],
      [`${A}.attention.key_length_swa`, { u32: hd.swa }],
      [`${A}.attention.value_length_swa`, { u32: hd.swa }],
      [`${A}.attention.layer_norm_rms_epsilon`, { f32: c.rmsNormEps }],
      [`${A}.attention.sliding_window`, { u32: c.slidingWindow ?? c.maxPositionEmbeddings }],
      [`${A}.attention.sliding_window_pattern`, { bools: c.layers.map((l) => l.type === "sliding") }],
      [`${A}.attention.shared_kv_layers`, { u32: c.numLayers - first }],
      [`${A}.embedding_length_per_layer_input`, { u32: c.ple?.dim ?? 0 }],
      // Full layers rotate over the whole head dim; rope_freqs (below) stills the pairs past the partial factor.
      [`${A}.rope.dimension_count`, { u32: hd.full }],
      [`${A}.rope.dimension_count_swa`, { u32: hd.swa }],
      [`${A}.rope.freq_base`, { f32: c.ropeThetaFull }],
      [`${A}.rope.freq_base_swa`, { f32: c.ropeThetaSliding }],
    ];
    if (c.finalSoftcap !== null) m.push([`${A}.final_logit_softcapping`, { f32: c.finalSoftcap }]);
    if (c.moe) {
      m.push([`${A}.expert_count`, { u32: c.moe.experts }]);
      m.push([`${A}.expert_used_count`, { u32: c.moe.topK }]);
      m.push([`${A}.expert_feed_forward_length`, { u32: c.moe.intermediate }]);
    }
    return m;
  },
  check: (c) => {
    gemma4HeadDims(c);
    // llama.cpp's gemma4 graph: attention scale 1.0, no attention soft-cap, plain-weight norms.
    if (c.queryPreAttnScalar !== 1) throw new GgufUnsupportedError(`attention scale is ${c.queryPreAttnScalar}^-0.5, but llama.cpp's gemma4 architecture hard-codes 1.0`);
    if (c.attnSoftcap !== null) throw new GgufUnsupportedError("attn_logit_softcapping is set, but llama.cpp's gemma4 architecture has no attention soft-cap");
    if (c.normOffset !== 0) throw new GgufUnsupportedError("RMSNorm with (1 + w) is not Gemma 4's; llama.cpp's gemma4 architecture multiplies by the weight");
    if (c.ropeScalingFull !== 1) {
      throw new GgufUnsupportedError(
        `rope_parameters.full_attention.factor is ${c.ropeScalingFull}, but llama.cpp's gemma4 architecture would apply a linear RoPE factor to the sliding layers too`,
      );
    }
    // KV sharing: llama.cpp's shared layers take the keys/values of layer first−2 (sliding) or
    // first−1 (full), where transformers takes the last unshared layer of the same type.
    const first = gemma4FirstShared(c);
    for (let i = first; i < c.numLayers; i++) {
      const l = c.layers[i];
      if (l.kvSource === i) {
        throw new GgufUnsupportedError(
          `layer ${i} has its own keys/values after KV-shared layer ${first}; llama.cpp's gemma4 architecture shares the last num_kv_shared_layers layers only`,
        );
      }
      const theirs = first - (l.type === "sliding" ? 2 : 1);
      if (l.kvSource !== theirs) {
        throw new GgufUnsupportedError(
          `num_kv_shared_layers: shared ${l.type} layer ${i} takes keys/values from layer ${l.kvSource}, but llama.cpp's gemma4 architecture takes them from layer ${theirs} (the ${
            l.type === "sliding" ? "second-to-last" : "last"
          } unshared layer); the layer_types before layer ${first} must end sliding, full`,
        );
      }
    }
    const warnings: string[] = [];
    if (c.ple && c.ple.vocab !== c.vocabSize) {
      warnings.push(
        `vocab_size_per_layer_input ${c.ple.vocab} ≠ vocab_size ${c.vocabSize}: per_layer_token_embd is written with ${c.vocabSize} rows, ids past ${c.ple.vocab} using row 0 as transformers does`,
      );
    }
    return warnings;
  },
  // llama.cpp looks the PLE table up with every token id: give it one row per vocabulary entry.
  shapeOf: (c, hf, shape) => (hf === "model.embed_tokens_per_layer.weight" ? [c.vocabSize, shape[1]] : shape),
  dataOf: (c, hf, w) => {
    if (hf !== "model.embed_tokens_per_layer.weight" || !c.ple || c.ple.vocab === c.vocabSize) return w;
    const D = w.length / c.ple.vocab, out = new Float32Array(c.vocabSize * D);
    out.set(w.subarray(0, Math.min(c.ple.vocab, c.vocabSize) * D));
    for (let r = c.ple.vocab; r < c.vocabSize; r++) out.set(w.subarray(0, D), r * D);
    return out;
  },
  // Proportional RoPE: llama.cpp rotates pairs (j, j + D/2) of the full head dim D at base^(-2j/D)
  // divided by rope_freqs[j]; a factor of 1e30 stills the pairs j ≥ ⌊p·D/2⌋.
  extraTensors: (c) => {
    if (!c.layers.some((l) => l.type === "full")) return [];
    const D = gemma4HeadDims(c).full, rotated = Math.floor((c.ropePartialFull * D) / 2);
    return [{ name: "rope_freqs.weight", shape: [D / 2], data: Float32Array.from({ length: D / 2 }, (_, j) => (j < rotated ? 1 : 1e30)) }];
  },
};

/** One row a generation. */
export const ARCHS: Partial<Record<GemmaConfig["modelType"], ArchRow>> = {
  gemma: {
    arch: "gemma",
    tensorName: namer("ffn_norm"),
    normPlusOne: true,
    meta: (c) => [...common("gemma", c), ["gemma.rope.freq_base", { f32: c.ropeThetaFull }]],
    check: (
      c,
    ) => (checkQueryScale(c, null),
      c.ropeScalingFull !== 1 ? [`rope_scaling factor ${c.ropeScalingFull} is not written: llama.cpp's gemma architecture reads no RoPE scaling`] : []),
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
      if (c.ropeThetaSliding !== c.ropeThetaFull) {
        throw new GgufUnsupportedError("Gemma 2 with a different RoPE base on sliding layers is not expressible for llama.cpp's gemma2 architecture");
      }
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
        if (p !== 6) {
          warnings.push(
            `layer pattern: every ${p}th layer is full attention (llama.cpp's gemma3 default is every 6th); written as gemma3.attention.sliding_window_pattern, which llama.cpp builds before 2025 ignore`,
          );
        }
        if (c.ropeThetaSliding !== 10000) {
          warnings.push(`rope_local_base_freq is ${c.ropeThetaSliding} (llama.cpp's gemma3 default is 10000); written as gemma3.rope.freq_base_swa`);
        }
      }
      return warnings;
    },
  },
  gemma4_text: GEMMA4,
};
