/**
 * Tensor encodings for GGUF (docs/GGUF.md §3): f32, f16, bf16 and ggml's block formats q8_0, q4_0,
 * q5_0, q4_K and q6_K, written the way ggml's reference quantizers lay them out so llama.cpp's
 * kernels read them. Each encoder takes row-major floats whose row length is a multiple of the
 * block size; `decode` inverts any of them (for tests and for measuring the error of a file).
 */
import { floatToBf16, floatToHalf, halfToFloat } from "../safetensors.ts";

/** ggml_type ids. */
export const GGML = { F32: 0, F16: 1, Q4_0: 2, Q5_0: 6, Q8_0: 8, Q4_K: 12, Q6_K: 14, BF16: 30 } as const;
export type GgmlType = typeof GGML[keyof typeof GGML];

/** Elements per block and bytes per block of each type. */
export const LAYOUT: Record<GgmlType, { block: number; bytes: number; name: string }> = {
  [GGML.F32]: { block: 1, bytes: 4, name: "f32" },
  [GGML.F16]: { block: 1, bytes: 2, name: "f16" },
  [GGML.BF16]: { block: 1, bytes: 2, name: "bf16" },
  [GGML.Q8_0]: { block: 32, bytes: 34, name: "q8_0" },
  [GGML.Q4_0]: { block: 32, bytes: 18, name: "q4_0" },
  [GGML.Q5_0]: { block: 32, bytes: 22, name: "q5_0" },
  [GGML.Q4_K]: { block: 256, bytes: 144, name: "q4_K" },
  [GGML.Q6_K]: { block: 256, bytes: 210, name: "q6_K" },
};

export function byteLength(type: GgmlType, n: number): number {
  const l = LAYOUT[type];
  if (n % l.block) throw new RangeError(`${l.name} needs a multiple of ${l.block} elements, got ${n}`);
  return (n / l.block) * l.bytes;
}

/** Round half to even, like ggml's nearest_int. */
const rint = (x: number) => {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
};
const half = (x: number) => halfToFloat(floatToHalf(x));

export function encode(type: GgmlType, x: Float32Array): Uint8Array {
  const out = new Uint8Array(byteLength(type, x.length));
  const dv = new DataView(out.buffer);
  if (type === GGML.F32) return new Uint8Array(x.buffer.slice(x.byteOffset, x.byteOffset + x.byteLength));
  if (type === GGML.F16 || type === GGML.BF16) {
    const f = type === GGML.F16 ? floatToHalf : floatToBf16;
    for (let i = 0; i < x.length; i++) dv.setUint16(2 * i, f(x[i]), true);
    return out;
  }
  const { block, bytes } = LAYOUT[type];
  const q = QUANT[type as keyof typeof QUANT];
  for (let b = 0; b < x.length / block; b++) q(x.subarray(b * block, (b + 1) * block), dv, b * bytes);
  return out;
}

type BlockQuant = (x: Float32Array, dv: DataView, o: number) => void;

/** Value of largest magnitude (sign kept). */
function signedMax(x: Float32Array): number {
  let amax = 0, max = 0;
  for (const v of x) if (Math.abs(v) > amax) (amax = Math.abs(v), max = v);
  return max;
}

