/**
 * TrainEngine: runs the Gemma training step for one micro-batch on ONNX Runtime and accumulates
 * gradients of the summed token loss into preallocated buffers. The optimizer (engine/optim.ts)
 * updates the trainable buffers in place; they are fed as zero-copy views on the next run.
 *
 * One step is three stages (engine/gemma/staged.ts): the body's forward, the LM head over the
 * vocabulary in chunks (rows of the tied embedding fed as views, so no [P,V] tensor and no copy of E
 * exists), then the body's backward from d hs. The JS side merges the chunks' softmax statistics.
 *
 * Every graph has symbolic batch, sequence, position and chunk-row dims (docs/GRAPHS.md), so a model
 * compiles one body (training, evaluation) and one head per kind, whatever the batch shapes.
 */
import type * as ortTypes from "onnxruntime-node";
import { type GemmaConfig, layerCheckpointable, type LayerType } from "./gemma/config.ts";
import { attentionMask, buildModelGraph, type LoraSpec, ropeTables, typeHeadDim } from "./gemma/model.ts";
import { buildBody, buildHeadChunk, EMBED, PLE_TABLE, vocabChunks } from "./gemma/staged.ts";
import { paramSpecs } from "./gemma/params.ts";
import { createSession, type Device, tensor } from "./session.ts";
import { collectAfterDropping, collectGarbage } from "./gc.ts";
import type { Dim } from "./onnx/builder.ts";
import { dropoutMask, initLora, type NamedTensor } from "./lora.ts";
import type { FrozenBase } from "./quant/base.ts";
import { frozenFeeds } from "./quant/graph.ts";
import { EmbeddingTable } from "./quant/table.ts";
import { checkBasePrecision } from "./quant/policy.ts";

export interface EngineModel {
  config: GemmaConfig;
  /** float32 weights by HF name: all of them, or only the norms when `base` holds the rest. */
  weights: Map<string, Float32Array>;
  /** A low-precision frozen base (engine/quant/base.ts): projections and the embedding table. */
  base?: FrozenBase;
}

/** Labels follow HF: labels[b,t] is input_ids[b,t] or −100; position t predicts labels[t+1]. */
export interface Batch {
  inputIds: Int32Array;
  labels: Int32Array;
  batchSize: number;
  seqLen: number;
}

export interface StepResult {
  /** Σ token NLL over counted tokens. */
  lossSum: number;
  tokens: number;
}

export interface TrainEngineOptions {
  model: EngineModel;
  method: "lora" | "full";
  lora?: LoraSpec;
  /** Existing LoRA tensors (resume or a loaded adapter), PEFT names. */
  adapter?: Map<string, NamedTensor>;
  device?: Device;
  threads?: number;
  seed: number;
  /**
   * Most LM-head [P,rows] elements per chunk (default 1M: 4 MB in fp32, 2048 vocabulary rows at
   * P = 512; measured in notes/PERF.md as both the fastest and the lowest peak of 256K…8M).
   * Tests use tiny ones to cover the merging.
   */
  headChunkElements?: number;
  /**
   * How the body's backward gets its activations (engine/gemma/staged.ts). Default (defaultActivations):
   * "layer", per-layer checkpointing, one layer's activations alive at a time (docs/QUANT.md "Memory"),
   * for LoRA and for full fine-tuning where the model allows it; full fine-tuning of models whose layers
   * share keys or take per-layer inputs recomputes the whole forward ("recompute"), and LoRA of MoE
   * models saves every activation.
   */
  activations?: "save" | "recompute" | "layer";
  /** Layers per backward stage with per-layer checkpointing (BodyOptions.stageLayers); 0: one backward graph. */
  stageLayers?: number;
}

interface Body {
  forward: ortTypes.InferenceSession;
  /**
   * The backward's sessions, run in order (BodyGraphs.stages; a one-graph backward is one stage carrying
   * nothing); none for the evaluation body.
   */
  stages: { session: ortTypes.InferenceSession; inputs: string[]; carried: string[] }[];
  forwardInputs: string[];
  backwardInputs: string[];
  saved: string[];
  trainable: string[];
  dropoutInputs: { name: string; shape: Dim[] }[];
}

