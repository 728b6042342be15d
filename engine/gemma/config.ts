/**
 * Gemma config normalisation: every spelling of config.json that transformers v4 and v5 write for
 * Gemma 1, 2, 3 (text-only and the multimodal wrapper's text part) and Gemma 4 becomes one
 * GemmaConfig. Which field does what, per generation, and why: docs/GEMMA4.md ("Config fields").
 * Gemma 4's own fields are read in config_gemma4.ts.
 */
import { gemma4Fields } from "./config_gemma4.ts";
import { type LayerSpec, layerSpecs, type LayerType, refuseUnsupported, resolveLayerTypes, resolveRope } from "./config_fields.ts";

export type { LayerSpec, LayerType };

export interface GemmaConfig {
  generation: 1 | 2 | 3 | 4;
  modelType: "gemma" | "gemma2" | "gemma3_text" | "gemma4_text";
  /** architectures[0] of the config.json (the class transformers builds). */
  architecture: string;
  /** The text decoder sits inside a multimodal checkpoint (Gemma3/Gemma4ForConditionalGeneration). */
  multimodal: boolean;
  /**
   * Checkpoint prefix of the text model's tensors, replacing the internal "model.": "model." for a
   * CausalLM, "language_model.model." or "model.language_model." in multimodal checkpoints (set by
   * the loader from the tensor names; normalizeConfig gives the likeliest).
   */
  textPrefix: string;
  vocabSize: number;
  hiddenSize: number;
  /** Defaults of the sliding (or only) layer type; per-layer values are in `layers`. */
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  /** Per layer: type, head dim, KV heads, MLP width, KV source (Gemma 4), K=V. */
  layers: LayerSpec[];
  rmsNormEps: number;
  /** RMSNorm multiplies by (normOffset + w): 1 in Gemma 1–3, 0 in Gemma 4 (plain weight). */
  normOffset: 0 | 1;
  /** Attention scores are scaled by queryPreAttnScalar^-0.5 (Gemma 1: head_dim; Gemma 4: 1, i.e. scale 1.0). */
  queryPreAttnScalar: number;
  /** Gemma 3/4: RMSNorm over each head of q and k; Gemma 4 also a weightless one over v. */
  qkNorm: boolean;
  vNorm: boolean;
  /** Gemma 4: the residual stream is multiplied by layers.<i>.layer_scalar at the end of each layer. */
  layerScalar: boolean;
  /** Gemma 4 E-models: per-layer embeddings of width `dim` from a table of `vocab` rows. */
  ple: { dim: number; vocab: number } | null;
  /** Gemma 4 26B-A4B: experts beside the dense MLP. */
  moe: { experts: number; topK: number; intermediate: number } | null;
  layerTypes: LayerType[];
  /** W: key k is visible to query q iff k <= q && q - k < W (sliding layers only). */
  slidingWindow: number | null;
  ropeThetaFull: number;
  ropeThetaSliding: number;
  /** Linear RoPE scaling factor on full-attention layers (1 = none). */
  ropeScalingFull: number;
  /** Fraction of a full layer's head dim that rotates ("proportional" RoPE, Gemma 4); 1 = all. */
  ropePartialFull: number;
  attnSoftcap: number | null;
  finalSoftcap: number | null;
  maxPositionEmbeddings: number;
  bosTokenId: number;
  eosTokenIds: number[];
  padTokenId: number;
  raw: Record<string, unknown>;
}

const GENERATION: Record<string, 1 | 2 | 3 | 4> = { gemma: 1, gemma2: 2, gemma3_text: 3, gemma4_text: 4 };
export const SUPPORTED =
  'Supported: Gemma 1 (model_type "gemma"), Gemma 2 ("gemma2"), Gemma 3 ("gemma3_text", and the text part of multimodal "gemma3") and Gemma 4 ("gemma4_text", and the text part of multimodal "gemma4" / "gemma4_unified")';
/** Multimodal wrappers whose text part we use: model_type → the text model_type expected inside. */
const WRAPPERS: Record<string, string[]> = { gemma3: ["gemma3_text"], gemma4: ["gemma4_text"], gemma4_unified: ["gemma4_unified_text", "gemma4_text"] };

type Raw = Record<string, unknown>;

