/**
 * AdamW (decoupled weight decay, PyTorch semantics), learning-rate schedules with linear warmup, and
 * clipping by global gradient norm. Parameters are updated in place in the engine's live buffers; the
 * state (m, v, step) round-trips through named tensors so a checkpoint resumes bit for bit.
 *
 * Large parameter sets (full fine-tuning) run the update and the gradient norm on both cores: a worker
 * (engine/optim_pool.ts) takes half of the elements while this thread does the other half. Every element
 * gets the same float64 arithmetic either way, so the result is bit-identical to the single-threaded
 * update; the norm sums fixed blocks in a fixed order, whoever computes them.
 *
 * The moments are float32 (`adamw`, torch.optim.AdamW's arithmetic) or, for tensors of Q8_MIN_ELEMENTS
 * and more, blockwise 8-bit (`adamw-8bit`, engine/optim8.ts: 2 bytes a parameter instead of 8).
 */
import { OptimPool, type OptimTensors } from "./optim_pool.ts";
import { adamw8Range, Q8_MIN_ELEMENTS, type Q8Moments, zeroMoments } from "./optim8.ts";

export interface Param {
  shape: number[];
  data: Float32Array;
}

export interface AdamWOptions {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** Which parameters get weight decay; default: all but norms and biases (what HF Trainer does). */
  decay?: (name: string) => boolean;
  /** How the moments are stored (default float32). */
  moments?: MomentStorage;
}

/** float32 moments, or blockwise 8-bit ones for tensors of Q8_MIN_ELEMENTS and more (engine/optim8.ts). */
export type MomentStorage = "fp32" | "8bit";

/** One optimizer-state tensor as a checkpoint stores it. */
export type StateTensor =
  | { name: string; dtype: "F32"; shape: number[]; data: Float32Array }
  | { name: string; dtype: "U8"; shape: number[]; data: Uint8Array };

/** HF Trainer's default: no weight decay on biases and normalisation weights. */
export function defaultDecay(name: string): boolean {
  return !/(^|\.)bias$/.test(name) && !/norm/i.test(name);
}

/** Fewest parameter elements for which the update is split across two threads (below, a worker costs more than it saves). */
export const PARALLEL_MIN_ELEMENTS = 1 << 22;

export interface AdamWRunOptions {
  /** Split large updates across a worker thread (default true; results are identical either way). */
  parallel?: boolean;
}

export class AdamW {
  /** Optimizer steps taken so far (the `t` of bias correction). */
  step = 0;
  /** float32 moments (every parameter with `moments: "fp32"`, the small ones with "8bit"). */
  readonly m = new Map<string, Float32Array>();
  readonly v = new Map<string, Float32Array>();
  /** 8-bit moments of the parameters that have them. */
  readonly q8 = new Map<string, Q8Moments>();
  private decayed = new Set<string>();
  private pool: OptimPool | null = null;

  constructor(readonly params: Map<string, Param>, readonly opts: AdamWOptions, run: AdamWRunOptions = {}) {
    const decay = opts.decay ?? defaultDecay;
    let total = 0;
    for (const p of params.values()) total += p.data.length;
    for (const [name, p] of params) {
      if (opts.moments === "8bit" && p.data.length >= Q8_MIN_ELEMENTS) this.q8.set(name, zeroMoments(p.data.length));
      else {
        this.m.set(name, new Float32Array(p.data.length));
        this.v.set(name, new Float32Array(p.data.length));
      }
      if (decay(name)) this.decayed.add(name);
    }
    if ((run.parallel ?? true) && total >= PARALLEL_MIN_ELEMENTS && typeof SharedArrayBuffer === "function") this.pool = new OptimPool();
  }

  /** Whether updates now run on two threads (the worker has started; until then this thread does it all). */
  get parallel(): boolean {
    return this.pool?.ready() ?? false;
  }

  /** Stops the worker (if any); later updates run on this thread. */
  close(): void {
    this.pool?.close();
    this.pool = null;
  }

  /** The tensors in update order (optim_pool.ts OptimTensors), when the worker is up (else null: this thread does it all). */
  private sharedTensors(grads: Map<string, Float32Array>): OptimTensors[] | null {
    if (!this.pool?.ready()) return null;
    const out: OptimTensors[] = [];
    for (const [name, p] of this.params) {
      const g = grads.get(name);
      if (!g) return null;
      const q = this.q8.get(name);
      out.push(q ? [p.data, g, q.m, q.v, q.mMax, q.vMax] : [p.data, g, this.m.get(name)!, this.v.get(name)!]);
    }
    return out;
  }