/**
 * Layers per backward stage (BodyOptions.stageLayers). ORT's session creation grows faster than a graph's
 * node count: gemma-3-270m's 18-layer LoRA backward took 7.5–9.8 s to create as one graph; with stages of
 * 6 its first step ended 9.6–10.7 s after start instead of 18–21 s, and stages of 3 made the steady step
 * slower where 6 did not (notes/PERF.md "First step").
 */
export const STAGE_LAYERS = 6;

/** The symbols every engine graph uses for its run-time sizes. */
export const DIMS = { batch: "batch", seq: "seq", positions: "positions", rows: "rows" } as const;

type HeadKind = "stats" | "online" | "grad";

interface Selection {
  P: number;
  count: number;
  sel: BigInt64Array;
  tgt: Int32Array;
  tw: Float32Array;
}

/** Merged LM-head results over every chunk, per selected row. */
interface HeadResult {
  lossSum: number;
  nll: Float64Array;
  /** d(lossSum)/d hs [P,H] (training only). */
  dHs?: Float32Array;
}

export class TrainEngine {
  readonly trainable = new Map<string, NamedTensor>();
  readonly grads = new Map<string, Float32Array>();
  private accumulated = false;
  private bodies = new Map<string, Promise<Body>>();
  private heads = new Map<string, Promise<ortTypes.InferenceSession>>();
  private tables = new Map<number, Record<string, ortTypes.Tensor>>();
  private weightFeeds: Record<string, ortTypes.Tensor> = {};
  private embedViews = new Map<number, ortTypes.Tensor>();

  private constructor(readonly opts: TrainEngineOptions) {}

  static async create(opts: TrainEngineOptions): Promise<TrainEngine> {
    const e = new TrainEngine(opts);
    const c = opts.model.config;
    const base = opts.model.base;
    if (base && opts.method === "full") {
      throw new RangeError(`Full fine-tuning trains every weight in float32; a ${base.precision} base works with LoRA only (use method "lora" or base precision fp32)`);
    }
    for (const s of paramSpecs(c)) {
      if (base && (s.kind === "linear" || s.kind === "embedding")) {
        if (s.kind === "linear" && !base.linears.has(s.name)) throw new RangeError(`Model has no tensor "${s.name}"`);
        continue;
      }
      const w = opts.model.weights.get(s.name);
      if (!w) throw new RangeError(`Model has no tensor "${s.name}"`);
      const expected = s.shape.reduce((a, b) => a * b, 1);
      if (w.length !== expected) throw new RangeError(`Tensor "${s.name}" has ${w.length} values, expected shape [${s.shape}]`);
      // Buffers (Gemma 4 layer_scalar) are never trained, as in transformers; MoE experts stay frozen.
      if (opts.method === "full" && s.kind !== "buffer" && s.kind !== "expert") e.trainable.set(s.name, { shape: s.shape, data: w });
    }
    if (opts.method === "full" && c.moe) {
      throw new RangeError(
        `Full fine-tuning of a mixture-of-experts model (${c.moe.experts} experts) is not supported: use LoRA, which trains attention and the dense MLP with the experts frozen`,
      );
    }
    if (opts.method === "lora") {
      if (!opts.lora) throw new RangeError("LoRA training needs LoRA settings (r, alpha, dropout, targets)");
      const init = initLora(c, opts.lora, opts.seed);
      for (const [name, t] of init) {
        const given = opts.adapter?.get(name);
        if (given && given.data.length !== t.data.length) {
          throw new RangeError(`Adapter tensor "${name}" has shape [${given.shape}], expected [${t.shape}] (different rank or model?)`);
        }
        e.trainable.set(name, given ? { shape: t.shape, data: given.data.slice() } : t);
      }
    }
    for (const [name, t] of e.trainable) e.grads.set(name, new Float32Array(t.data.length));
    // A base precision the device has no kernels for is refused here, naming what works there.
    if (base && opts.device && opts.device !== "cpu") await checkBasePrecision(opts.device, base.precision);
    // Warm the first device check early so a missing device fails before any work.
    if (opts.device && opts.device !== "cpu") await createSession(buildModelGraph(c, { batch: 1, seq: 2, positions: 16, method: "forward" }).bytes, { device: opts.device });
    return e;
  }

