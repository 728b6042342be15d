/**
 * Blockwise 8-bit AdamW moments (docs/OPTIMIZER.md): the scheme of bitsandbytes' 8-bit optimizers
 * (Dettmers et al. 2022, "8-bit Optimizers via Block-wise Quantization", arXiv:2110.02861).
 *
 * Each moment tensor is cut into blocks of Q8_BLOCK elements; a block stores one float32 absmax and one
 * byte per element, an index into a 256-entry "dynamic" code: values spread over seven decades
 * (10⁻⁶…1), more of them in the larger decades, so a byte keeps about two significant digits of a value
 * anywhere from absmax down to a millionth of it. m takes the signed code, v (never negative) the
 * unsigned one, which spends the sign bit on a finer mantissa.
 *
 * One update, per block: dequantize m and v (code × old absmax), apply AdamW in float64 with the new
 * (unquantized) moments, then store the new absmax and each moment's nearest code. A block without
 * gradient only scales its absmax by b1 and b2 (its codes stand). Nearest-code search
 * is a table lookup on the top 16 bits of the float32 value (sign, exponent, 7 mantissa bits) and one
 * comparison: no such bucket holds more than one threshold between neighbouring codes (checked when the
 * table is built).
 *
 * One departure from bitsandbytes: a positive v never rounds to the zero code (it takes the smallest
 * positive one). A v stored as 0 under a non-zero m turns the next gradient-free step (embedding rows of
 * tokens not in the batch) into m/eps, a step of thousands of learning rates; the smallest code instead
 * overestimates v, which only shrinks that step.
 */
import type { AdamWScalars } from "./optim.ts";

/** Elements per quantization block (each has one float32 absmax). Divides NORM_BLOCK, so thread splits fall on block edges. */
export const Q8_BLOCK = 256;

/** Tensors smaller than this keep float32 moments (norms, biases: a few KB, and the most sensitive). */
export const Q8_MIN_ELEMENTS = 4096;

/**
 * The dynamic code (bitsandbytes' `create_dynamic_map`, 7 exponent bits): decade i = 0…6 holds the
 * midpoints of an even split of [0.1, 1] scaled by 10^(i−6), 2^i of them signed (each with its
 * negative) or 2^(i+1) unsigned; plus 0 and 1. Sorted ascending, rounded to float32.
 */
export function dynamicCode(signed: boolean): Float64Array {
  const values: number[] = [0, 1];
  for (let i = 0; i < 7; i++) {
    const n = signed ? 2 ** i : 2 ** (i + 1);
    for (let j = 0; j < n; j++) {
      // Midpoint of the j-th of n equal parts of [0.1, 1].
      const mid = 0.1 + (0.9 * (j + 0.5)) / n;
      const x = 10 ** (i - 6) * mid;
      values.push(x);
      if (signed) values.push(-x);
    }
  }
  if (values.length !== 256) throw new Error(`dynamic code has ${values.length} values`);
  return Float64Array.from(values.map(Math.fround).sort((a, b) => a - b));
}

/** A code with its nearest-value search: thresholds between neighbours (∞ after the last) and the bucket table. */
export interface Code {
  values: Float64Array;
  /** thresholds[c] = midpoint of values[c] and values[c+1]; thresholds[255] = ∞. */
  thresholds: Float64Array;
  /** For each top-16-bit bucket of a float32, how many thresholds lie below its smallest value (at most one more lies inside it). */
  lut: Uint8Array;
  /** Index of the value 0. */
  zero: number;
}

function makeCode(signed: boolean): Code {
  const values = dynamicCode(signed);
  const thresholds = new Float64Array(256);
  for (let c = 0; c < 255; c++) thresholds[c] = (values[c] + values[c + 1]) / 2;
  thresholds[255] = Infinity;
  /** How many thresholds are below x (or, `orEqual`, at most x). */
  const below = (x: number, orEqual: boolean) => {
    let a = 0, z = 255;
    while (a < z) {
      const mid = (a + z) >> 1;
      if (thresholds[mid] < x || (orEqual && thresholds[mid] === x)) a = mid + 1;
      else z = mid;
    }
    return a;
  };
  const lut = new Uint8Array(65536);
  const f = new Float32Array(1), u = new Uint32Array(f.buffer);
  for (let b = 0; b < 65536; b++) {
    // The bucket's ends: its lowest mantissa bits and its highest (swapped for a negative float).
    u[0] = (b << 16) >>> 0;
    const a = f[0];
    u[0] = ((b << 16) | 0xffff) >>> 0;
    const z = f[0];
    if (Number.isNaN(a) || Number.isNaN(z)) continue;
    const lo = Math.min(a, z), n = below(lo, false);
    if (below(Math.max(a, z), true) - n > 1) throw new Error(`dynamic code: bucket ${b} holds more than one threshold`);
    lut[b] = n;
  }
  return { values, thresholds, lut, zero: values.indexOf(0) };
}

export const SIGNED: Code = makeCode(true);
export const UNSIGNED: Code = makeCode(false);

