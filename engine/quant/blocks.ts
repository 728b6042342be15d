/**
 * Frozen base weights in a low precision (docs/QUANT.md): bf16 as stored, or 8-bit / 4-bit blocks
 * quantized at load (QLoRA-style, absmax per block of 32 inputs, one fp32 scale per block).
 *
 * Layouts match what the graph reads (engine/quant/graph.ts) byte for byte:
 *   bf16  bits [out,in] uint16 (the top half of the float32)
 *   int8  q [out,in] uint8 = round(w/s) + 128, s = absmax/127 per block
 *   int4  q [out,in/2] uint8, element 2j in the low nibble and 2j+1 in the high one,
 *         nibble = round(w/s) + 8, s = absmax/7 per block
 *   scales [out, ceil(in/32)] float32 (int8, int4)
 * Symmetric blocks (a fixed zero point) keep dequantization one multiply: w ≈ (q − zp)·s.
 */
import { floatToBf16 } from "../safetensors.ts";

export const BASE_PRECISIONS = ["fp32", "bf16", "int8", "int4"] as const;
export type BasePrecision = typeof BASE_PRECISIONS[number];

/** Inputs per scale. 32 is the common GGUF/QLoRA-scale choice; every Gemma dimension divides by it. */
export const BLOCK = 32;

export type FrozenTensor =
  | { kind: "fp32"; shape: [number, number]; data: Float32Array }
  | { kind: "bf16"; shape: [number, number]; bits: Uint16Array }
  | { kind: "int8" | "int4"; shape: [number, number]; q: Uint8Array; scales: Float32Array };

export const ZERO_POINT = { int8: 128, int4: 8 } as const;
const QMAX = { int8: 127, int4: 7 } as const;

export function blocksPerRow(inDim: number): number {
  return Math.ceil(inDim / BLOCK);
}

/** bf16 bits of float32 values (round to nearest even, as torch's .to(bfloat16)). */
export function toBf16Bits(data: Float32Array): Uint16Array {
  const out = new Uint16Array(data.length);
  for (let i = 0; i < data.length; i++) out[i] = floatToBf16(data[i]);
  return out;
}

/** float32 values of bf16 bits, into `out` (exact: bf16 is the top half of a float32). */
export function bf16ToF32(bits: Uint16Array, out: Float32Array = new Float32Array(bits.length)): Float32Array {
  const u32 = new Uint32Array(out.buffer, out.byteOffset, bits.length);
  for (let i = 0; i < bits.length; i++) u32[i] = bits[i] << 16;
  return out;
}

/** A [out,in] float32 weight in the given precision. */
export function quantize(data: Float32Array, shape: readonly number[], precision: BasePrecision): FrozenTensor {
  const [rows, cols] = shape;
  if (shape.length !== 2 || rows * cols !== data.length) throw new RangeError(`quantize: shape [${shape}] does not hold ${data.length} values`);
  const s: [number, number] = [rows, cols];
  if (precision === "fp32") return { kind: "fp32", shape: s, data };
  if (precision === "bf16") return { kind: "bf16", shape: s, bits: toBf16Bits(data) };
  if (precision === "int4" && cols % 2 !== 0) throw new RangeError(`int4 needs an even input size; this weight is [${shape}]`);
  const nb = blocksPerRow(cols), qmax = QMAX[precision], zp = ZERO_POINT[precision];
  const scales = new Float32Array(rows * nb);
  const q = new Uint8Array(precision === "int8" ? rows * cols : (rows * cols) / 2);
  for (let r = 0; r < rows; r++) {
    const row = r * cols;
    for (let b = 0; b < nb; b++) {
      const k0 = b * BLOCK, k1 = Math.min(cols, k0 + BLOCK);
      let amax = 0;
      for (let k = k0; k < k1; k++) amax = Math.max(amax, Math.abs(data[row + k]));
      // Math.fround: the graph multiplies by the float32 scale, so quantize against that same value.
      const sc = Math.fround(amax / qmax) || 1;
      scales[r * nb + b] = sc;
      for (let k = k0; k < k1; k++) {
        const v = Math.max(-qmax, Math.min(qmax, Math.round(data[row + k] / sc))) + zp;
        const i = row + k;
        if (precision === "int8") q[i] = v;
        else q[i >> 1] |= i & 1 ? v << 4 : v;
      }
    }
  }
  return { kind: precision, shape: s, q, scales };
}

/** The float32 weight the graph computes from a frozen tensor (the reference for tests and merges). */
export function dequantize(t: FrozenTensor): Float32Array {
  if (t.kind === "fp32") return t.data;
  if (t.kind === "bf16") return bf16ToF32(t.bits);
  const [rows, cols] = t.shape, nb = blocksPerRow(cols), zp = ZERO_POINT[t.kind];
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let k = 0; k < cols; k++) {
      const i = r * cols + k;
      const v = t.kind === "int8" ? t.q[i] : (t.q[i >> 1] >> ((i & 1) * 4)) & 15;
      out[i] = Math.fround((v - zp) * t.scales[r * nb + Math.floor(k / BLOCK)]);
    }
  }
  return out;
}

/** Bytes a frozen tensor holds. */
export function frozenBytes(t: FrozenTensor): number {
  if (t.kind === "fp32") return t.data.byteLength;
  if (t.kind === "bf16") return t.bits.byteLength;
  return t.q.byteLength + t.scales.byteLength;
}

/** Bytes per weight of a [rows, cols] matrix in a precision (the memory estimate's figure). */
export function bytesPerWeight(precision: BasePrecision, cols = 1024): number {
  const scale = 4 * blocksPerRow(cols) / cols;
  return { fp32: 4, bf16: 2, int8: 1 + scale, int4: 0.5 + scale }[precision];
}
