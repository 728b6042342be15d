/**
 * Text generation with a KV cache: prefill the prompt in chunks, then one `session.run` per token.
 * The JS side keeps the cache buffers (fed as zero-copy views) and writes each call's new keys and
 * values into their slots; sampling is engine/sampling.ts. The `generate` verb is cli/generate.ts.
 */
import type * as ortTypes from "onnxruntime-node";
import type { GemmaConfig, LayerType } from "./gemma/config.ts";
import { ropeTables, typeHeadDim } from "./gemma/model.ts";
import { paramSpecs } from "./gemma/params.ts";
import { buildDecoderGraph, decoderMask, slotsFor } from "./decoder.ts";
import { createSession, type Device, tensor } from "./session.ts";
import { Sampler, type SamplingOptions } from "./sampling.ts";
import { loadModel } from "./model_dir.ts";
import { readAdapter } from "./peft.ts";
import { loraScaling, mergeLora, type NamedTensor } from "./lora.ts";
import type { LoraSpec } from "./gemma/model.ts";
import type { BasePrecision } from "./quant/blocks.ts";
import { baseBytes, type FrozenBase, loadFrozen } from "./quant/base.ts";
import { BF16_LUT, bf16Lut, frozenFeeds } from "./quant/graph.ts";
import { checkBasePrecision } from "./quant/policy.ts";

export interface GeneratorModel {
  config: GemmaConfig;
  /** float32 weights by HF name: all of them, or only the norms when `base` holds the rest. */
  weights: Map<string, Float32Array>;
  /** A low-precision frozen base (engine/quant/base.ts): projections in blocks, tables in bf16. */
  base?: FrozenBase;
  /** An adapter kept beside a low-precision base (merging would need the float32 weights). */
  adapter?: { lora: LoraSpec; tensors: Map<string, NamedTensor> };
}

/** Bytes a generator model holds (the chat worker's cache accounting). */
export function modelBytes(m: GeneratorModel): number {
  let n = 0;
  for (const w of m.weights.values()) n += w.byteLength;
  return m.base ? n + baseBytes(m.base) : n;
}

const PREFILL_CHUNK = 128;

function roundUp(n: number, m: number) {
  return Math.ceil(n / m) * m;
}

/** One sequence's decoding state on one model. Not safe for concurrent use (queue requests). */
export class Generator {
  private sessions = new Map<string, Promise<ortTypes.InferenceSession>>();
  private capacity = 0;
  private k: Float32Array[] = [];
  private v: Float32Array[] = [];
  private weightFeeds: Record<string, ortTypes.Tensor> = {};
  /** Tokens in the cache. */
  pos = 0;

  constructor(readonly model: GeneratorModel, readonly opts: { device?: Device; threads?: number } = {}) {
    const base = model.base;
    for (const s of paramSpecs(model.config)) {
      const w = model.weights.get(s.name);
      if (w) this.weightFeeds[s.name] = tensor("float32", w, s.shape);
      else if (base?.linears.has(s.name)) Object.assign(this.weightFeeds, frozenFeeds(s.name, base.linears.get(s.name)!));
      else if (base && s.kind === "embedding") {
        const t = s.name === "model.embed_tokens.weight" ? base.embedding : base.ple;
        if (!t || t.dtype !== "bf16") throw new RangeError(`Generator: the base has no bf16 table "${s.name}"`);
        // The decoder gathers rows in the graph, so a table left in its file is read whole here.
        this.weightFeeds[s.name] = tensor("uint16", t.allBits(), s.shape);
      } else throw new RangeError(`Generator: model has no tensor "${s.name}"`);
    }
    if (base) this.weightFeeds[BF16_LUT] = tensor("float32", bf16Lut(), [65536]);
    for (const [name, t] of model.adapter?.tensors ?? []) this.weightFeeds[name] = tensor("float32", t.data, t.shape);
  }

  get config() {
    return this.model.config;
  }

  reset(): void {
    this.pos = 0;
  }