/**
 * The index of the code value nearest to `x` (ties to the lower one); `bits` are x's float32 bits. The
 * bucket's candidate, plus one if past the threshold inside the bucket, added without a branch (the
 * comparison goes either way about as often: a branch here measured 13.5 against 9.2 ns a parameter).
 */
export function nearest(code: Code, x: number, bits: number): number {
  const c = code.lut[bits >>> 16];
  return c + +(x > code.thresholds[c]);
}

/** One parameter's 8-bit moments: codes per element, absmax per block. */
export interface Q8Moments {
  m: Uint8Array;
  v: Uint8Array;
  mMax: Float32Array;
  vMax: Float32Array;
}

/** Zero moments for `n` elements (every code the zero code, every absmax 0). */
export function zeroMoments(n: number): Q8Moments {
  const blocks = Math.ceil(n / Q8_BLOCK);
  return {
    m: new Uint8Array(n).fill(SIGNED.zero),
    v: new Uint8Array(n).fill(UNSIGNED.zero),
    mMax: new Float32Array(blocks),
    vMax: new Float32Array(blocks),
  };
}

/** The float32 values of 8-bit moments (`codes` with their block absmax). */
export function dequantizeMoments(codes: Uint8Array, absmax: Float32Array, signed: boolean): Float32Array {
  const values = (signed ? SIGNED : UNSIGNED).values, out = new Float32Array(codes.length);
  for (let i = 0; i < codes.length; i++) out[i] = values[codes[i]] * absmax[Math.floor(i / Q8_BLOCK)];
  return out;
}

// Per-block scratch: the new moments in float64, then normalised to float32 (read back as bits).
const newM = new Float64Array(Q8_BLOCK), newV = new Float64Array(Q8_BLOCK);
const normM = new Float32Array(Q8_BLOCK), normV = new Float32Array(Q8_BLOCK);
const bitsM = new Uint32Array(normM.buffer), bitsV = new Uint32Array(normV.buffer);

/**
 * AdamW over elements [start, end) with 8-bit moments, in place; `start` is a multiple of Q8_BLOCK.
 * adamwRange's float64 arithmetic on the dequantized moments; each block depends only on itself, so
 * two threads splitting the range on block edges give the same bits as one.
 */
export function adamw8Range(
  w: Float32Array,
  g: Float32Array,
  mq: Uint8Array,
  vq: Uint8Array,
  mMax: Float32Array,
  vMax: Float32Array,
  decay: number,
  k: AdamWScalars,
  start: number,
  end: number,
): void {
  const { b1, b2, gradScale, stepSize, invBc2, eps } = k;
  const c1 = 1 - b1, c2 = 1 - b2;
  const sv = SIGNED.values, uv = UNSIGNED.values;
  const uzero = UNSIGNED.zero;
  for (let s = start; s < end; s += Q8_BLOCK) {
    const n = Math.min(Q8_BLOCK, end - s), b = (s / Q8_BLOCK) | 0;
    // b1·(code·absmax) as (b1·absmax)·code: one multiply an element.
    const am0 = b1 * mMax[b], av0 = b2 * vMax[b];
    let zero = true;
    for (let i = s; i < s + n && zero; i++) zero = g[i] === 0;
    if (zero) {
      // No gradient in the block (rows of an untied table, such as Gemma 4's per-layer embeddings, whose
      // tokens are not in the batch: nearly all of them): the moments only decay, m·b1 and v·b2, which the
      // absmax alone carries; the codes stand.
      for (let i = s; i < s + n; i++) {
        const mi = sv[mq[i]] * am0, vi = uv[vq[i]] * av0;
        w[i] = w[i] * decay - stepSize * mi / (Math.sqrt(vi * invBc2) + eps);
      }
      mMax[b] = Math.fround(am0);
      vMax[b] = Math.fround(av0);
      continue;
    }
    let am = 0, av = 0;
    for (let j = 0; j < n; j++) {
      const i = s + j;
      const gi = g[i] * gradScale;
      const mi = sv[mq[i]] * am0 + c1 * gi;
      const vi = uv[vq[i]] * av0 + c2 * gi * gi;
      w[i] = w[i] * decay - stepSize * mi / (Math.sqrt(vi * invBc2) + eps);
      newM[j] = mi;
      newV[j] = vi;
      const a = Math.abs(mi);
      am = a > am ? a : am;
      av = vi > av ? vi : av;
    }
    const amF = Math.fround(am), avF = Math.fround(av);
    mMax[b] = amF;
    vMax[b] = avF;
    const im = amF > 0 ? 1 / amF : 0, iv = avF > 0 ? 1 / avF : 0;
    for (let j = 0; j < n; j++) {
      normM[j] = newM[j] * im;
      normV[j] = newV[j] * iv;
    }
    for (let j = 0; j < n; j++) {
      mq[s + j] = nearest(SIGNED, normM[j], bitsM[j]);
      const y = normV[j], d = nearest(UNSIGNED, y, bitsV[j]);
      vq[s + j] = d === uzero && y > 0 ? uzero + 1 : d;
    }
  }
}
