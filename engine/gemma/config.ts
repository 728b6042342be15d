/**
 * Gemma config normalisation: every spelling of config.json that transformers v4 and v5 write for
 * Gemma 1, 2 and 3 (text) becomes one GemmaConfig (spec/GEMMA.md §1.6–1.8, §8).
 */

export type LayerType = "sliding" | "full";

export interface GemmaConfig {
  generation: 1 | 2 | 3;
  modelType: "gemma" | "gemma2" | "gemma3_text";
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  /** Attention scores are scaled by queryPreAttnScalar^-0.5 (Gemma 1: head_dim). */
  queryPreAttnScalar: number;
  layerTypes: LayerType[];
  /** W: key k is visible to query q iff k <= q && q - k < W (sliding layers only). */
  slidingWindow: number | null;
  ropeThetaFull: number;
  ropeThetaSliding: number;
  /** Linear RoPE scaling factor on full-attention layers (1 = none). */
  ropeScalingFull: number;
  attnSoftcap: number | null;
  finalSoftcap: number | null;
  maxPositionEmbeddings: number;
  bosTokenId: number;
  eosTokenIds: number[];
  padTokenId: number;
  raw: Record<string, unknown>;
}

const GENERATION: Record<string, 1 | 2 | 3> = { gemma: 1, gemma2: 2, gemma3_text: 3 };
const SUPPORTED = "Supported: Gemma 1 (model_type \"gemma\"), Gemma 2 (\"gemma2\") and Gemma 3 text-only (\"gemma3_text\", e.g. gemma-3-270m, gemma-3-1b)";

/** Normalises a parsed config.json; `source` (the file path) is named in every error. */
export function normalizeConfig(raw: unknown, source: string): GemmaConfig {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new TypeError(`Cannot read "${source}": expected a JSON object`);
  }
  const c = raw as Record<string, unknown>;
  const modelType = c.model_type;
  if (modelType === "gemma3" || "text_config" in c || "vision_config" in c) {
    throw new RangeError(`Cannot use "${source}": multimodal Gemma 3 checkpoints are not supported. ${SUPPORTED}`);
  }
  if (typeof modelType !== "string" || !(modelType in GENERATION)) {
    throw new RangeError(`Cannot use "${source}": model_type ${JSON.stringify(modelType)} is not a Gemma text model. ${SUPPORTED}`);
  }
  if (c.use_bidirectional_attention === true) {
    throw new RangeError(`Cannot use "${source}": use_bidirectional_attention is true (an EmbeddingGemma-style encoder), not a causal LM. ${SUPPORTED}`);
  }
  const generation = GENERATION[modelType];
  const num = (key: string, fallback?: number): number => {
    const v = c[key];
    if (v === undefined || v === null) {
      if (fallback !== undefined) return fallback;
      throw new RangeError(`Cannot use "${source}": field "${key}" is missing`);
    }
    if (typeof v !== "number" || !Number.isFinite(v) || v < 0) {
      throw new RangeError(`Cannot use "${source}": field "${key}" must be a non-negative number, got ${JSON.stringify(v)}`);
    }
    return v;
  };
  const optCap = (key: string): number | null => {
    const v = c[key];
    if (v === undefined || v === null) return null;
    if (typeof v !== "number" || !(v > 0)) throw new RangeError(`Cannot use "${source}": field "${key}" must be a positive number or null`);
    return v;
  };
  const hiddenSize = num("hidden_size");
  const numHeads = num("num_attention_heads");
  const headDim = num("head_dim", numHeads ? Math.floor(hiddenSize / numHeads) : undefined);
  const numLayers = num("num_hidden_layers");
  const numKvHeads = num("num_key_value_heads", numHeads);
  if (numKvHeads < 1 || numHeads % numKvHeads !== 0) {
    throw new RangeError(`Cannot use "${source}": num_attention_heads (${numHeads}) must be a multiple of num_key_value_heads (${numKvHeads})`);
  }

  const layerTypes = resolveLayerTypes(c, generation, numLayers, source);
  const rope = resolveRope(c, generation, source);
  const slidingWindow = generation === 1 ? null : num("sliding_window", generation === 2 ? 4096 : 512);
  const eos = c.eos_token_id;
  const eosTokenIds = Array.isArray(eos) ? eos.map(Number) : typeof eos === "number" ? [eos] : [1];
  return {
    generation,
    modelType: modelType as GemmaConfig["modelType"],
    vocabSize: num("vocab_size"),
    hiddenSize,
    intermediateSize: num("intermediate_size"),
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: num("rms_norm_eps", 1e-6),
    queryPreAttnScalar: generation === 1 ? headDim : num("query_pre_attn_scalar", headDim),
    layerTypes,
    slidingWindow: layerTypes.includes("sliding") ? slidingWindow : null,
    ...rope,
    attnSoftcap: generation === 2 ? optCap("attn_logit_softcapping") : null,
    finalSoftcap: generation === 2 ? optCap("final_logit_softcapping") : null,
    maxPositionEmbeddings: num("max_position_embeddings", 8192),
    bosTokenId: num("bos_token_id", 2),
    eosTokenIds,
    padTokenId: num("pad_token_id", 0),
    raw: c,
  };
}