  private session(S: number, C: number) {
    const key = `${S}x${C}`;
    let s = this.sessions.get(key);
    if (!s) {
      const graph = buildDecoderGraph(this.config, S, C, { basePrecision: this.model.base?.precision, lora: this.model.adapter?.lora });
      s = createSession(graph.bytes, { device: this.opts.device, threads: this.opts.threads });
      this.sessions.set(key, s);
    }
    return s;
  }

  /** Layers that own a cache (Gemma 4 KV-shared layers read their source layer's). */
  private get cachedLayers(): number[] {
    return this.config.layers.flatMap((l, i) => (l.kvSource === i ? [i] : []));
  }

  /** Grows the cache to hold `need` positions (full layers), keeping what is there. */
  private ensureCapacity(need: number) {
    if (need <= this.capacity) return;
    const c = this.config;
    const C = roundUp(Math.max(need, this.capacity * 2, 64), 64);
    for (const i of this.cachedLayers) {
      const { type, kvHeads, headDim: D } = c.layers[i];
      const oldSlots = slotsFor(c, type, this.capacity), slots = slotsFor(c, type, C);
      const k = new Float32Array(slots * kvHeads * D), v = new Float32Array(slots * kvHeads * D);
      if (this.pos > 0) {
        // Re-home every held position p (slot p mod oldSlots) to slot p mod slots, per kv head.
        for (let p = Math.max(0, this.pos - oldSlots); p < this.pos; p++) {
          for (let h = 0; h < kvHeads; h++) {
            const from = (h * oldSlots + (p % oldSlots)) * D, to = (h * slots + (p % slots)) * D;
            k.set(this.k[i].subarray(from, from + D), to);
            v.set(this.v[i].subarray(from, from + D), to);
          }
        }
      }
      this.k[i] = k;
      this.v[i] = v;
    }
    this.capacity = C;
  }

  /** Runs `ids` through the model at the current position; returns the logits after the last one. */
  async feed(ids: number[]): Promise<Float32Array> {
    if (ids.length === 0) throw new RangeError("feed needs at least one token");
    const c = this.config;
    for (const id of ids) if (!(id >= 0 && id < c.vocabSize)) throw new RangeError(`Token id ${id} is outside the vocabulary (0…${c.vocabSize - 1})`);
    let logits: Float32Array | null = null;
    for (let start = 0; start < ids.length; start += PREFILL_CHUNK) {
      const chunk = ids.slice(start, start + PREFILL_CHUNK);
      logits = await this.step(chunk);
    }
    return logits!;
  }

  private async step(chunk: number[]): Promise<Float32Array> {
    const c = this.config;
    const L = chunk.length;
    const S = L === 1 ? 1 : Math.min(PREFILL_CHUNK, roundUp(L, 16));
    this.ensureCapacity(this.pos + S);
    const C = this.capacity;
    const session = await this.session(S, C);
    const ids = new BigInt64Array(S);
    chunk.forEach((t, i) => (ids[i] = BigInt(t)));
    const feeds: Record<string, ortTypes.Tensor> = {
      ...this.weightFeeds,
      input_ids: tensor("int64", ids, [S]),
      last: tensor("int64", BigInt64Array.of(BigInt(L - 1)), [1]),
    };
    for (const type of new Set<LayerType>(c.layerTypes)) {
      const slots = slotsFor(c, type, C), D = typeHeadDim(c, type);
      const { cos, sin } = ropeTables(c, type, this.pos + S);
      feeds[`rope_cos_${type}`] = tensor("float32", Float32Array.from(cos.subarray(this.pos * D)), [S, D]);
      feeds[`rope_sin_${type}`] = tensor("float32", Float32Array.from(sin.subarray(this.pos * D)), [S, D]);
      feeds[`mask_${type}`] = tensor("float32", decoderMask(c, type, slots, this.pos, S), [S, slots + S]);
    }
    for (const i of this.cachedLayers) {
      const { type, kvHeads, headDim } = c.layers[i];
      const shape = [1, kvHeads, slotsFor(c, type, C), headDim];
      feeds[`cache_k.${i}`] = tensor("float32", this.k[i], shape);
      feeds[`cache_v.${i}`] = tensor("float32", this.v[i], shape);
    }
    const out = await session.run(feeds);
    // Write the real tokens' keys and values into their slots.
    for (const i of this.cachedLayers) {
      const { type, kvHeads: nKv, headDim: D } = c.layers[i];
      const slots = slotsFor(c, type, C);
      const nk = out[`new_k.${i}`].data as Float32Array, nv = out[`new_v.${i}`].data as Float32Array;
      for (let s = 0; s < L; s++) {
        const slot = (this.pos + s) % slots;
        for (let h = 0; h < nKv; h++) {
          const from = (h * S + s) * D, to = (h * slots + slot) * D;
          this.k[i].set(nk.subarray(from, from + D), to);
          this.v[i].set(nv.subarray(from, from + D), to);
        }
      }
    }
    this.pos += L;
    return out.logits.data as Float32Array;
  }