const QUANT: Record<number, BlockQuant> = {
  // d = amax/127, q = round(x/d) in int8.
  [GGML.Q8_0]: (x, dv, o) => {
    const d = Math.abs(signedMax(x)) / 127, id = d ? 1 / d : 0;
    dv.setUint16(o, floatToHalf(d), true);
    for (let i = 0; i < 32; i++) dv.setInt8(o + 2 + i, Math.round(x[i] * id));
  },
  // d = max/-8 (the signed extreme maps to q=0), q = x/d + 8 in 0..15; element j low nibble, j+16 high.
  [GGML.Q4_0]: (x, dv, o) => {
    const d = signedMax(x) / -8, id = d ? 1 / d : 0;
    dv.setUint16(o, floatToHalf(d), true);
    for (let j = 0; j < 16; j++) {
      const a = Math.min(15, Math.trunc(x[j] * id + 8.5)), b = Math.min(15, Math.trunc(x[j + 16] * id + 8.5));
      dv.setUint8(o + 2 + j, a | (b << 4));
    }
  },
  // As q4_0 with 5 bits: the fifth bits of the 32 elements in one little-endian uint32.
  [GGML.Q5_0]: (x, dv, o) => {
    const d = signedMax(x) / -16, id = d ? 1 / d : 0;
    dv.setUint16(o, floatToHalf(d), true);
    let qh = 0;
    for (let j = 0; j < 16; j++) {
      const a = Math.min(31, Math.trunc(x[j] * id + 16.5)), b = Math.min(31, Math.trunc(x[j + 16] * id + 16.5));
      dv.setUint8(o + 6 + j, (a & 15) | ((b & 15) << 4));
      qh |= ((a >> 4) << j) | ((b >> 4) << (j + 16));
    }
    dv.setUint32(o + 2, qh >>> 0, true);
  },
  [GGML.Q4_K]: quantQ4K,
  [GGML.Q6_K]: quantQ6K,
};

/** Scale and min of one q4_K sub-block: x ≈ scale·q − min, q in 0..nmax (weighted least squares search). */
function fitScaleMin(x: Float32Array, w: Float32Array, L: Uint8Array, nmax: number): { scale: number; min: number } {
  let lo = x[0], hi = x[0], sw = 0, sx = 0;
  for (let i = 0; i < x.length; i++) (lo = Math.min(lo, x[i]), hi = Math.max(hi, x[i]), sw += w[i], sx += w[i] * x[i]);
  lo = Math.min(lo, 0);
  if (hi === lo) return (L.fill(0), { scale: 0, min: -lo });
  const err = (s: number, m: number, Q: Uint8Array) => {
    let e = 0;
    for (let i = 0; i < x.length; i++) e += w[i] * (s * Q[i] + m - x[i]) ** 2;
    return e;
  };
  const assign = (iscale: number, Q: Uint8Array) => {
    for (let i = 0; i < x.length; i++) Q[i] = Math.max(0, Math.min(nmax, rint(iscale * (x[i] - lo))));
  };
  let scale = (hi - lo) / nmax, min = lo;
  assign(nmax / (hi - lo), L);
  let best = err(scale, min, L);
  const Q = new Uint8Array(x.length);
  for (let step = 0; step <= 20; step++) {
    assign((-1 + 0.1 * step + nmax) / (hi - lo), Q);
    let sl = 0, sl2 = 0, sxl = 0;
    for (let i = 0; i < x.length; i++) (sl += w[i] * Q[i], sl2 += w[i] * Q[i] * Q[i], sxl += w[i] * Q[i] * x[i]);
    const D = sw * sl2 - sl * sl;
    if (D <= 0) continue;
    let s = (sw * sxl - sx * sl) / D, m = (sl2 * sx - sl * sxl) / D;
    if (m > 0) (m = 0, s = sxl / sl2);
    const e = err(s, m, Q);
    if (e < best) (best = e, scale = s, min = m, L.set(Q));
  }
  return { scale, min: -min };
}

