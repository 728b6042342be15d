/** Every backward rule in RULES checked against central finite differences in float64. */
import { RULES } from "./autodiff.ts";
import { type Graph, size } from "./builder.ts";
import { type CheckInput, gradCheck, randn64 } from "./gradcheck.ts";
import * as o from "./ops.ts";
import { FrozenInputs } from "../quant/graph.ts";
import { quantize } from "../quant/blocks.ts";

function assertClose(label: string, r: { maxRelErr: number; worst: string }, tol = 1e-6) {
  if (!(r.maxRelErr <= tol)) throw new Error(`${label}: gradient mismatch, max rel err ${r.maxRelErr} at ${r.worst}`);
}

let seed = 1;
function inp(g: Graph, name: string, shape: number[], opts: { scale?: number; positive?: boolean } = {}): CheckInput {
  const data = randn64(size(shape), seed++, opts.scale ?? 1);
  if (opts.positive) data.forEach((x, i) => (data[i] = Math.abs(x) + 0.5));
  return { value: g.input(name, shape), data };
}
function ints(g: Graph, name: string, shape: number[], values: number[]): CheckInput {
  return { value: g.input(name, shape, "int64"), data: BigInt64Array.from(values.map(BigInt)), check: false };
}

/** One builder per rule; a rule added to RULES without a case here fails the coverage test. */
const CASES: Record<string, (g: Graph) => { inputs: CheckInput[]; out: ReturnType<typeof o.add> }> = {
  Identity: (g) => {
    const a = inp(g, "a", [3, 2]);
    return { inputs: [a], out: o.identity(g, a.value) };
  },
  Add: (g) => {
    const a = inp(g, "a", [2, 3, 4]), b = inp(g, "b", [3, 1]);
    return { inputs: [a, b], out: o.add(g, a.value, b.value) };
  },
  Sub: (g) => {
    const a = inp(g, "a", [4]), b = inp(g, "b", [2, 4]);
    return { inputs: [a, b], out: o.sub(g, a.value, b.value) };
  },
  Mul: (g) => {
    const a = inp(g, "a", [2, 3]), b = inp(g, "b", [2, 1]);
    return { inputs: [a, b], out: o.mul(g, a.value, b.value) };
  },
  Div: (g) => {
    const a = inp(g, "a", [2, 3]), b = inp(g, "b", [3], { positive: true });
    return { inputs: [a, b], out: o.div(g, a.value, b.value) };
  },
  Neg: (g) => {
    const a = inp(g, "a", [5]);
    return { inputs: [a], out: o.neg(g, a.value) };
  },
  Exp: (g) => {
    const a = inp(g, "a", [5]);
    return { inputs: [a], out: o.exp(g, a.value) };
  },
  Tanh: (g) => {
    const a = inp(g, "a", [6], { scale: 2 });
    return { inputs: [a], out: o.tanh(g, a.value) };
  },
  Gelu: (g) => {
    const a = inp(g, "a", [8], { scale: 2 });
    return { inputs: [a], out: o.geluTanh(g, a.value) };
  },
  Sqrt: (g) => {
    const a = inp(g, "a", [6], { positive: true });
    return { inputs: [a], out: o.sqrt(g, a.value) };
  },
  Log: (g) => {
    const a = inp(g, "a", [6], { positive: true });
    return { inputs: [a], out: o.log(g, a.value) };
  },
  Reciprocal: (g) => {
    const a = inp(g, "a", [6], { positive: true });
    return { inputs: [a], out: o.reciprocal(g, a.value) };
  },
  MatMul: (g) => {
    const a = inp(g, "a", [2, 2, 3, 4]), b = inp(g, "b", [2, 1, 4, 5]);
    return { inputs: [a, b], out: o.matmul(g, a.value, b.value) };
  },
  Gemm: (g) => {
    // All four transpose combinations and a bias, summed into one output.
    const a = inp(g, "a", [3, 4]), at = inp(g, "at", [4, 3]), b = inp(g, "b", [4, 5]), bt = inp(g, "bt", [5, 4]);
    const c = inp(g, "c", [5]);
    const y1 = o.gemm(g, a.value, b.value, { alpha: 0.5 }, c.value);
    const y2 = o.gemm(g, at.value, b.value, { transA: true });
    const y3 = o.gemm(g, a.value, bt.value, { transB: true, alpha: 2 });
    const y4 = o.gemm(g, at.value, bt.value, { transA: true, transB: true });
    return { inputs: [a, at, b, bt, c], out: o.add(g, o.add(g, y1, y2), o.add(g, y3, y4)) };
  },
  Transpose: (g) => {
    const a = inp(g, "a", [2, 3, 4]);
    return { inputs: [a], out: o.transpose(g, a.value, [2, 0, 1]) };
  },
  Reshape: (g) => {
    const a = inp(g, "a", [2, 6]);
    return { inputs: [a], out: o.reshape(g, a.value, [3, 4]) };
  },
  Expand: (g) => {
    const a = inp(g, "a", [2, 1, 3]);
    return { inputs: [a], out: o.expand(g, a.value, [4, 2, 5, 3]) };
  },
  ReduceSum: (g) => {
    const a = inp(g, "a", [2, 3, 4]);
    return { inputs: [a], out: o.add(g, o.reduceSum(g, a.value, [1], true), o.reshape(g, o.reduceSum(g, a.value, [0, 2], false), [3, 1])) };
  },
  ReduceMean: (g) => {
    const a = inp(g, "a", [2, 3, 4]);
    return { inputs: [a], out: o.reduceMean(g, a.value, [-1], true) };
  },
  Softmax: (g) => {
    const a = inp(g, "a", [3, 5], { scale: 2 });
    return { inputs: [a], out: o.softmax(g, a.value, -1) };
  },
  LogSoftmax: (g) => {
    const a = inp(g, "a", [3, 5], { scale: 2 });
    return { inputs: [a], out: o.logSoftmax(g, a.value, -1) };
  },
  Gather: (g) => {
    const w = inp(g, "w", [5, 3]);
    const idx = ints(g, "idx", [2, 3], [0, 4, 4, 1, 0, 2]);
    return { inputs: [w, idx], out: o.gather(g, w.value, idx.value) };
  },
  GatherElements: (g) => {
    const x = inp(g, "x", [3, 4]);
    const idx = ints(g, "idx", [3, 1], [3, 0, 3]);
    return { inputs: [x, idx], out: o.gatherElements(g, x.value, idx.value, 1) };
  },
  ScatterElements: (g) => {
    // Accumulating form with repeated destinations, int32 indices as the MoE routing uses them.
    const x = inp(g, "x", [3, 4]), u = inp(g, "u", [2, 4]);
    const idx = g.constant(Int32Array.from([2, 0, 2, 1, 2, 2, 0, 1]), [2, 4], "int32");
    return { inputs: [x, u], out: o.scatterElementsAdd(g, x.value, idx, u.value, 0) };
  },
  Concat: (g) => {
    const a = inp(g, "a", [2, 3]), b = inp(g, "b", [2, 2]);
    return { inputs: [a, b], out: o.concat(g, [a.value, b.value], 1) };
  },
  Split: (g) => {
    // Only the second piece is used: the first gets a zero gradient.
    const a = inp(g, "a", [2, 5]);
    const [, y] = o.split(g, a.value, [2, 3], 1);
    return { inputs: [a], out: o.mul(g, y, y) };
  },
  Cast: (g) => {
    const a = inp(g, "a", [4]);
    return { inputs: [a], out: o.cast(g, o.cast(g, a.value, "float32"), "float64") };
  },
  // A frozen int4 weight [3,32]: the product runs in float32, so the check is float32-accurate.
  MatMulNBits: (g) => {
    const a = inp(g, "a", [2, 32]);
    const y = new FrozenInputs(g, "int4").matmul(o.cast(g, a.value, "float32"), "w", [3, 32]);
    const t = quantize(Float32Array.from({ length: 96 }, (_, i) => Math.sin(i * 0.9)), [3, 32], "int4");
    if (t.kind !== "int4") throw new Error("int4 expected");
    const q = g.inputs.find((v) => v.name === "w")!, s = g.inputs.find((v) => v.name === "w.scales")!;
    return { inputs: [a, { value: q, data: t.q, check: false }, { value: s, data: t.scales, check: false }], out: o.cast(g, y, "float64") };
  },
};