  /**
   * L2 norm of every parameter's gradient times `scale` (what `globalNorm` returns, same blocks in the
   * same order), on both cores when the worker is up.
   */
  gradNorm(grads: Map<string, Float32Array>, scale = 1): number {
    const list = [...this.params.keys()].map((name) => {
      const g = grads.get(name);
      if (!g) throw new RangeError(`AdamW: no gradient for parameter "${name}"`);
      return g;
    });
    const shared = this.sharedTensors(grads);
    if (!shared) return globalNorm(list, scale);
    return Math.sqrt(this.pool!.sumSquares(shared)) * Math.abs(scale);
  }

  /**
   * One update with learning rate `lr`; each gradient is multiplied by `gradScale` first (1/tokens for
   * token-normalised loss, times the clipping factor).
   */
  update(grads: Map<string, Float32Array>, lr: number, gradScale = 1): void {
    this.step++;
    const { beta1: b1, beta2: b2, eps, weightDecay } = this.opts;
    const bc1 = 1 - b1 ** this.step;
    const bc2Sqrt = Math.sqrt(1 - b2 ** this.step);
    const stepSize = lr / bc1;
    const k: AdamWScalars = { b1, b2, gradScale, stepSize, invBc2: 1 / (bc2Sqrt * bc2Sqrt), eps };
    const decays: number[] = [];
    for (const [name, p] of this.params) {
      const g = grads.get(name);
      if (!g) throw new RangeError(`AdamW: no gradient for parameter "${name}"`);
      if (g.length !== p.data.length) {
        throw new RangeError(`AdamW: gradient of "${name}" has ${g.length} values, parameter has ${p.data.length}`);
      }
      decays.push(this.decayed.has(name) ? 1 - lr * weightDecay : 1);
    }
    const shared = this.sharedTensors(grads);
    if (shared) return this.pool!.adamw(shared, decays, k);
    let i = 0;
    for (const [name, p] of this.params) {
      const g = grads.get(name)!, q = this.q8.get(name);
      if (q) adamw8Range(p.data, g, q.m, q.v, q.mMax, q.vMax, decays[i++], k, 0, g.length);
      else adamwRange(p.data, g, this.m.get(name)!, this.v.get(name)!, decays[i++], k, 0, g.length);
    }
  }

  /**
   * m and v as named tensors for a safetensors file: `exp_avg.<name>` and `exp_avg_sq.<name>`, float32,
   * or for 8-bit moments U8 codes of the parameter's shape plus `exp_avg.<name>.absmax` (and
   * `exp_avg_sq.<name>.absmax`), float32 per block.
   */
  stateTensors(): StateTensor[] {
    const out: StateTensor[] = [];
    for (const [name, p] of this.params) {
      const q = this.q8.get(name);
      if (q) {
        out.push({ name: `exp_avg.${name}`, dtype: "U8", shape: p.shape, data: q.m });
        out.push({ name: `exp_avg.${name}.absmax`, dtype: "F32", shape: [q.mMax.length], data: q.mMax });
        out.push({ name: `exp_avg_sq.${name}`, dtype: "U8", shape: p.shape, data: q.v });
        out.push({ name: `exp_avg_sq.${name}.absmax`, dtype: "F32", shape: [q.vMax.length], data: q.vMax });
        continue;
      }
      out.push({ name: `exp_avg.${name}`, dtype: "F32", shape: p.shape, data: this.m.get(name)! });
      out.push({ name: `exp_avg_sq.${name}`, dtype: "F32", shape: p.shape, data: this.v.get(name)! });
    }
    return out;
  }

  /** Restores state written by `stateTensors` (the same moment storage); `source` names the file in errors. */
  loadState(tensors: Map<string, Float32Array | Uint8Array>, step: number, source = "optimizer state"): void {
    const get = <T extends Float32Array | Uint8Array>(key: string, type: new (n: number) => T, length: number): T => {
      const t = tensors.get(key);
      if (!t) throw new RangeError(`Cannot resume from "${source}": tensor "${key}" is missing`);
      if (!(t instanceof type)) {
        const [was, now] = t instanceof Uint8Array ? ["adamw-8bit", "adamw"] : ["adamw", "adamw-8bit"];
        throw new RangeError(`Cannot resume from "${source}": "${key}" holds ${was} moments and this run's optimizer is ${now} (resume with optimizer ${was})`);
      }
      if (t.length !== length) throw new RangeError(`Cannot resume from "${source}": "${key}" has ${t.length} values, expected ${length}`);
      return t as T;
    };
    for (const [name, p] of this.params) {
      const q = this.q8.get(name);
      for (const prefix of ["exp_avg", "exp_avg_sq"] as const) {
        const m = prefix === "exp_avg";
        if (q) {
          (m ? q.m : q.v).set(get(`${prefix}.${name}`, Uint8Array, p.data.length));
          (m ? q.mMax : q.vMax).set(get(`${prefix}.${name}.absmax`, Float32Array, q.mMax.length));
        } else (m ? this.m : this.v).get(name)!.set(get(`${prefix}.${name}`, Float32Array, p.data.length));
      }
    }
    this.step = step;
  }
}