/** q4_K: 8 sub-blocks of 32 with 6-bit scales and mins under two f16 super-scales (d, dmin). */
function quantQ4K(x: Float32Array, dv: DataView, o: number) {
  const scales = new Float32Array(8), mins = new Float32Array(8), L = new Uint8Array(256), w = new Float32Array(32);
  let maxScale = 0, maxMin = 0;
  for (let j = 0; j < 8; j++) {
    const xs = x.subarray(32 * j, 32 * j + 32);
    let s2 = 0;
    for (const v of xs) s2 += v * v;
    const av = Math.sqrt(s2 / 32);
    for (let i = 0; i < 32; i++) w[i] = av + Math.abs(xs[i]);
    const r = fitScaleMin(xs, w, L.subarray(32 * j, 32 * j + 32), 15);
    scales[j] = r.scale, mins[j] = r.min;
    maxScale = Math.max(maxScale, r.scale), maxMin = Math.max(maxMin, r.min);
  }
  const is = maxScale > 0 ? 63 / maxScale : 0, im = maxMin > 0 ? 63 / maxMin : 0;
  const sc = new Uint8Array(12);
  const ls = scales.map((s) => Math.min(63, rint(is * s))), lm = mins.map((m) => Math.min(63, rint(im * m)));
  for (let j = 0; j < 8; j++) {
    if (j < 4) (sc[j] = ls[j], sc[j + 4] = lm[j]);
    else {
      sc[j + 4] = (ls[j] & 15) | ((lm[j] & 15) << 4);
      sc[j - 4] |= (ls[j] >> 4) << 6;
      sc[j] |= (lm[j] >> 4) << 6;
    }
  }
  const d = half(maxScale / 63), dmin = half(maxMin / 63);
  dv.setUint16(o, floatToHalf(d), true);
  dv.setUint16(o + 2, floatToHalf(dmin), true);
  for (let i = 0; i < 12; i++) dv.setUint8(o + 4 + i, sc[i]);
  // Re-quantize against the scales as stored (rounded to 6 bits and f16).
  for (let j = 0; j < 8; j++) {
    const [s, m] = scaleMinK4(j, sc);
    const dd = d * s, dm = dmin * m;
    if (!dd) continue;
    for (let i = 0; i < 32; i++) L[32 * j + i] = Math.max(0, Math.min(15, rint((x[32 * j + i] + dm) / dd)));
  }
  for (let j = 0; j < 256; j += 64) {
    for (let l = 0; l < 32; l++) dv.setUint8(o + 16 + j / 2 + l, L[j + l] | (L[j + l + 32] << 4));
  }
}

/** The 6-bit scale and min of q4_K sub-block j from the 12 packed bytes. */
function scaleMinK4(j: number, q: Uint8Array): [number, number] {
  if (j < 4) return [q[j] & 63, q[j + 4] & 63];
  return [(q[j + 4] & 15) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4)];
}

/** Symmetric scale of one sub-block: x ≈ scale·l, l in −nmax..nmax−1, x²-weighted search over 19 candidates. */
function fitScale(x: Float32Array, nmax: number): number {
  const max = signedMax(x);
  if (Math.abs(max) < 1e-15) return 0;
  const sums = (iscale: number) => {
    let sxl = 0, sl2 = 0;
    for (const v of x) {
      const l = Math.max(-nmax, Math.min(nmax - 1, rint(iscale * v)));
      sxl += v * v * v * l, sl2 += v * v * l * l;
    }
    return [sxl, sl2];
  };
  let [sxl, sl2] = sums(-nmax / max);
  let scale = sl2 ? sxl / sl2 : 0, best = scale * sxl;
  for (let k = -9; k <= 9; k++) {
    if (!k) continue;
    [sxl, sl2] = sums(-(nmax + 0.1 * k) / max);
    if (sl2 > 0 && sxl * sxl > best * sl2) (scale = sxl / sl2, best = scale * sxl);
  }
  return scale;
}