Deno.test("every backward rule has a finite-difference case", () => {
  const missing = Object.keys(RULES).filter((k) => !CASES[k]);
  if (missing.length) throw new Error(`Rules without a gradient check: ${missing.join(", ")}`);
});

for (const [op, build] of Object.entries(CASES)) {
  Deno.test(`backward rule ${op} matches finite differences`, async () => {
    // Cast round-trips through float32, so its numeric derivative is only float32-accurate.
    const f32 = op === "Cast" || op === "MatMulNBits";
    assertClose(op, await gradCheck(build, { h: f32 ? 1e-2 : 1e-6 }), f32 ? 1e-2 : 1e-6);
  });
}

Deno.test("fan-out gradients are summed (x used three times)", async () => {
  const r = await gradCheck((g) => {
    const a = inp(g, "a", [4]);
    const y = o.mul(g, o.mul(g, a.value, a.value), o.exp(g, a.value));
    return { inputs: [a], out: y };
  });
  assertClose("fan-out", r);
});

Deno.test("a broken rule is caught by the check", async () => {
  const saved = RULES.Tanh;
  RULES.Tanh = (g, n, [d]) => [o.mul(g, d!, n.outputs[0])];
  try {
    const r = await gradCheck(CASES.Tanh);
    if (r.maxRelErr < 1e-3) throw new Error("a wrong Tanh rule passed the gradient check");
  } finally {
    RULES.Tanh = saved;
  }
});

Deno.test("a table used by Gather and a product (tied embedding) gets both gradients, repeated ids summed", async () => {
  const r = await gradCheck((g) => {
    const w = inp(g, "w", [5, 3]);
    const x = inp(g, "x", [2, 3]);
    const idx = ints(g, "idx", [4], [1, 3, 1, 4]);
    // The product comes later in the tape, so the reverse walk reaches it before the Gather.
    const e = o.gather(g, w.value, idx.value); // [4,3]
    const logits = o.gemm(g, x.value, w.value, { transB: true }); // [2,5]
    return { inputs: [w, x, idx], out: o.add(g, o.reduceSum(g, e, [0, 1], false), o.reduceSum(g, o.mul(g, logits, logits), [0, 1], false)) };
  });
  assertClose("tied gather + gemm", r);
});

Deno.test("Gather with int32 indices (MoE routing): rows and 1-D tables, repeated ids summed, two Gathers of one table", async () => {
  const r = await gradCheck((g) => {
    const w = inp(g, "w", [5, 3]), v = inp(g, "v", [6]);
    const i1 = g.constant(Int32Array.from([4, 0, 4]), [3], "int32"), i2 = g.constant(Int32Array.from([1, 4]), [2], "int32");
    const rows = o.concat(g, [o.gather(g, w.value, i1), o.gather(g, w.value, i2)], 0); // [5,3]
    const picked = o.reshape(g, o.gather(g, v.value, g.constant(Int32Array.from([5, 5, 2, 0, 1]), [5], "int32")), [5, 1]);
    return { inputs: [w, v], out: o.mul(g, rows, picked) };
  });
  assertClose("Gather int32", r);
});
