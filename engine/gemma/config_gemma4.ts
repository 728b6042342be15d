/**
 * Gemma 4 text config fields (docs/GEMMA4.md §Config): per-layer-type head dims and KV heads, K=V
 * full layers, KV sharing, per-layer MLP widths, per-layer embeddings and the mixture of experts.
 */
import type { LayerSpec, LayerType } from "./config_fields.ts";

type Raw = Record<string, unknown>;

interface Base {
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  intermediateSize: number;
  layerTypes: LayerType[];
}

export interface Gemma4Fields {
  layers: LayerSpec[];
  ple: { dim: number; vocab: number } | null;
  moe: { experts: number; topK: number; intermediate: number } | null;
}

export function gemma4Fields(c: Raw, source: string, b: Base): Gemma4Fields {
  const bad = (field: string, what: string): never => {
    throw new RangeError(`Cannot use "${source}": field "${field}" ${what}`);
  };
  const posInt = (field: string, v: unknown, fallback?: number): number => {
    if (v === undefined || v === null) {
      if (fallback !== undefined) return fallback;
      return bad(field, "is missing");
    }
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0) return bad(field, `must be a non-negative integer, got ${JSON.stringify(v)}`);
    return v;
  };
  const L = b.numLayers;
  const kEqV = c.attention_k_eq_v === true;
  const globalHeadDim = posInt("global_head_dim", c.global_head_dim, 512);
  // transformers uses num_global_key_value_heads only together with attention_k_eq_v.
  const globalKv = kEqV ? posInt("num_global_key_value_heads", c.num_global_key_value_heads, b.numKvHeads) : b.numKvHeads;
  const shared = posInt("num_kv_shared_layers", c.num_kv_shared_layers, 0);
  if (shared >= L && shared > 0) bad("num_kv_shared_layers", `(${shared}) must be smaller than num_hidden_layers (${L})`);
  const firstShared = shared > 0 ? L - shared : L;
  const widths = c.intermediate_size;
  const width = (i: number) => Array.isArray(widths) ? posInt(`intermediate_size[${i}]`, widths[i]) : b.intermediateSize;
  if (Array.isArray(widths) && widths.length !== L) bad("intermediate_size", `has ${widths.length} entries but num_hidden_layers is ${L}`);
  const doubleWide = c.use_double_wide_mlp === true;
  const perLayer = c.per_layer_config as Record<string, Raw> | undefined;

  const layers: LayerSpec[] = b.layerTypes.map((type, i) => {
    const full = type === "full";
    let headDim = full ? globalHeadDim : b.headDim;
    let kvHeads = full ? globalKv : b.numKvHeads;
    const o = perLayer?.[String(i)];
    if (o) {
      headDim = posInt(`per_layer_config.${i}.head_dim`, o.head_dim, headDim);
      kvHeads = posInt(`per_layer_config.${i}.num_key_value_heads`, o.num_key_value_heads, kvHeads);
    }
    if (kvHeads < 1 || b.numHeads % kvHeads !== 0) bad(full ? "num_global_key_value_heads" : "num_key_value_heads", `(${kvHeads}) must divide num_attention_heads (${b.numHeads})`);
    let kvSource = i;
    if (i >= firstShared) {
      // The last non-shared layer of the same type hands over its keys and values.
      kvSource = b.layerTypes.slice(0, firstShared).lastIndexOf(type);
      if (kvSource < 0) bad("num_kv_shared_layers", `leaves no earlier ${type} layer for shared layer ${i} to take keys and values from`);
    }
    const intermediate = width(i) * (doubleWide && i >= firstShared ? 2 : 1);
    return { type, headDim, kvHeads, intermediate, kvSource, kEqV: kEqV && full };
  });
  for (const l of layers) {
    const src = layers[l.kvSource];
    if (src.headDim !== l.headDim || src.kvHeads !== l.kvHeads) bad("num_kv_shared_layers", `pairs layers of different head geometry`);
  }

  const pleDim = posInt("hidden_size_per_layer_input", c.hidden_size_per_layer_input, 0);
  const ple = pleDim > 0 ? { dim: pleDim, vocab: posInt("vocab_size_per_layer_input", c.vocab_size_per_layer_input, Number(c.vocab_size)) } : null;
  let moe: Gemma4Fields["moe"] = null;
  if (c.enable_moe_block === true) {
    const experts = posInt("num_experts", c.num_experts);
    const topK = posInt("top_k_experts", c.top_k_experts);
    if (topK < 1 || topK > experts) bad("top_k_experts", `(${topK}) must be between 1 and num_experts (${experts})`);
    moe = { experts, topK, intermediate: posInt("moe_intermediate_size", c.moe_intermediate_size ?? c.expert_intermediate_size) };
  }
  return { layers, ple, moe };
}