  get config(): GemmaConfig {
    return this.opts.model.config;
  }

  /**
   * The one accessor for the tied embedding E [V,H], rows and chunks (engine/quant/table.ts): the live
   * trainable buffer in full fine-tuning, the model's float32 table, or a low-precision base's bf16 one.
   */
  private get embedding(): EmbeddingTable {
    const base = this.opts.model.base;
    if (base) return base.embedding;
    const c = this.config;
    return EmbeddingTable.fromF32(this.trainable.get(EMBED)?.data ?? this.opts.model.weights.get(EMBED)!, c.vocabSize, c.hiddenSize);
  }

  /** Starts a new accumulation: the next forwardBackward overwrites the gradient buffers. */
  zeroGrads(): void {
    this.accumulated = false;
  }

  /**
   * The body's sessions run without ORT's arena: their saved activations are outputs copied into JS
   * anyway, and an arena would keep a second copy of each (−150 MB at the bench shape, same speed).
   * The head's chunk sessions keep it: their [P,rows] blocks are reused 128 times a step.
   */
  private session(bytes: Uint8Array, arena: boolean): Promise<ortTypes.InferenceSession> {
    return createSession(bytes, { device: this.opts.device, threads: this.opts.threads, arena });
  }

  /** The body's sessions, built on first use: one for training, one for evaluation. */
  private body(train: boolean): Promise<Body> {
    const key = train ? "train" : "eval";
    let s = this.bodies.get(key);
    if (!s) {
      const o = this.opts;
      const graphs = buildBody(o.model.config, {
        batch: DIMS.batch,
        seq: DIMS.seq,
        positions: DIMS.positions,
        method: train ? o.method : "forward",
        lora: o.method === "lora" ? o.lora : undefined,
        dropout: train && o.method === "lora" && (o.lora?.dropout ?? 0) > 0,
        activations: o.activations ?? defaultActivations(o.method, o.model.config),
        basePrecision: o.model.base?.precision,
        stageLayers: o.stageLayers ?? STAGE_LAYERS,
      });
      const parts = graphs.stages ?? (graphs.backward ? [{ bytes: graphs.backward, inputs: graphs.backwardInputs, carried: [] }] : []);
      s = (async () => {
        const forward = await this.session(graphs.forward, false);
        const stages = [];
        for (const st of parts) stages.push({ session: await this.session(st.bytes, false), inputs: st.inputs, carried: st.carried });
        return { ...graphs, forward, stages };
      })();
      this.bodies.set(key, s);
    }
    return s;
  }

  private head(kind: HeadKind): Promise<ortTypes.InferenceSession> {
    let s = this.heads.get(kind);
    if (!s) {
      s = this.session(buildHeadChunk(this.config, { positions: DIMS.positions, rows: DIMS.rows, kind }), true);
      this.heads.set(kind, s);
    }
    return s;
  }

  private positionTables(T: number): Record<string, ortTypes.Tensor> {
    let t = this.tables.get(T);
    if (!t) {
      const c = this.config;
      t = {};
      for (const type of new Set<LayerType>(c.layerTypes)) {
        const { cos, sin } = ropeTables(c, type, T);
        t[`rope_cos_${type}`] = tensor("float32", Float32Array.from(cos), [T, typeHeadDim(c, type)]);
        t[`rope_sin_${type}`] = tensor("float32", Float32Array.from(sin), [T, typeHeadDim(c, type)]);
        t[`mask_${type}`] = tensor("float32", Float32Array.from(attentionMask(c, type, T)), [T, T]);
      }
      this.tables.set(T, t);
    }
    return t;
  }

