/**
 * Text generation with a KV cache: prefill the prompt in chunks, then one `session.run` per token.
 * One decoder session per model (symbolic tokens and cache slots, engine/decoder.ts), so prefill
 * chunks and a growing cache cost no new graph. The JS side keeps the cache buffers (fed as zero-copy
 * views) and writes each call's new keys and values into their slots; sampling is engine/sampling.ts.
 * The `generate` verb is cli/generate.ts.
 *
 * Base precision (docs/QUANT.md): fp32 hands the session the float32 weights (prepacked once per
 * session, engine/decoder.ts); a bf16 base decodes with its exact float32 values (the CPU build has no
 * bf16 matrix product); int8 / int4 bases decode through MatMulNBits over the same blocks as training,
 * with the tied head in 8-bit blocks too. The embedding rows are read here from the stored table.
 */
import { setImmediate } from "node:timers";
import * as os from "node:os";
import type * as ortTypes from "onnxruntime-node";
import type { GemmaConfig, LayerType } from "./gemma/config.ts";
import { ropeTables, typeHeadDim } from "./gemma/model.ts";
import { paramSpecs } from "./gemma/params.ts";
import { buildDecoderGraph, decoderMask, decoderWeights, type PackedWeights, slotsFor } from "./decoder.ts";
import { createSession, type Device, tensor } from "./session.ts";
import { size } from "./onnx/builder.ts";
import { Sampler, type SamplingOptions } from "./sampling.ts";
import { loadModel } from "./model_dir.ts";
import { readAdapter } from "./peft.ts";
import { loraScaling, mergeLora } from "./lora.ts";
import { type BasePrecision, bf16ToF32, BLOCK, dequantize, type FrozenTensor, quantize } from "./quant/blocks.ts";
import { freezeWeights, type FrozenBase } from "./quant/base.ts";
import { EmbeddingTable } from "./quant/table.ts";

export interface GeneratorModel {
  config: GemmaConfig;
  /** float32 weights; with a `base`, only what it does not hold (norms, buffers, experts). */
  weights: Map<string, Float32Array>;
  /** A frozen base in a low precision (engine/quant/base.ts). */
  base?: FrozenBase;
}

const PREFILL_CHUNK = 128;

function roundUp(n: number, m: number) {
  return Math.ceil(n / m) * m;
}

/** The tied table [V,H] as 8-bit blocks, a few thousand rows at a time (never a whole float32 copy). */
export function tableBlocks(t: EmbeddingTable): FrozenTensor {
  const V = t.vocab, H = t.hidden, nb = Math.ceil(H / 32), step = 4096;
  const q = new Uint8Array(V * H), scales = new Float32Array(V * nb);
  for (let r = 0; r < V; r += step) {
    const rows = Math.min(step, V - r);
    const part = quantize(t.chunk(r, rows), [rows, H], "int8") as Extract<FrozenTensor, { q: Uint8Array }>;
    q.set(part.q, r * H);
    scales.set(part.scales, r * nb);
  }
  return { kind: "int8", shape: [V, H], q, scales };
}

/**
 * Whether ORT may prepack `bytes` of float32 weights: its copy sits beside the caller's, so both must fit
 * in half of this machine's memory (gemma-3-270m's 1.07 GB and gemma-3-1b's 4 GB do on 24 GB; gemma-2-2b's
 * 10.5 GB is fed as inputs, as before prepacking, and decodes slower instead of not at all).
 */
export function prepackFits(bytes: number): boolean {
  return 2 * bytes <= os.totalmem() / 2;
}

/** One sequence's decoding state on one model. Not safe for concurrent use (queue requests). */
export class Generator {
  private sessionP: Promise<ortTypes.InferenceSession> | null = null;
  private capacity = 0;
  private k: Float32Array[] = [];
  private v: Float32Array[] = [];
  /** The decoder's in-memory initializers by name (held as long as a session may be made from them). */
  private weightData: { path: string; data: Uint8Array }[] = [];
  /** The weights fed on every call: the routed experts, and every decoder weight when they are not prepacked. */
  private weightFeeds: Record<string, ortTypes.Tensor> = {};
  /** Whether ORT prepacks the float32 weights (a second copy of them: only when it fits, see `prepackFits`). */
  readonly prepacked: boolean;
  private packed: PackedWeights | null = null;
  private table: EmbeddingTable;
  private pleTable: EmbeddingTable | null = null;
  /** cos/sin [capacity, D/2] per layer type (one half of each table row; float32, fed as views). */
  private rope = new Map<LayerType, { cos: Float32Array; sin: Float32Array }>();
  /** The precision the weights are decoded in. */
  readonly precision: BasePrecision;
  /** Tokens in the cache. */
  pos = 0;

