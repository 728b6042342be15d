/**
 * Frozen weights inside a graph: each [out,in] weight is fed in its stored form (engine/quant/blocks.ts)
 * and turned into float32 right where it is used, by ops that are exact for the stored blocks:
 *
 *   bf16  Gather(LUT[65536], Cast(bits → int32)): the LUT maps every bf16 bit pattern to its float32
 *         (ORT's CPU build has no bf16 MatMul, and bf16 cannot cross the JS binding: docs/ORT.md §Dtypes across the binding)
 *   int8  DequantizeLinear(q, scales, zp = 128) with block_size 32 along the input axis
 *   int4  the two nibbles split by BitwiseAnd / BitShift, interleaved, then the same DequantizeLinear
 *         (zp = 8): the node binding has no uint4 tensors, so the blocks travel as packed uint8
 *
 * The forward product x·Wᵀ (FrozenInputs.matmul) runs from the stored form: int8/int4 through
 * com.microsoft MatMulNBits on the packed blocks (the same layout and zero points, so no float32 W
 * outlives the kernel), bf16 through its dequantized W and a Gemm. The backward's dX = dY·W cannot
 * use MatMulNBits (it contracts over the other axis): it dequantizes W again, from the same blocks,
 * ordered after dY (engine/onnx/autodiff.ts REMATERIALIZE), so each float32 weight is alive only
 * around its own product, never from a layer's recompute to its backward (docs/QUANT.md "Memory").
 * Both read exactly the stored blocks, so the gradient is exact for them.
 */
import type * as ortTypes from "onnxruntime-node";
import type { Graph, Value } from "../onnx/builder.ts";
import * as o from "../onnx/ops.ts";
import { REMATERIALIZE } from "../onnx/autodiff.ts";
import { tensor } from "../session.ts";
import { type BasePrecision, BLOCK, blocksPerRow, type FrozenTensor, ZERO_POINT } from "./blocks.ts";

export const BF16_LUT = "bf16_lut";

/** The float32 value of every bf16 bit pattern (fed once, 256 KB). */
let lut: Float32Array | null = null;
export function bf16Lut(): Float32Array {
  if (!lut) {
    lut = new Float32Array(65536);
    const u = new Uint32Array(lut.buffer);
    for (let i = 0; i < 65536; i++) u[i] = i << 16;
  }
  return lut;
}

/** Declares frozen-weight inputs of one graph; `weight` returns the float32 value at its first use. */
export class FrozenInputs {
  private values = new Map<string, Value>();
  private raw = new Map<string, { q: Value; scales?: Value }>();
  private lut: Value | null = null;
  /**
   * A scalar 0 (engine/gemma/staged.ts zeroAfter): weights declared while it is set pass through a
   * Reshape (no copy) whose shape depends on it, so their dequantization cannot run before it and
   * per-layer checkpointing dequantizes each layer's weights only when that layer is recomputed.
   */
  after: Value | null = null;
  constructor(readonly g: Graph, readonly precision: BasePrecision) {}

  /** float32 values of bf16 bits (e.g. a table's gathered rows) through the shared LUT input. */
  fromBf16(bits: Value): Value {
    this.lut ??= this.g.input(BF16_LUT, [65536]);
    return o.gather(this.g, this.lut, o.cast(this.g, bits, "int32"));
  }

  weight(name: string, shape: readonly [number, number]): Value {
    let v = this.values.get(name);
    if (!v) {
      v = this.dequantize(name, shape, this.after);
      this.values.set(name, v);
    }
    return v;
  }

  /**
   * x [M,in] · Wᵀ [in,out] from the stored form. Its gradient w.r.t. x dequantizes W anew after dY
   * (REMATERIALIZE), so the forward's float32 W (bf16) is freed right after the forward product.
   */
  matmul(x: Value, name: string, shape: readonly [number, number]): Value {
    const g = this.g, [out, inp] = shape;
    const remat = (after: Value) => this.dequantize(name, shape, after);
    // MatMulNBits wants whole blocks; an input size that does not divide by 32 (tiny test shapes, no
    // released Gemma) takes the dequantized weight instead, with the same rematerialized backward.
    if (this.precision === "fp32" || this.precision === "bf16" || inp % BLOCK !== 0) {
      const W = this.weight(name, shape);
      // Not for bf16: there the rematerialized backward raised gemma-3-1b's peak (4×256) from 3351 to
      // 4108 MB (notes/PERF.md); its dequantize reads graph inputs only, so the backward graph makes
      // it again anyway (engine/onnx/partition.ts).
      if (this.precision === "int8" || this.precision === "int4") REMATERIALIZE.set(W, remat);
      return o.gemm(g, x, W, { transB: true });
    }
    const { q, scales } = this.inputs(name, shape);
    const bits = this.precision === "int4" ? 4 : 8;
    // MatMulNBits reads B as [N, blocks, bytes per block]: the row-major packed rows, as blocks.ts stores them.
    // One Reshape, not the ordering one then this one: ORT 1.30's optimizer fails on that pair.
    const blocks = [out, blocksPerRow(inp), (BLOCK * bits) / 8];
    const qb = this.after ? this.ordered(q, this.after, blocks) : o.reshape(g, q, blocks);
    REMATERIALIZE.set(qb, remat);
    const y = g.node("MatMulNBits", [x, qb, scales!], [{ shape: [...x.shape.slice(0, -1), out], dtype: "float32" }], { K: inp, N: out, bits, block_size: BLOCK }, "com.microsoft");
    return y[0];
  }