/** Normalises a parsed config.json; `source` (the file path) is named in every error. */
export function normalizeConfig(raw: unknown, source: string): GemmaConfig {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new SyntaxError(`Cannot read "${source}": expected a JSON object`);
  }
  const top = raw as Raw;
  refuseUnsupported(top, source);
  let c = top, multimodal = false;
  const topType = top.model_type;
  if (typeof topType === "string" && topType in WRAPPERS) {
    const tc = top.text_config;
    if (typeof tc !== "object" || tc === null) throw new RangeError(`Cannot use "${source}": a "${topType}" config needs a "text_config" object`);
    const inner = (tc as Raw).model_type ?? WRAPPERS[topType][0];
    if (!WRAPPERS[topType].includes(String(inner))) {
      throw new RangeError(`Cannot use "${source}": text_config.model_type is ${JSON.stringify(inner)}, expected ${WRAPPERS[topType].map((t) => `"${t}"`).join(" or ")}`);
    }
    refuseUnsupported(tc as Raw, `${source} (text_config)`);
    // The wrapper's top-level token ids apply when text_config leaves them out.
    c = {
      ...pick(top, ["bos_token_id", "eos_token_id", "pad_token_id", "tie_word_embeddings"]),
      ...(tc as Raw),
      model_type: String(inner) === "gemma4_unified_text" ? "gemma4_text" : String(inner),
    };
    multimodal = true;
  } else if ("text_config" in top || "vision_config" in top) {
    throw new RangeError(`Cannot use "${source}": model_type ${JSON.stringify(topType)} with a text_config is not a Gemma checkpoint we know. ${SUPPORTED}`);
  }
  const modelType = c.model_type;
  if (typeof modelType !== "string" || !(modelType in GENERATION)) {
    throw new RangeError(`Cannot use "${source}": model_type ${JSON.stringify(modelType)} is not a Gemma text model. ${SUPPORTED}`);
  }
  const generation = GENERATION[modelType];
  const ub = c.use_bidirectional_attention;
  // Gemma 4 "vision" only changes masks around image tokens, so text stays causal.
  if (ub === true || ub === "all") {
    throw new RangeError(`Cannot use "${source}": use_bidirectional_attention is ${JSON.stringify(ub)} (an encoder), not a causal LM. ${SUPPORTED}`);
  }
  const num = numReader(c, source);
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
  const intermediateSize = num("intermediate_size");
  const layerTypes = resolveLayerTypes(c, generation, numLayers, source);
  const rope = resolveRope(c, generation, source);
  const slidingWindow = generation === 1 ? null : num("sliding_window", generation === 2 ? 4096 : 512);
  const eos = c.eos_token_id;
  const eosTokenIds = Array.isArray(eos) ? eos.map(Number) : typeof eos === "number" ? [eos] : [1];
  const g4 = generation === 4 ? gemma4Fields(c, source, { numLayers, numHeads, numKvHeads, headDim, intermediateSize, layerTypes }) : null;
  const architecture = Array.isArray(top.architectures) && typeof top.architectures[0] === "string"
    ? top.architectures[0]
    : multimodal
    ? (generation === 4 ? "Gemma4ForConditionalGeneration" : "Gemma3ForConditionalGeneration")
    : `Gemma${generation === 1 ? "" : generation}ForCausalLM`;
  return {
    generation,
    modelType: modelType as GemmaConfig["modelType"],
    architecture,
    multimodal,
    textPrefix: multimodal ? (generation === 4 ? "model.language_model." : "language_model.model.") : "model.",
    vocabSize: num("vocab_size"),
    hiddenSize,
    intermediateSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    layers: g4?.layers ?? layerSpecs(layerTypes, headDim, numKvHeads, intermediateSize),
    rmsNormEps: num("rms_norm_eps", 1e-6),
    normOffset: generation === 4 ? 0 : 1,
    queryPreAttnScalar: generation === 1 ? headDim : generation === 4 ? 1 : num("query_pre_attn_scalar", headDim),
    qkNorm: generation >= 3,
    vNorm: generation === 4,
    layerScalar: generation === 4,
    ple: g4?.ple ?? null,
    moe: g4?.moe ?? null,
    layerTypes,
    slidingWindow: layerTypes.includes("sliding") ? slidingWindow : null,
    ...rope,
    // transformers: Gemma 2 applies both caps; Gemma 3's attention never passes its cap on, and only
    // Gemma3ForCausalLM (not the multimodal class) applies the final one; Gemma 4 has no attention cap.
    attnSoftcap: generation === 2 ? optCap("attn_logit_softcapping") : null,
    finalSoftcap: generation === 2 || generation === 4 || (generation === 3 && !multimodal) ? optCap("final_logit_softcapping") : null,
    maxPositionEmbeddings: num("max_position_embeddings", 8192),
    bosTokenId: num("bos_token_id", 2),
    eosTokenIds,
    padTokenId: num("pad_token_id", 0),
    raw: top,
  };
}

function pick(o: Raw, keys: string[]): Raw {
  return Object.fromEntries(keys.filter((k) => o[k] !== undefined && o[k] !== null).map((k) => [k, o[k]]));
}

/** A reader of non-negative numeric fields that names the field and the file on error. */
export function numReader(c: Raw, source: string) {
  return (key: string, fallback?: number): number => {
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
}

/**
 * Whether the body can be checkpointed per layer. Each layer must depend on the one below alone,
 * except for what per-layer checkpointing saves beside the layer inputs for LoRA: Gemma 4's per-layer
 * inputs [N,L·Dp] and the keys/values of each KV-sharing source layer (their gradients from the
 * shared layers above are summed and seeded into the source layer's recompute). Full fine-tuning
 * would differentiate through those saved values too, so it needs plain layers; MoE layers never.
 * (engine/gemma/staged.ts builds it; it lives here so the memory estimate can ask without the graph code.)
 */
export function layerCheckpointable(c: GemmaConfig, method: "lora" | "full" | "forward" = "lora"): boolean {
  if (c.moe) return false;
  return method === "lora" || (!c.ple && c.layers.every((l, i) => l.kvSource === i));
}