  constructor(readonly model: GeneratorModel, private opts: { device?: Device; threads?: number; spin?: boolean; prepack?: boolean } = {}) {
    const base = model.base;
    this.precision = base?.precision ?? "fp32";
    const weights = new Map(model.weights);
    // MatMulNBits takes input sizes that are whole blocks; a weight that is not (only tiny test shapes)
    // is decoded from its exact dequantized values instead, and a hidden size that is not keeps the head
    // in float32 too.
    const packable = (t: FrozenTensor) => (t.kind === "int8" || t.kind === "int4") && t.shape[1] % BLOCK === 0;
    const c = model.config;
    const need = (name: string) => {
      const w = weights.get(name);
      if (!w) throw new RangeError(`Model has no tensor "${name}"`);
      return w;
    };
    if (base && (base.precision === "int8" || base.precision === "int4") && base.embedding.hidden % BLOCK === 0) {
      const linears = new Map([...base.linears].filter(([, t]) => packable(t)));
      for (const [name, t] of base.linears) if (!linears.has(name)) weights.set(name, dequantize(t));
      this.packed = { linears, head: tableBlocks(base.embedding) };
    } else if (base) {
      // bf16 (or fp32 blocks): the exact float32 values as the fp32 graph's weights; the head needs the whole table.
      for (const [name, t] of base.linears) weights.set(name, dequantize(t));
      weights.set("model.embed_tokens.weight", base.embedding.f32 ?? bf16ToF32(base.embedding.allBits()));
    }
    this.table = base?.embedding ?? EmbeddingTable.fromF32(need("model.embed_tokens.weight"), c.vocabSize, c.hiddenSize);
    if (c.ple) this.pleTable = base?.ple ?? EmbeddingTable.fromF32(need("model.embed_tokens_per_layer.weight"), c.ple.vocab, c.numLayers * c.ple.dim);
    const held = decoderWeights(c, this.packed ?? undefined);
    this.prepacked = opts.prepack ?? prepackFits(held.reduce((a, s) => a + 4 * size(s.shape), 0));
    for (const s of held) {
      const w = need(s.name);
      if (w.length !== size(s.shape)) throw new RangeError(`Tensor "${s.name}" has ${w.length} values; its shape is [${s.shape}]`);
      if (this.prepacked) this.weightData.push({ path: s.name, data: new Uint8Array(w.buffer, w.byteOffset, w.byteLength) });
      else this.weightFeeds[s.name] = tensor("float32", w, s.shape);
    }
    for (const s of paramSpecs(c)) if (s.kind === "expert") this.weightFeeds[s.name] = tensor("float32", need(s.name), s.shape);
  }

  get config() {
    return this.model.config;
  }

  reset(): void {
    this.pos = 0;
  }