  /** Weights and trainables as zero-copy views, by input name. */
  private weightFeed(name: string): ortTypes.Tensor | undefined {
    const t = this.trainable.get(name);
    // Trainable buffers may be replaced (resume); wrap them fresh each run.
    if (t) return tensor("float32", t.data, t.shape);
    if (Object.keys(this.weightFeeds).length === 0) {
      const base = this.opts.model.base;
      for (const s of paramSpecs(this.config)) {
        const frozen = base?.linears.get(s.name);
        if (frozen) Object.assign(this.weightFeeds, frozenFeeds(s.name, frozen));
        else if (!base || (s.kind !== "linear" && s.kind !== "embedding")) this.weightFeeds[s.name] = tensor("float32", this.opts.model.weights.get(s.name)!, s.shape);
      }
    }
    return this.weightFeeds[name];
  }

  /** Selected positions: flat index t whose label at t+1 counts, and its target. */
  private selection(b: Batch): Selection {
    const { batchSize: B, seqLen: T } = b;
    if (b.inputIds.length !== B * T || b.labels.length !== B * T) {
      throw new RangeError(`Batch arrays must hold ${B}×${T} values, got ${b.inputIds.length} ids and ${b.labels.length} labels`);
    }
    const V = this.config.vocabSize;
    const idx: number[] = [], tgt: number[] = [];
    for (let r = 0; r < B; r++) {
      for (let t = 0; t + 1 < T; t++) {
        const y = b.labels[r * T + t + 1];
        if (y === -100) continue;
        if (y < 0 || y >= V) throw new RangeError(`Label ${y} at row ${r}, position ${t + 1} is outside the vocabulary (0…${V - 1})`);
        idx.push(r * T + t);
        tgt.push(y);
      }
    }
    // The graphs take any P (symbolic), so no padding rows beyond one when nothing is labelled.
    const P = Math.max(1, idx.length);
    const sel = new BigInt64Array(P), tg = new Int32Array(P), tw = new Float32Array(P);
    idx.forEach((v, i) => {
      sel[i] = BigInt(v);
      tg[i] = tgt[i];
      tw[i] = 1;
    });
    return { P, count: idx.length, sel, tgt: tg, tw };
  }

  /** Rows of E for the batch's ids [N,H] (the body's input; the scale by √H is in the graph). */
  private embeds(b: Batch): Float32Array {
    const H = this.config.hiddenSize, V = this.config.vocabSize;
    const E = this.embedding;
    const out = new Float32Array(b.inputIds.length * H);
    for (let i = 0; i < b.inputIds.length; i++) {
      const v = b.inputIds[i];
      if (!(v >= 0 && v < V)) throw new RangeError(`Token id ${v} at index ${i} is outside the vocabulary (0…${V - 1})`);
      E.row(v, out, i * H);
    }
    return out;
  }

  private bodyFeeds(b: Batch, names: string[], extra: Record<string, ortTypes.Tensor>): Record<string, ortTypes.Tensor> {
    const tables = this.positionTables(b.seqLen);
    const feeds: Record<string, ortTypes.Tensor> = {};
    for (const name of names) {
      const f = extra[name] ?? tables[name] ?? this.weightFeed(name);
      if (!f) throw new Error(`No feed for body input "${name}"`);
      feeds[name] = f;
    }
    return feeds;
  }

  /** Gemma 4 PLE: rows [N, L·Dp] of the per-layer table for the batch's ids (gathered like E, never fed whole). */
  private pleEmbeds(b: Batch): Float32Array {
    const c = this.config, W = c.numLayers * c.ple!.dim;
    // A low-precision base keeps the table in bf16 (its stored dtype; 4.7 GB for E2B, 9.4 GB in fp32).
    const stored = this.opts.model.base?.ple;
    const table = stored ? null : this.trainable.get(PLE_TABLE)?.data ?? this.opts.model.weights.get(PLE_TABLE);
    if (!stored && !table) throw new RangeError(`Model has no tensor "${PLE_TABLE}"`);
    const out = new Float32Array(b.inputIds.length * W);
    for (let i = 0; i < b.inputIds.length; i++) {
      const v = b.inputIds[i];
      // transformers maps ids beyond the per-layer vocabulary (multimodal placeholders) to row 0.
      const row = v < c.ple!.vocab ? v : 0;
      if (stored) stored.row(row, out, i * W);
      else out.set(table!.subarray(row * W, (row + 1) * W), i * W);
    }
    return out;
  }