/** q6_K: 16 sub-blocks of 16 with int8 scales under one f16 d; 6-bit values split into ql (4 bits) and qh (2 bits). */
function quantQ6K(x: Float32Array, dv: DataView, o: number) {
  const scales = new Float32Array(16);
  let maxScale = 0;
  for (let j = 0; j < 16; j++) {
    scales[j] = fitScale(x.subarray(16 * j, 16 * j + 16), 32);
    if (Math.abs(scales[j]) > Math.abs(maxScale)) maxScale = scales[j];
  }
  if (Math.abs(maxScale) < 1e-15) return; // an all-zero block is all-zero bytes
  const iscale = -128 / maxScale, d = half(1 / iscale);
  const L = new Uint8Array(256);
  for (let j = 0; j < 16; j++) {
    const s = Math.min(127, rint(iscale * scales[j]));
    dv.setInt8(o + 192 + j, s);
    const dd = d * s;
    if (!dd) {
      L.fill(32, 16 * j, 16 * j + 16);
      continue;
    }
    for (let i = 0; i < 16; i++) L[16 * j + i] = Math.max(-32, Math.min(31, rint(x[16 * j + i] / dd))) + 32;
  }
  dv.setUint16(o + 208, floatToHalf(d), true);
  for (let j = 0; j < 256; j += 128) {
    const ql = o + j / 2, qh = o + 128 + j / 4;
    for (let l = 0; l < 32; l++) {
      const a = L[j + l], b = L[j + l + 32], c = L[j + l + 64], e = L[j + l + 96];
      dv.setUint8(ql + l, (a & 15) | ((c & 15) << 4));
      dv.setUint8(ql + l + 32, (b & 15) | ((e & 15) << 4));
      dv.setUint8(qh + l, (a >> 4) | ((b >> 4) << 2) | ((c >> 4) << 4) | ((e >> 4) << 6));
    }
  }
}

/** Back to floats (the inverse of encode, up to the format's rounding). */
export function decode(type: GgmlType, bytes: Uint8Array, n: number): Float32Array {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const y = new Float32Array(n);
  const h = (o: number) => halfToFloat(dv.getUint16(o, true));
  if (type === GGML.F32) return new Float32Array(bytes.slice().buffer, 0, n);
  if (type === GGML.F16) {
    for (let i = 0; i < n; i++) y[i] = h(2 * i);
    return y;
  }
  if (type === GGML.BF16) {
    const u = new Uint32Array(y.buffer);
    for (let i = 0; i < n; i++) u[i] = dv.getUint16(2 * i, true) << 16;
    return y;
  }
  const { block, bytes: bb } = LAYOUT[type];
  for (let b = 0; b < n / block; b++) {
    const o = b * bb, base = b * block;
    if (type === GGML.Q8_0) { for (let i = 0; i < 32; i++) y[base + i] = h(o) * dv.getInt8(o + 2 + i); }
    else if (type === GGML.Q4_0 || type === GGML.Q5_0) {
      const five = type === GGML.Q5_0, qh = five ? dv.getUint32(o + 2, true) : 0, qs = o + (five ? 6 : 2), off = five ? 16 : 8;
      for (let j = 0; j < 16; j++) {
        const v = dv.getUint8(qs + j);
        y[base + j] = h(o) * ((v & 15) + (five ? ((qh >>> j) & 1) << 4 : 0) - off);
        y[base + j + 16] = h(o) * ((v >> 4) + (five ? ((qh >>> (j + 16)) & 1) << 4 : 0) - off);
      }
    } else if (type === GGML.Q4_K) {
      const sc = bytes.subarray(o + 4, o + 16);
      for (let j = 0; j < 8; j++) {
        const [s, m] = scaleMinK4(j, sc);
        for (let i = 0; i < 32; i++) {
          const byte = dv.getUint8(o + 16 + Math.floor(j / 2) * 32 + i);
          y[base + 32 * j + i] = h(o) * s * (j % 2 ? byte >> 4 : byte & 15) - h(o + 2) * m;
        }
      }
    } else if (type === GGML.Q6_K) {
      for (let k = 0; k < 256; k++) {
        const half128 = Math.floor(k / 128), r = k % 128, quarter = Math.floor(r / 32), l = r % 32;
        const ql = dv.getUint8(o + half128 * 64 + l + (quarter % 2) * 32);
        const lo = quarter < 2 ? ql & 15 : ql >> 4;
        const hi = (dv.getUint8(o + 128 + half128 * 32 + l) >> (2 * quarter)) & 3;
        y[base + k] = h(o + 208) * dv.getInt8(o + 192 + Math.floor(k / 16)) * ((lo | (hi << 4)) - 32);
      }
    }
  }
  return y;
}