  release(): void {
    for (const s of this.sessions.values()) s.then((x) => x.release()).catch(() => {});
    this.sessions.clear();
  }
}

export interface GenerateOptions extends SamplingOptions {
  maxNewTokens?: number;
  stopIds?: number[];
  /** Called with each new token id as it is produced; return false to stop. */
  onToken?: (id: number) => boolean | void;
  signal?: AbortSignal;
}

export interface GenerateResult {
  ids: number[];
  stopReason: "stop" | "length" | "aborted";
  promptTokens: number;
  tokensPerSecond: number;
}

/** Generates after `prompt` from an empty cache. */
export async function generateIds(gen: Generator, prompt: number[], o: GenerateOptions = {}): Promise<GenerateResult> {
  gen.reset();
  const sampler = new Sampler(o);
  const stops = new Set(o.stopIds ?? gen.config.eosTokenIds);
  const max = o.maxNewTokens ?? 128;
  const out: number[] = [];
  let logits = await gen.feed(prompt);
  const t0 = performance.now();
  let reason: GenerateResult["stopReason"] = "length";
  while (out.length < max) {
    if (o.signal?.aborted) {
      reason = "aborted";
      break;
    }
    const id = sampler.pick(logits, [...prompt, ...out]);
    if (stops.has(id)) {
      reason = "stop";
      break;
    }
    out.push(id);
    if (o.onToken?.(id) === false) {
      reason = "aborted";
      break;
    }
    if (out.length >= max) break;
    logits = await gen.feed([id]);
    // Let timers and streams run between tokens (session.run blocks the thread).
    await new Promise((r) => setTimeout(r, 0));
  }
  const secs = (performance.now() - t0) / 1000;
  return { ids: out, stopReason: reason, promptTokens: prompt.length, tokensPerSecond: out.length / Math.max(secs, 1e-9) };
}

/**
 * Loads a model dir (and adapter) for generation. With fp32 (the default) the adapter is merged into
 * the float32 weights; with a low `basePrecision` the base loads straight into its frozen form
 * (engine/quant/base.ts) and the adapter runs beside it, as it was trained (QLoRA-style). A precision
 * the device cannot run is refused before anything loads.
 */
export async function loadForGeneration(
  modelDir: string,
  adapterDir?: string,
  o: { basePrecision?: BasePrecision; device?: Device } = {},
): Promise<GeneratorModel> {
  const precision = o.basePrecision ?? "fp32";
  if (o.device && o.device !== "cpu") await checkBasePrecision(o.device, precision);
  const a = adapterDir ? readAdapter(adapterDir) : undefined;
  if (precision !== "fp32") {
    const m = loadFrozen(modelDir, precision);
    return { config: m.config, weights: m.weights, base: m.base, ...(a ? { adapter: { lora: { ...a.lora, dropout: 0 }, tensors: a.tensors } } : {}) };
  }
  const m = await loadModel(modelDir);
  if (!a) return m;
  return { config: m.config, weights: mergeLora(m.weights, a.tensors, loraScaling({ ...a.lora })) };
}
