/**
 * TrainEngine: runs the Gemma graph for one micro-batch on ONNX Runtime and accumulates gradients of
 * the summed token loss into preallocated buffers. The optimizer (engine/optim.ts) updates the
 * trainable buffers in place; they are fed as zero-copy views on the next run.
 */
import type * as ortTypes from "onnxruntime-node";
import type { GemmaConfig, LayerType } from "./gemma/config.ts";
import { attentionMask, buildModelGraph, type LoraSpec, ropeTables } from "./gemma/model.ts";
import { paramSpecs } from "./gemma/params.ts";
import { createSession, type Device, tensor } from "./session.ts";
import { dropoutMask, initLora, type NamedTensor } from "./lora.ts";

export interface EngineModel {
  config: GemmaConfig;
  weights: Map<string, Float32Array>;
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
}

interface Compiled {
  session: ortTypes.InferenceSession;
  dropoutInputs: { name: string; shape: number[] }[];
}

/** Rounds the labelled-position count up to a few buckets so few graphs get built. */
export function positionBucket(n: number): number {
  if (n <= 16) return 16;
  const step = 2 ** Math.max(4, Math.floor(Math.log2(n)) - 2);
  return Math.ceil(n / step) * step;
}

export class TrainEngine {
  readonly trainable = new Map<string, NamedTensor>();
  readonly grads = new Map<string, Float32Array>();
  private accumulated = false;
  private sessions = new Map<string, Promise<Compiled>>();
  private tables = new Map<number, Record<string, ortTypes.Tensor>>();
  private weightFeeds: Record<string, ortTypes.Tensor> = {};

  private constructor(readonly opts: TrainEngineOptions) {}

  static async create(opts: TrainEngineOptions): Promise<TrainEngine> {
    const e = new TrainEngine(opts);
    const c = opts.model.config;
    for (const s of paramSpecs(c)) {
      const w = opts.model.weights.get(s.name);
      if (!w) throw new RangeError(`Model has no tensor "${s.name}"`);
      const expected = s.shape.reduce((a, b) => a * b, 1);
      if (w.length !== expected) throw new RangeError(`Tensor "${s.name}" has ${w.length} values, expected shape [${s.shape}]`);
      if (opts.method === "full") e.trainable.set(s.name, { shape: s.shape, data: w });
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
    // Warm the first device check early so a missing device fails before any work.
    if (opts.device && opts.device !== "cpu") await createSession(buildModelGraph(c, { batch: 1, seq: 2, positions: 16, method: "forward" }).bytes, { device: opts.device });
    return e;
  }

  get config(): GemmaConfig {
    return this.opts.model.config;
  }

  zeroGrads(): void {
    for (const g of this.grads.values()) g.fill(0);
    this.accumulated = false;
  }

  private compile(B: number, T: number, P: number, train: boolean): Promise<Compiled> {
    const key = `${B}x${T}x${P}:${train}`;
    let s = this.sessions.get(key);
    if (!s) {
      const o = this.opts;
      const dropout = train && o.method === "lora" && (o.lora?.dropout ?? 0) > 0;
      const graph = buildModelGraph(o.model.config, {
        batch: B,
        seq: T,
        positions: P,
        method: train ? o.method : "forward",
        lora: o.method === "lora" ? o.lora : undefined,
        dropout,
      });
      s = createSession(graph.bytes, { device: o.device, threads: o.threads }).then((session) => ({ session, dropoutInputs: graph.dropoutInputs }));
      this.sessions.set(key, s);
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
        t[`rope_cos_${type}`] = tensor("float32", Float32Array.from(cos), [T, c.headDim]);
        t[`rope_sin_${type}`] = tensor("float32", Float32Array.from(sin), [T, c.headDim]);
        t[`mask_${type}`] = tensor("float32", Float32Array.from(attentionMask(c, type, T)), [T, T]);
      }
      this.tables.set(T, t);
    }
    return t;
  }

  /** Feeds shared by every run: weights and trainables as zero-copy views. */
  private baseFeeds(): Record<string, ortTypes.Tensor> {
    const c = this.config;
    if (Object.keys(this.weightFeeds).length === 0) {
      for (const s of paramSpecs(c)) this.weightFeeds[s.name] = tensor("float32", this.opts.model.weights.get(s.name)!, s.shape);
    }
    const feeds = { ...this.weightFeeds };
    // Trainable buffers may be replaced (resume); wrap them fresh each run.
    for (const [name, t] of this.trainable) feeds[name] = tensor("float32", t.data, t.shape);
    return feeds;
  }

