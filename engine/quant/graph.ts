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
 * The dequantized weight feeds an ordinary Gemm, so the backward's dX = dY·W multiplies by exactly the
 * same float32 values as the forward (docs/QUANT.md; MatMulNBits measured slower with fed weights).
 * The dequantize nodes read graph inputs only, so engine/onnx/partition.ts recomputes them in the
 * backward graph instead of saving a float32 copy of every weight.
 */
import type * as ortTypes from "onnxruntime-node";
import type { Graph, Value } from "../onnx/builder.ts";
import * as o from "../onnx/ops.ts";
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
      v = this.declare(name, shape);
      this.values.set(name, v);
    }
    return v;
  }

  private ordered(v: Value): Value {
    if (!this.after) return v;
    const g = this.g;
    const shape = o.add(g, g.ints(v.shape as number[]), o.cast(g, this.after, "int64"));
    return g.node("Reshape", [v, shape], [{ shape: v.shape, dtype: v.dtype }])[0];
  }

  private declare(name: string, [out, inp]: readonly [number, number]): Value {
    const g = this.g;
    if (this.precision === "fp32") return g.input(name, [out, inp]);
    if (this.precision === "bf16") {
      this.lut ??= g.input(BF16_LUT, [65536]);
      return o.gather(g, this.lut, o.cast(g, this.ordered(g.input(name, [out, inp], "uint16")), "int32"));
    }
    const nb = blocksPerRow(inp);
    const scales = g.input(`${name}.scales`, [out, nb]);
    let q: Value;
    if (this.precision === "int8") q = this.ordered(g.input(name, [out, inp], "uint8"));
    else {
      const packed = this.ordered(g.input(name, [out, inp / 2], "uint8"));
      const lo = g.node("BitwiseAnd", [packed, g.constant([15], [], "uint8")], [{ shape: packed.shape, dtype: "uint8" }])[0];
      const hi = g.node("BitShift", [packed, g.constant([4], [], "uint8")], [{ shape: packed.shape, dtype: "uint8" }], { direction: "RIGHT" })[0];
      const pair = o.concat(g, [o.reshape(g, lo, [out, inp / 2, 1]), o.reshape(g, hi, [out, inp / 2, 1])], 2);
      q = o.reshape(g, pair, [out, inp]);
    }
    // The zero point is a scalar expanded at run time: an [out,nb] constant would bloat the model bytes.
    const zp = o.expand(g, g.constant([ZERO_POINT[this.precision]], [1, 1], "uint8"), [out, nb]);
    return g.node("DequantizeLinear", [q, scales, zp], [{ shape: [out, inp], dtype: "float32" }], { axis: 1, block_size: BLOCK })[0];
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