  private session() {
    this.sessionP ??= createSession(buildDecoderGraph(this.config, "seq", "capacity", { packed: this.packed ?? undefined, prepack: this.prepacked }).bytes, {
      externalData: this.weightData,
      device: this.opts.device,
      threads: this.opts.threads,
      // The decoder runs ~600 tiny kernels a token: a parked pool wakes for each. Spinning measured int8
      // 48 → 60–66 and fp32 20–21 → 23–29 tokens/s on gemma-3-270m (notes/PERF.md "Decode: spinning").
      spin: this.opts.spin ?? (this.opts.threads ?? 2) > 1,
    });
    return this.sessionP;
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
    for (const type of new Set<LayerType>(c.layerTypes)) {
      const { cos, sin } = ropeTables(c, type, C), D = typeHeadDim(c, type);
      const half = (t: Float64Array) => Float32Array.from({ length: (C * D) / 2 }, (_, i) => t[Math.floor(i / (D / 2)) * D + (i % (D / 2))]);
      this.rope.set(type, { cos: half(cos), sin: half(sin) });
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
    const S = chunk.length;
    this.ensureCapacity(this.pos + S);
    const C = this.capacity;
    const session = await this.session();
    const feeds: Record<string, ortTypes.Tensor> = { ...this.weightFeeds, last: tensor("int64", BigInt64Array.of(BigInt(S - 1)), [1]) };
    const H = c.hiddenSize, e = new Float32Array(S * H);
    chunk.forEach((t, i) => this.table.row(t, e, i * H));
    feeds.embeds = tensor("float32", e, [S, H]);
    if (this.pleTable) {
      const W = this.pleTable.hidden, p = new Float32Array(S * W);
      chunk.forEach((t, i) => this.pleTable!.row(t, p, i * W));
      feeds.ple_rows = tensor("float32", p, [S, W]);
    }
    for (const type of new Set<LayerType>(c.layerTypes)) {
      const slots = slotsFor(c, type, C), half = typeHeadDim(c, type) / 2;
      const { cos, sin } = this.rope.get(type)!;
      feeds[`rope_cos_${type}`] = tensor("float32", cos.subarray(this.pos * half, (this.pos + S) * half), [S, half]);
      feeds[`rope_sin_${type}`] = tensor("float32", sin.subarray(this.pos * half, (this.pos + S) * half), [S, half]);
      feeds[`mask_${type}`] = tensor("float32", decoderMask(c, type, slots, this.pos, S), [S, slots + S]);
    }
    for (const i of this.cachedLayers) {
      const { type, kvHeads, headDim } = c.layers[i];
      const shape = [1, kvHeads, slotsFor(c, type, C), headDim];
      feeds[`cache_k.${i}`] = tensor("float32", this.k[i], shape);
      feeds[`cache_v.${i}`] = tensor("float32", this.v[i], shape);
    }
    const out = await session.run(feeds);
    // Write the tokens' keys and values into their slots.
    for (const i of this.cachedLayers) {
      const { type, kvHeads: nKv, headDim: D } = c.layers[i];
      const slots = slotsFor(c, type, C);
      const nk = out[`new_k.${i}`].data as Float32Array, nv = out[`new_v.${i}`].data as Float32Array;
      for (let s = 0; s < S; s++) {
        const slot = (this.pos + s) % slots;
        for (let h = 0; h < nKv; h++) {
          const from = (h * S + s) * D, to = (h * slots + slot) * D;
          this.k[i].set(nk.subarray(from, from + D), to);
          this.v[i].set(nv.subarray(from, from + D), to);
        }
      }
    }
    this.pos += S;
    return out.logits.data as Float32Array;
  }

  /** Decodes on `threads` intra-op threads from the next call on (a new session; the cache is kept). */
  setThreads(threads: number | undefined): void {
    if (threads === this.opts.threads) return;
    this.release();
    this.opts = { ...this.opts, threads };
  }

  /** The intra-op threads the next session gets (unset: ORT's default, every core). */
  get threads(): number | undefined {
    return this.opts.threads;
  }

  release(): void {
    this.sessionP?.then((x) => x.release()).catch(() => {});
    this.sessionP = null;
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
    // Let timers and streams run between tokens (session.run blocks the thread). setImmediate yields to
    // the event loop as setTimeout(0) does, without its clamp: 0.01 ms against 2.3 ms a token here.
    await new Promise((r) => setImmediate(r));
  }
  const secs = (performance.now() - t0) / 1000;
  return { ids: out, stopReason: reason, promptTokens: prompt.length, tokensPerSecond: out.length / Math.max(secs, 1e-9) };
}

/**
 * Loads a model dir (and adapter, merged into the float32 weights) for generation, then, for a low
 * base precision, converts it tensor by tensor into a frozen base (the merge uses the unquantized base).
 */
export async function loadForGeneration(modelDir: string, adapterDir?: string, precision: BasePrecision = "fp32"): Promise<GeneratorModel> {
  const m = await loadModel(modelDir);
  let weights = m.weights;
  if (adapterDir) {
    const a = readAdapter(adapterDir);
    weights = mergeLora(m.weights, a.tensors, loraScaling({ ...a.lora }));
  }
  if (precision === "fp32") return { config: m.config, weights };
  return freezeWeights(m.config, weights, precision);
}