  private stageFeeds(b: Batch, s: Selection, embeds: Float32Array): Record<string, ortTypes.Tensor> {
    const c = this.config;
    return {
      embeds: tensor("float32", embeds, [b.inputIds.length, c.hiddenSize]),
      ...(c.ple ? { ple_embeds: tensor("float32", this.pleEmbeds(b), [b.inputIds.length, c.numLayers * c.ple.dim]) } : {}),
      sel: tensor("int64", s.sel, [s.P]),
      tw: tensor("float32", s.tw, [s.P]),
    };
  }

  private chunks(P: number) {
    const budget = this.opts.headChunkElements ?? 1024 * 1024;
    return vocabChunks(this.config.vocabSize, Math.max(1, Math.floor(budget / P)));
  }

  /** Rows of E for one head chunk: a cached zero-copy view of a float32 table, else freshly converted rows. */
  private embView(start: number, rows: number): ortTypes.Tensor {
    const H = this.config.hiddenSize, E = this.embedding;
    if (E.dtype !== "fp32") return tensor("float32", E.chunk(start, rows), [rows, H]);
    let t = this.embedViews.get(start * 1e9 + rows);
    if (!t) {
      t = tensor("float32", E.chunk(start, rows), [rows, H]);
      this.embedViews.set(start * 1e9 + rows, t);
    }
    return t;
  }

  private targetFeeds(s: Selection, start: number, rows: number) {
    const tloc = new BigInt64Array(s.P), tin = new Float32Array(s.P);
    for (let i = 0; i < s.P; i++) {
      const k = s.tgt[i] - start;
      if (s.tw[i] !== 0 && k >= 0 && k < rows) {
        tloc[i] = BigInt(k);
        tin[i] = 1;
      }
    }
    return { tloc: tensor("int64", tloc, [s.P, 1]), tin: tensor("float32", tin, [s.P, 1]) };
  }