function resolveLayerTypes(c: Record<string, unknown>, generation: 1 | 2 | 3, n: number, source: string): LayerType[] {
  if (generation === 1) return Array(n).fill("full");
  const lt = c.layer_types;
  if (Array.isArray(lt)) {
    if (lt.length !== n) {
      throw new RangeError(`Cannot use "${source}": layer_types has ${lt.length} entries but num_hidden_layers is ${n}`);
    }
    return lt.map((t, i) => {
      if (t === "sliding_attention") return "sliding";
      if (t === "full_attention") return "full";
      throw new RangeError(`Cannot use "${source}": layer_types[${i}] is ${JSON.stringify(t)}; expected "sliding_attention" or "full_attention"`);
    });
  }
  // Gemma 2: even layers slide, odd are global.
  if (generation === 2) return Array.from({ length: n }, (_, i) => (i % 2 === 0 ? "sliding" : "full"));
  const p = Number(c.sliding_window_pattern ?? c._sliding_window_pattern ?? 6);
  if (!Number.isInteger(p) || p < 1) throw new RangeError(`Cannot use "${source}": sliding_window_pattern must be a positive integer`);
  return Array.from({ length: n }, (_, i) => ((i + 1) % p === 0 ? "full" : "sliding"));
}

function resolveRope(c: Record<string, unknown>, generation: 1 | 2 | 3, source: string) {
  const params = c.rope_parameters as Record<string, Record<string, unknown>> | undefined;
  if (params && typeof params === "object") {
    // transformers v5: per layer type, or one flat dict for every layer.
    const flat = "rope_theta" in params || "rope_type" in params;
    const full = (flat ? params : params.full_attention) as Record<string, unknown> | undefined;
    const sliding = (flat ? params : params.sliding_attention) as Record<string, unknown> | undefined;
    return {
      ropeThetaFull: Number(full?.rope_theta ?? (generation === 3 ? 1e6 : 1e4)),
      ropeThetaSliding: Number(sliding?.rope_theta ?? 1e4),
      ropeScalingFull: linearFactor(full, source),
    };
  }
  const theta = Number(c.rope_theta ?? (generation === 3 ? 1e6 : 1e4));
  return {
    ropeThetaFull: theta,
    ropeThetaSliding: generation === 3 ? Number(c.rope_local_base_freq ?? 1e4) : theta,
    ropeScalingFull: linearFactor(c.rope_scaling as Record<string, unknown> | null | undefined, source),
  };
}

function linearFactor(s: Record<string, unknown> | null | undefined, source: string): number {
  if (!s) return 1;
  const type = s.rope_type ?? s.type ?? "default";
  if (type === "default") return 1;
  if (type !== "linear") throw new RangeError(`Cannot use "${source}": rope scaling type ${JSON.stringify(type)} is not supported (only "linear")`);
  const f = Number(s.factor);
  if (!(f > 0)) throw new RangeError(`Cannot use "${source}": rope scaling factor must be a positive number`);
  return f;
}