  /** The graph inputs of one stored weight, declared once. */
  private inputs(name: string, [out, inp]: readonly [number, number]): { q: Value; scales?: Value } {
    let r = this.raw.get(name);
    if (!r) {
      const g = this.g;
      if (this.precision === "fp32") r = { q: g.input(name, [out, inp]) };
      else if (this.precision === "bf16") r = { q: g.input(name, [out, inp], "uint16") };
      else {
        r = {
          q: g.input(name, [out, this.precision === "int8" ? inp : inp / 2], "uint8"),
          scales: g.input(`${name}.scales`, [out, blocksPerRow(inp)], "float32"),
        };
      }
      this.raw.set(name, r);
    }
    return r;
  }

  /** `v` through a Reshape (no copy) whose shape depends on the scalar 0 `after`, so it runs after it. */
  private ordered(v: Value, after: Value | null, to: readonly number[] = v.shape as number[]): Value {
    if (!after) return v;
    const g = this.g;
    const shape = o.add(g, g.ints(to), o.cast(g, after, "int64"));
    return g.node("Reshape", [v, shape], [{ shape: to, dtype: v.dtype }])[0];
  }

  /** The float32 W [out,in] from the stored form, computed after `after` when given. */
  private dequantize(name: string, shape: readonly [number, number], after: Value | null): Value {
    const g = this.g, [out, inp] = shape;
    const { q: stored, scales } = this.inputs(name, shape);
    if (this.precision === "fp32") return stored;
    if (this.precision === "bf16") return this.fromBf16(this.ordered(stored, after));
    const nb = blocksPerRow(inp);
    let q: Value;
    if (this.precision === "int8") q = this.ordered(stored, after);
    else {
      const packed = this.ordered(stored, after);
      const lo = g.node("BitwiseAnd", [packed, g.constant([15], [], "uint8")], [{ shape: packed.shape, dtype: "uint8" }])[0];
      const hi = g.node("BitShift", [packed, g.constant([4], [], "uint8")], [{ shape: packed.shape, dtype: "uint8" }], { direction: "RIGHT" })[0];
      const pair = o.concat(g, [o.reshape(g, lo, [out, inp / 2, 1]), o.reshape(g, hi, [out, inp / 2, 1])], 2);
      q = o.reshape(g, pair, [out, inp]);
    }
    // The zero point is a scalar expanded at run time (its shape reads `after` when there is one, so
    // ORT cannot fold it into an [out,nb] initializer per weight).
    const zpShape = after ? o.add(g, g.ints([out, nb]), o.cast(g, after, "int64")) : g.ints([out, nb]);
    const zp = g.node("Expand", [g.constant([ZERO_POINT[this.precision]], [1, 1], "uint8"), zpShape], [{ shape: [out, nb], dtype: "uint8" }])[0];
    return g.node("DequantizeLinear", [q, scales!, zp], [{ shape: [out, inp], dtype: "float32" }], { axis: 1, block_size: BLOCK })[0];
  }
}

/** Zero-copy feeds of one frozen tensor under its graph input names. */
export function frozenFeeds(name: string, t: FrozenTensor): Record<string, ortTypes.Tensor> {
  const [out, inp] = t.shape;
  switch (t.kind) {
    case "fp32":
      return { [name]: tensor("float32", t.data, t.shape) };
    case "bf16":
      return { [name]: tensor("uint16", t.bits, t.shape), [BF16_LUT]: tensor("float32", bf16Lut(), [65536]) };
    case "int8":
    case "int4":
      return {
        [name]: tensor("uint8", t.q, t.kind === "int8" ? t.shape : [out, inp / 2]),
        [`${name}.scales`]: tensor("float32", t.scales, [out, blocksPerRow(inp)]),
      };
  }
}