  /**
   * The LM head over every chunk. mode "eval": loss only. "online": loss and d hs from one pass
   * (LoRA). "full": a stats pass, then a gradient pass that also adds dE into the embedding gradient.
   */
  private async runHead(s: Selection, hs: ortTypes.Tensor, mode: "eval" | "online" | "full"): Promise<HeadResult> {
    const c = this.config, P = s.P, H = c.hiddenSize;
    const M = new Float64Array(P).fill(-Infinity), S = new Float64Array(P), TL = new Float64Array(P);
    const acc = mode === "online" ? new Float32Array(P * H) : null;
    // Target feeds once per step (full fine-tuning's two passes share them); E's rows just in time,
    // since a low-precision table converts each chunk into a reused buffer.
    const chunks = this.chunks(P).map((ch) => ({ ...ch, feeds: { hs, ...this.targetFeeds(s, ch.start, ch.rows) } }));
    for (const ch of chunks) {
      const session = await this.head(mode === "online" ? "online" : "stats");
      const out = await session.run({ ...ch.feeds, emb: this.embView(ch.start, ch.rows) });
      // Each run returns fresh buffers (acc is [P,H]: 4.7 MB at 1b × 4×256, 255 chunks a step) that V8
      // frees late; collecting once 128 MB of them have piled up keeps them bounded (docs/QUANT.md "Memory").
      collectAfterDropping(Object.values(out).reduce((n, t) => n + (t.data as Float32Array).byteLength, 0), 128 * 2 ** 20);
      const m = out.m.data as Float32Array, sc = out.s.data as Float32Array, tl = out.tl.data as Float32Array;
      const a = out.acc?.data as Float32Array | undefined;
      for (let i = 0; i < P; i++) {
        TL[i] += tl[i];
        const mNew = Math.max(M[i], m[i]);
        const keep = Math.exp(M[i] - mNew), add = Math.exp(m[i] - mNew);
        S[i] = S[i] * keep + sc[i] * add;
        M[i] = mNew;
        if (acc && a) {
          const row = i * H;
          for (let j = 0; j < H; j++) acc[row + j] = acc[row + j] * keep + a[row + j] * add;
        }
      }
    }
    const nll = new Float64Array(P), lse = new Float32Array(P);
    let lossSum = 0;
    for (let i = 0; i < P; i++) {
      lse[i] = M[i] + Math.log(S[i]);
      nll[i] = lse[i] - TL[i];
      if (s.tw[i] !== 0) lossSum += nll[i];
    }
    collectAfterDropping(0, 16 * 2 ** 20); // what the loop left since its last collection, when it is worth one
    if (mode === "eval") return { lossSum, nll };
    const E = this.embedding;
    const dHs = new Float32Array(P * H);
    if (mode === "online") {
      // d hs = tw·(Σ_v p_v·l'_v·E[v] − l'_t·E[target]), l' = d logits/d raw (1, or 1 − tanh² with a soft-cap).
      const cap = c.finalSoftcap;
      const target = new Float32Array(H);
      for (let i = 0; i < P; i++) {
        if (s.tw[i] === 0) continue;
        const row = i * H;
        E.row(s.tgt[i], target);
        const dt = cap ? 1 - (TL[i] / cap) ** 2 : 1;
        const inv = 1 / S[i];
        for (let j = 0; j < H; j++) dHs[row + j] = acc![row + j] * inv - dt * target[j];
      }
      return { lossSum, nll, dHs };
    }
    const gE = this.grads.get(EMBED)!;
    const lseT = tensor("float32", lse, [P, 1]), twT = tensor("float32", s.tw, [P, 1]);
    for (const ch of chunks) {
      const session = await this.head("grad");
      const out = await session.run({ ...ch.feeds, emb: this.embView(ch.start, ch.rows), lse: lseT, tw: twT });
      const d = out.d_hs.data as Float32Array, dE = out.d_emb.data as Float32Array;
      for (let i = 0; i < d.length; i++) dHs[i] += d[i];
      addInto(gE.subarray(ch.start * H, (ch.start + ch.rows) * H), dE, this.accumulated);
    }
    collectGarbage();
    return { lossSum, nll, dHs };
  }

  /** Forward + backward on one micro-batch; adds d(lossSum)/dθ into `grads`. */
  async forwardBackward(b: Batch, opts: { dropoutSeed?: number } = {}): Promise<StepResult> {
    const s = this.selection(b);
    if (s.count === 0) {
      if (!this.accumulated) { for (const g of this.grads.values()) g.fill(0); }
      this.accumulated = true;
      return { lossSum: 0, tokens: 0 };
    }
    const embeds = this.embeds(b);
    const body = await this.body(true);
    const extra = this.stageFeeds(b, s, embeds);
    const lora = this.opts.lora;
    body.dropoutInputs.forEach((d, k) => {
      const shape = [b.inputIds.length, Number(d.shape[1])]; // [N, in]
      const mask = dropoutMask(shape[0] * shape[1], lora!.dropout, this.opts.seed, opts.dropoutSeed ?? 0, k);
      extra[d.name] = tensor("float32", mask, shape);
    });
    const fwd = await body.forward.run(this.bodyFeeds(b, body.forwardInputs, extra));
    const head = await this.runHead(s, fwd.hs, this.opts.method === "full" ? "full" : "online");
    for (const name of body.saved) extra[name] = fwd[name];
    extra.d_hs = tensor("float32", head.dHs!, [s.P, this.config.hiddenSize]);
    const out = await this.runBackward(b, body, extra);
    for (const name of body.trainable) {
      if (name === "embeds" || name === "ple_embeds") continue;
      addInto(this.grads.get(name)!, out[`grad.${name}`].data as Float32Array, this.accumulated);
    }
    if (this.opts.method === "full") {
      // The embedding's two uses: the head's dE (added above, chunk by chunk) and the gathered rows.
      const gE = this.grads.get(EMBED)!, d = out["grad.embeds"].data as Float32Array, H = this.config.hiddenSize;
      for (let i = 0; i < b.inputIds.length; i++) {
        const row = b.inputIds[i] * H, src = i * H;
        for (let j = 0; j < H; j++) gE[row + j] += d[src + j];
      }
      const gP = this.grads.get(PLE_TABLE);
      if (gP) {
        // The per-layer table's only use: its gathered rows.
        if (!this.accumulated) gP.fill(0);
        const dP = out["grad.ple_embeds"].data as Float32Array, W = this.config.numLayers * this.config.ple!.dim;
        for (let i = 0; i < b.inputIds.length; i++) {
          const v = b.inputIds[i], row = (v < this.config.ple!.vocab ? v : 0) * W, src = i * W;
          for (let j = 0; j < W; j++) gP[row + j] += dP[src + j];
        }
      }
    }
    this.accumulated = true;
    return { lossSum: head.lossSum, tokens: s.count };
  }