/** The per-step scalars of one AdamW update (the same for every tensor; `decay` is per tensor). */
export interface AdamWScalars {
  b1: number;
  b2: number;
  gradScale: number;
  stepSize: number;
  invBc2: number;
  eps: number;
}

/**
 * One AdamW pass over elements [start, end) of a tensor, in place. The same arithmetic as torch's:
 * w·(1 − lr·wd) − lr/bc1 · m / (√v/√bc2 + eps), written as √(v·(1/bc2)) to keep one division; in
 * float64 per element, stored as float32. Each element depends on nothing else, so any split of the
 * range across threads gives the same bits.
 */
export function adamwRange(
  w: Float32Array,
  g: Float32Array,
  m: Float32Array,
  v: Float32Array,
  decay: number,
  k: AdamWScalars,
  start: number,
  end: number,
): void {
  const { b1, b2, gradScale, stepSize, invBc2, eps } = k;
  const c1 = 1 - b1, c2 = 1 - b2;
  for (let i = start; i < end; i++) {
    const gi = g[i] * gradScale;
    const mi = b1 * m[i] + c1 * gi;
    const vi = b2 * v[i] + c2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    w[i] = w[i] * decay - stepSize * mi / (Math.sqrt(vi * invBc2) + eps);
  }
}

export type ScheduleKind = "cosine" | "linear" | "constant";

export interface Schedule {
  kind: ScheduleKind;
  peakLr: number;
  warmupSteps: number;
  totalSteps: number;
}

/**
 * Learning rate used by optimizer step `step` (0-based): linear warmup to the peak over `warmupSteps`
 * steps, then cosine or linear decay towards 0 at `totalSteps` (HF's schedules, shifted by one so the
 * first step does not waste itself at lr 0).
 */
export function lrAt(step: number, s: Schedule): number {
  if (step < s.warmupSteps) return s.peakLr * (step + 1) / s.warmupSteps;
  if (s.kind === "constant") return s.peakLr;
  const progress = Math.min(1, (step - s.warmupSteps) / Math.max(1, s.totalSteps - s.warmupSteps));
  if (s.kind === "linear") return s.peakLr * (1 - progress);
  return s.peakLr * 0.5 * (1 + Math.cos(Math.PI * progress));
}

/** Elements per block of the gradient norm: each block's Σg² is one float64 sum, and blocks add up in order. */
export const NORM_BLOCK = 1 << 16;

/**
 * Σ g² over elements [start, end) in float64, with four interleaved partial sums (a single chain of
 * dependent additions is latency-bound: 4× slower over 179M values). Callers pass whole blocks.
 */
export function sumSquares(g: Float32Array, start: number, end: number): number {
  let s0 = 0, s1 = 0, s2 = 0, s3 = 0, i = start;
  for (; i + 4 <= end; i += 4) {
    const a = g[i], b = g[i + 1], c = g[i + 2], d = g[i + 3];
    s0 += a * a;
    s1 += b * b;
    s2 += c * c;
    s3 += d * d;
  }
  for (; i < end; i++) s0 += g[i] * g[i];
  return (s0 + s1) + (s2 + s3);
}

/** L2 norm over every gradient, each multiplied by `scale`: blocks of NORM_BLOCK summed in tensor and block order. */
export function globalNorm(grads: Iterable<Float32Array>, scale = 1): number {
  let sum = 0;
  for (const g of grads) {
    for (let at = 0; at < g.length; at += NORM_BLOCK) sum += sumSquares(g, at, Math.min(g.length, at + NORM_BLOCK));
  }
  return Math.sqrt(sum) * Math.abs(scale);
}

/** Factor that brings a gradient of norm `norm` down to `maxNorm` (1 when already below or maxNorm is 0). */
export function clipFactor(norm: number, maxNorm: number): number {
  if (!(maxNorm > 0) || !Number.isFinite(norm)) return 1;
  return norm > maxNorm ? maxNorm / (norm + 1e-6) : 1;
}
