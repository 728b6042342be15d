/**
 * AdamW (decoupled weight decay, PyTorch semantics), learning-rate schedules with linear warmup, and
 * clipping by global gradient norm. Parameters are updated in place in the engine's live buffers; the
 * state (m, v, step) round-trips through named tensors so a checkpoint resumes bit for bit.
 */

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
}

/** HF Trainer's default: no weight decay on biases and normalisation weights. */
export function defaultDecay(name: string): boolean {
  return !/(^|\.)bias$/.test(name) && !/norm/i.test(name);
}

export class AdamW {
  /** Optimizer steps taken so far (the `t` of bias correction). */
  step = 0;
  readonly m = new Map<string, Float32Array>();
  readonly v = new Map<string, Float32Array>();
  private decayed = new Set<string>();

  constructor(readonly params: Map<string, Param>, readonly opts: AdamWOptions) {
    const decay = opts.decay ?? defaultDecay;
    for (const [name, p] of params) {
      this.m.set(name, new Float32Array(p.data.length));
      this.v.set(name, new Float32Array(p.data.length));
      if (decay(name)) this.decayed.add(name);
    }
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
    for (const [name, p] of this.params) {
      const g = grads.get(name);
      if (!g) throw new RangeError(`AdamW: no gradient for parameter "${name}"`);
      if (g.length !== p.data.length) {
        throw new RangeError(`AdamW: gradient of "${name}" has ${g.length} values, parameter has ${p.data.length}`);
      }
      const decay = this.decayed.has(name) ? 1 - lr * weightDecay : 1;
      adamwKernel(p.data, g, this.m.get(name)!, this.v.get(name)!, { b1, b2, gradScale, decay, stepSize, invBc2: 1 / (bc2Sqrt * bc2Sqrt), eps });
    }
  }

  /** m and v as named tensors (`exp_avg.<name>`, `exp_avg_sq.<name>`) for a safetensors file. */
  stateTensors(): { name: string; dtype: "F32"; shape: number[]; data: Float32Array }[] {
    const out: { name: string; dtype: "F32"; shape: number[]; data: Float32Array }[] = [];
    for (const [name, p] of this.params) {
      out.push({ name: `exp_avg.${name}`, dtype: "F32", shape: p.shape, data: this.m.get(name)! });
      out.push({ name: `exp_avg_sq.${name}`, dtype: "F32", shape: p.shape, data: this.v.get(name)! });
    }
    return out;
  }

  /** Restores state written by `stateTensors`; `source` names the file in errors. */
  loadState(tensors: Map<string, Float32Array>, step: number, source = "optimizer state"): void {
    for (const [name, p] of this.params) {
      for (const [prefix, target] of [["exp_avg", this.m], ["exp_avg_sq", this.v]] as const) {
        const t = tensors.get(`${prefix}.${name}`);
        if (!t) throw new RangeError(`Cannot resume from "${source}": tensor "${prefix}.${name}" is missing`);
        if (t.length !== p.data.length) {
          throw new RangeError(`Cannot resume from "${source}": "${prefix}.${name}" has ${t.length} values, expected ${p.data.length}`);
        }
        target.get(name)!.set(t);
      }
    }
    this.step = step;
  }
}

/**
 * One AdamW pass over a tensor, in place. The same arithmetic as torch's: w·(1 − lr·wd) −
 * lr/bc1 · m / (√v/√bc2 + eps), written as √(v·(1/bc2)) to keep one division; in float64 per
 * element, stored as float32.
 */
function adamwKernel(
  w: Float32Array,
  g: Float32Array,
  m: Float32Array,
  v: Float32Array,
  k: { b1: number; b2: number; gradScale: number; decay: number; stepSize: number; invBc2: number; eps: number },
): void {
  const { b1, b2, gradScale, decay, stepSize, invBc2, eps } = k;
  const c1 = 1 - b1, c2 = 1 - b2;
  for (let i = 0; i < w.length; i++) {
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

/** L2 norm over every gradient, each multiplied by `scale`. */
export function globalNorm(grads: Iterable<Float32Array>, scale = 1): number {
  let sum = 0;
  for (const g of grads) {
    let s = 0;
    for (let i = 0; i < g.length; i++) s += g[i] * g[i];
    sum += s;
  }
  return Math.sqrt(sum) * Math.abs(scale);
}

/** Factor that brings a gradient of norm `norm` down to `maxNorm` (1 when already below or maxNorm is 0). */
export function clipFactor(norm: number, maxNorm: number): number {
  if (!(maxNorm > 0) || !Number.isFinite(norm)) return 1;
  return norm > maxNorm ? maxNorm / (norm + 1e-6) : 1;
}