  /** The body's backward: its stages in order, each fed what the ones before it made. */
  private async runBackward(b: Batch, body: Body, extra: Record<string, ortTypes.Tensor>): Promise<Record<string, ortTypes.Tensor>> {
    const out: Record<string, ortTypes.Tensor> = {};
    for (const st of body.stages) {
      const feeds = this.bodyFeeds(b, st.inputs, extra);
      for (const n of st.carried) feeds[n] = out[n];
      Object.assign(out, await st.session.run(feeds));
    }
    return out;
  }

  private async forwardOnly(b: Batch, s: Selection): Promise<HeadResult> {
    const body = await this.body(false);
    const fwd = await body.forward.run(this.bodyFeeds(b, body.forwardInputs, this.stageFeeds(b, s, this.embeds(b))));
    return await this.runHead(s, fwd.hs, "eval");
  }

  /** Loss only (no gradients, no dropout). */
  async evaluate(b: Batch): Promise<StepResult> {
    const s = this.selection(b);
    if (s.count === 0) return { lossSum: 0, tokens: 0 };
    return { lossSum: (await this.forwardOnly(b, s)).lossSum, tokens: s.count };
  }

  /** Per-position NLL of the next token for a single sequence (every labelled position). */
  async tokenNll(b: Batch): Promise<number[]> {
    const s = this.selection(b);
    return Array.from((await this.forwardOnly(b, s)).nll.subarray(0, s.count));
  }

  /** Sessions the training body's backward runs as (1 when it is one graph; 0 before the first step). */
  async backwardStages(): Promise<number> {
    return (await this.bodies.get("train"))?.stages.length ?? 0;
  }

  /** The graphs compiled so far ("body:train", "head:online", …): one per kind, never per shape. */
  compiled(): string[] {
    return [...[...this.bodies.keys()].map((k) => `body:${k}`), ...[...this.heads.keys()].map((k) => `head:${k}`)].sort();
  }

  release(): void {
    for (const s of this.bodies.values()) s.then((b) => (b.forward.release(), b.stages.forEach((st) => st.session.release()))).catch(() => {});
    for (const s of this.heads.values()) s.then((h) => h.release()).catch(() => {});
    this.bodies.clear();
    this.heads.clear();
  }
}

/**
 * How the body's backward gets its activations when the caller does not say (TrainEngineOptions.activations):
 * per-layer checkpointing wherever the model allows it, else full fine-tuning recomputes the whole forward
 * and LoRA (MoE models) saves every activation. Full fine-tuning of gemma-3-270m, 18 layers, 4 × 128:
 * "layer" 123.6 tokens/s at 5068 MB peak against "recompute" 98.1 at 5786, alternated (notes/PERF.md, session 8).
 */
export function defaultActivations(method: "lora" | "full", c: GemmaConfig): "save" | "recompute" | "layer" {
  if (layerCheckpointable(c, method)) return "layer";
  return method === "full" ? "recompute" : "save";
}

/** dst = src (the first micro-batch of an accumulation) or dst += src. */
function addInto(dst: Float32Array, src: Float32Array, accumulate: boolean): void {
  if (dst.length !== src.length) throw new RangeError(`Gradient has ${src.length} values, buffer ${dst.length}`);
  if (!accumulate) dst.set(src);
  else for (let i = 0; i < dst.length; i++) dst[i] += src[i];
}