  /** Selected positions: flat index t whose label at t+1 counts, its target, padded to a bucket. */
  private selection(b: Batch) {
    const { batchSize: B, seqLen: T } = b;
    const idx: number[] = [], tgt: number[] = [];
    for (let r = 0; r < B; r++) {
      for (let t = 0; t + 1 < T; t++) {
        const y = b.labels[r * T + t + 1];
        if (y === -100) continue;
        if (y < 0 || y >= this.config.vocabSize) throw new RangeError(`Label ${y} at row ${r}, position ${t + 1} is outside the vocabulary (0…${this.config.vocabSize - 1})`);
        idx.push(r * T + t);
        tgt.push(y);
      }
    }
    const P = positionBucket(idx.length);
    const sel = new BigInt64Array(P), tg = new BigInt64Array(P), tw = new Float32Array(P);
    idx.forEach((v, i) => {
      sel[i] = BigInt(v);
      tg[i] = BigInt(tgt[i]);
      tw[i] = 1;
    });
    return { P, count: idx.length, sel, tg, tw };
  }

  private feeds(b: Batch, s: ReturnType<TrainEngine["selection"]>): Record<string, ortTypes.Tensor> {
    const { batchSize: B, seqLen: T } = b;
    if (b.inputIds.length !== B * T || b.labels.length !== B * T) {
      throw new RangeError(`Batch arrays must hold ${B}×${T} values, got ${b.inputIds.length} ids and ${b.labels.length} labels`);
    }
    const ids = new BigInt64Array(B * T);
    for (let i = 0; i < ids.length; i++) {
      const v = b.inputIds[i];
      if (v < 0 || v >= this.config.vocabSize) throw new RangeError(`Token id ${v} at index ${i} is outside the vocabulary (0…${this.config.vocabSize - 1})`);
      ids[i] = BigInt(v);
    }
    return {
      ...this.baseFeeds(),
      ...this.positionTables(T),
      input_ids: tensor("int64", ids, [B * T]),
      sel: tensor("int64", s.sel, [s.P]),
      tgt: tensor("int64", s.tg, [s.P, 1]),
      tw: tensor("float32", s.tw, [s.P]),
    };
  }

  /** Forward + backward on one micro-batch; adds d(lossSum)/dθ into `grads`. */
  async forwardBackward(b: Batch, opts: { dropoutSeed?: number } = {}): Promise<StepResult> {
    const s = this.selection(b);
    if (s.count === 0) return { lossSum: 0, tokens: 0 };
    const compiled = await this.compile(b.batchSize, b.seqLen, s.P, true);
    const feeds = this.feeds(b, s);
    const lora = this.opts.lora;
    compiled.dropoutInputs.forEach((d, k) => {
      const mask = dropoutMask(d.shape[0] * d.shape[1], lora!.dropout, this.opts.seed, opts.dropoutSeed ?? 0, k);
      feeds[d.name] = tensor("float32", mask, d.shape);
    });
    const out = await compiled.session.run(feeds);
    for (const [name, acc] of this.grads) {
      const g = out[`grad.${name}`].data as Float32Array;
      if (!this.accumulated) acc.set(g);
      else for (let i = 0; i < acc.length; i++) acc[i] += g[i];
    }
    this.accumulated = true;
    return { lossSum: Number(out.loss.data[0]), tokens: s.count };
  }

  /** Loss only (no gradients, no dropout). */
  async evaluate(b: Batch): Promise<StepResult> {
    const s = this.selection(b);
    if (s.count === 0) return { lossSum: 0, tokens: 0 };
    const compiled = await this.compile(b.batchSize, b.seqLen, s.P, false);
    const out = await compiled.session.run(this.feeds(b, s), ["loss"]);
    return { lossSum: Number(out.loss.data[0]), tokens: s.count };
  }

  /** Per-position NLL of the next token for a single sequence (every position counted). */
  async tokenNll(b: Batch): Promise<number[]> {
    const s = this.selection(b);
    const compiled = await this.compile(b.batchSize, b.seqLen, s.P, false);
    const out = await compiled.session.run(this.feeds(b, s), ["nll"]);
    return Array.from(out.nll.data as Float32Array).slice(0, s.count);
  }

  release(): void {
    for (const s of this.sessions.values()) s.then((c) => c.session.release()).catch(() => {});
    this.sessions.clear();
  }
}
