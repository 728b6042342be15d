/**
 * Reverse-mode autodiff over the builder's tape.
 *
 * RULES maps an op type to its vector-Jacobian product: given the node and the gradients of its
 * outputs, it emits ONNX nodes for the gradients of the inputs that need one. `gradients` walks the
 * tape backwards, only through nodes on a path from a wanted leaf to the loss, and sums the
 * contributions where a value fans out.
 */
import { type Dim, type Graph, type Node, size, type Value } from "./builder.ts";
import * as o from "./ops.ts";

type Rule = (g: Graph, n: Node, dy: (Value | null)[], need: boolean[]) => (Value | null)[];

/** Sums `d` (shaped like a broadcast result) back down to `shape`. */
export function unbroadcast(g: Graph, d: Value, shape: readonly Dim[]): Value {
  if (d.shape.length === shape.length && d.shape.every((x, i) => x === shape[i])) return d;
  const lead = d.shape.length - shape.length;
  const axes: number[] = [];
  d.shape.forEach((x, i) => {
    if (i < lead || (shape[i - lead] === 1 && x !== 1)) axes.push(i);
  });
  const r = axes.length ? o.reduceSum(g, d, axes, true) : d;
  return o.reshape(g, r, shape);
}

function swapLast(g: Graph, x: Value): Value {
  const r = x.shape.length;
  const perm = [...Array(r).keys()];
  [perm[r - 2], perm[r - 1]] = [perm[r - 1], perm[r - 2]];
  return o.transpose(g, x, perm);
}

/** Expands a keepdims reduction result back to the input's shape. */
function expandTo(g: Graph, d: Value, n: Node): Value {
  const x = n.inputs[0]!;
  const keep = n.attrs.keepdims !== 0;
  let r = d;
  if (!keep) {
    const axes = Array.from(n.inputs[1] ? readInts(g, n.inputs[1]) : []);
    r = o.reshape(g, d, x.shape.map((s, i) => (axes.includes(i) ? 1 : s)));
  }
  return o.expand(g, r, x.shape);
}

function readInts(g: Graph, v: Value): number[] {
  const t = g.initializers.get(v);
  if (!t) throw new Error(`Expected a constant for "${v.name}"`);
  return Array.from(t.data as BigInt64Array, Number);
}

/**
 * Gather's indices as ScatterND wants them, [..., 1]. A graph input gets them as a second view of its
 * buffer: ORT's WebGPU provider has no int64 Reshape kernel and would run that node on the CPU
 * (docs/DEVICES.md).
 */
function scatterIndex(g: Graph, idx: Value): Value {
  return g.inputAsColumn(idx) ?? o.reshape(g, idx, [...idx.shape, 1]);
}

/**
 * Frozen weights whose gradient uses should not keep the forward's value alive: the function builds
 * the same value again, computed after the given one (engine/quant/graph.ts: a dequantized weight,
 * made again after dY for dX = dY·W). Keyed by the Gemm's B input, or MatMulNBits' packed B.
 */
export const REMATERIALIZE = new WeakMap<Value, (after: Value) => Value>();

/** A scalar 0 computed from `d`: an ordering dependency, so what reads it runs after d exists. */
function zeroOf(g: Graph, d: Value): Value {
  return o.mul(g, o.reduceSum(g, d, d.shape.map((_, i) => i), false), g.constant([0], [], d.dtype));
}

/**
 * base + the rows `d` scattered back to where Gather(data, idx) read them (axis 0). int64 indices use
 * ScatterND; int32 ones (the mixture of experts' routing, engine/gemma/moe.ts: ORT's WebGPU provider
 * has no int64 arithmetic, and ScatterND takes int64 only) use ScatterElements with each index
 * repeated along the row.
 */
function scatterRowsAdd(g: Graph, base: Value, idx: Value, d: Value): Value {
  if (idx.dtype !== "int32") return o.scatterNDAdd(g, base, scatterIndex(g, idx), d);
  if (idx.shape.length !== 1) throw new RangeError(`Gather backward: int32 indices must be 1-D, got [${idx.shape}]`);
  const rows = d.shape.length === 1 ? idx : o.expand(g, o.reshape(g, idx, [idx.shape[0], ...d.shape.slice(1).map(() => 1)]), d.shape);
  return o.scatterElementsAdd(g, base, rows, d, 0);
}

export const RULES: Record<string, Rule> = {
  Identity: (_g, _n, [d]) => [d],
  Add: (g, n, [d]) => [unbroadcast(g, d!, n.inputs[0]!.shape), unbroadcast(g, d!, n.inputs[1]!.shape)],
  Sub: (g, n, [d], need) => [
    unbroadcast(g, d!, n.inputs[0]!.shape),
    need[1] ? unbroadcast(g, o.neg(g, d!), n.inputs[1]!.shape) : null,
  ],
  Mul: (g, n, [d], need) => {
    const [a, b] = n.inputs as Value[];
    return [
      need[0] ? unbroadcast(g, o.mul(g, d!, b), a.shape) : null,
      need[1] ? unbroadcast(g, o.mul(g, d!, a), b.shape) : null,
    ];
  },
  Div: (g, n, [d], need) => {
    const [a, b] = n.inputs as Value[];
    const y = n.outputs[0];
    return [
      need[0] ? unbroadcast(g, o.div(g, d!, b), a.shape) : null,
      need[1] ? unbroadcast(g, o.neg(g, o.div(g, o.mul(g, d!, y), b)), b.shape) : null,
    ];
  },
  Neg: (g, _n, [d]) => [o.neg(g, d!)],
  Exp: (g, n, [d]) => [o.mul(g, d!, n.outputs[0])],
  Tanh: (g, n, [d]) => {
    const y = n.outputs[0];
    return [o.mul(g, d!, o.sub(g, g.scalar(1), o.mul(g, y, y)))];
  },
  Gelu: (g, n, [d]) => {
    // y = x/2·(1 + t), t = tanh(c·(x + a·x³)); dy/dx = (1 + t)/2 + x/2·(1 − t²)·c·(1 + 3a·x²).
    const x = n.inputs[0]!;
    const a = 0.044715, c = Math.sqrt(2 / Math.PI);
    const x2 = o.mul(g, x, x);
    const t = o.tanh(g, o.scale(g, o.mul(g, x, o.add(g, g.scalar(1), o.scale(g, x2, a))), c));
    const inner = o.add(g, g.scalar(c), o.scale(g, x2, 3 * a * c)); // c·(1 + 3a·x²)
    const slope = o.mul(g, o.mul(g, o.scale(g, x, 0.5), o.sub(g, g.scalar(1), o.mul(g, t, t))), inner);
    return [o.mul(g, d!, o.add(g, o.scale(g, o.add(g, g.scalar(1), t), 0.5), slope))];
  },
  Log: (g, n, [d]) => [o.div(g, d!, n.inputs[0]!)],
  Sqrt: (g, n, [d]) => [o.div(g, o.scale(g, d!, 0.5), n.outputs[0])],
  Reciprocal: (g, n, [d]) => {
    const y = n.outputs[0];
    return [o.neg(g, o.mul(g, d!, o.mul(g, y, y)))];
  },
  MatMul: (g, n, [d], need) => {
    const [a, b] = n.inputs as Value[];
    return [
      need[0] ? unbroadcast(g, o.matmul(g, d!, swapLast(g, b)), a.shape) : null,
      need[1] ? unbroadcast(g, o.matmul(g, swapLast(g, a), d!), b.shape) : null,
    ];
  },
  Gemm: (g, n, [d], need) => {
    const [a, b0, c] = n.inputs as Value[];
    const remat = REMATERIALIZE.get(b0);
    const b = remat && need[0] && !need[1] ? remat(zeroOf(g, d!)) : b0;
    const tA = n.attrs.transA === 1, tB = n.attrs.transB === 1;
    const alpha = n.attrs.alpha ? (n.attrs.alpha as { float: number }).float : 1;
    const beta = n.attrs.beta ? (n.attrs.beta as { float: number }).float : 1;
    const da = !need[0] ? null : tA ? o.gemm(g, b, d!, { transA: tB, transB: true, alpha }) : o.gemm(g, d!, b, { transB: !tB, alpha });
    const db = !need[1] ? null : tB ? o.gemm(g, d!, a, { transA: true, transB: tA, alpha }) : o.gemm(g, a, d!, { transA: !tA, alpha });
    const dc = c && need[2] ? unbroadcast(g, o.scale(g, d!, beta), c.shape) : null;
    return c ? [da, db, dc] : [da, db];
  },
  // y = x·Wᵀ with W [N,K] stored in blocks (engine/quant/graph.ts): dx = dy·W, W dequantized after dy.
  MatMulNBits: (g, n, [d], need) => {
    const remat = REMATERIALIZE.get(n.inputs[1]!);
    if (need[1] || need[2] || !remat) throw new Error("MatMulNBits: only the gradient of its input A is supported (a frozen base)");
    const W = remat(zeroOf(g, d!));
    return [need[0] ? o.matmul(g, d!, W) : null, null, null];
  },
  Transpose: (g, n, [d]) => {
    const perm = n.attrs.perm as number[];
    const inv = perm.map((_, i) => perm.indexOf(i));
    return [o.transpose(g, d!, inv)];
  },
  Reshape: (g, n, [d]) => [o.reshape(g, d!, n.inputs[0]!.shape), null],
  Expand: (g, n, [d]) => [unbroadcast(g, d!, n.inputs[0]!.shape), null],
  ReduceSum: (g, n, [d]) => [expandTo(g, d!, n), null],
  ReduceMean: (g, n, [d]) => {
    const x = n.inputs[0]!;
    // The reduced axes must be static (a norm's last axis); batch and sequence may be symbolic.
    const axes = readInts(g, n.inputs[1]!);
    const count = size(axes.map((a) => x.shape[a]));
    return [expandTo(g, o.scale(g, d!, 1 / count), n), null];
  },
  Softmax: (g, n, [d]) => {
    const y = n.outputs[0];
    const axis = n.attrs.axis as number;
    const dot = o.reduceSum(g, o.mul(g, d!, y), [axis], true);
    return [o.mul(g, y, o.sub(g, d!, dot))];
  },
  LogSoftmax: (g, n, [d]) => {
    const y = n.outputs[0];
    const axis = n.attrs.axis as number;
    const total = o.reduceSum(g, d!, [axis], true);
    return [o.sub(g, d!, o.mul(g, o.exp(g, y), total))];
  },
  Gather: (g, n, [d]) => {
    const [data, idx] = n.inputs as Value[];
    return [scatterRowsAdd(g, o.zeros(g, data.shape, data.dtype), idx, d!), null];
  },
  GatherElements: (g, n, [d]) => {
    const [data, idx] = n.inputs as Value[];
    return [o.scatterElementsAdd(g, o.zeros(g, data.shape, data.dtype), idx, d!, n.attrs.axis as number), null];
  },
  // Only the accumulating form (reduction "add"): the data passes through, each update gets the
  // gradient at its destination. Index plumbing (no reduction) never carries a gradient.
  ScatterElements: (g, n, [d], need) => {
    if (n.attrs.reduction !== "add") throw new Error("No backward rule for ScatterElements without reduction add");
    const idx = n.inputs[1]!;
    return [need[0] ? d! : null, null, need[2] ? o.gatherElements(g, d!, idx, n.attrs.axis as number) : null];
  },
  Concat: (g, n, [d]) => {
    const axis = n.attrs.axis as number;
    return o.split(g, d!, (n.inputs as Value[]).map((x) => x.shape[axis]), axis);
  },
  Split: (g, n, ds) => {
    const axis = n.attrs.axis as number;
    const parts = n.outputs.map((y, i) => ds[i] ?? o.zeros(g, y.shape, y.dtype));
    return [o.concat(g, parts, axis), null];
  },
  Cast: (g, n, [d]) => {
    const x = n.inputs[0]!;
    return [x.dtype.startsWith("float") ? o.cast(g, d!, x.dtype) : null];
  },
};

/** Ops whose inputs never receive gradients (integer plumbing). */
const NON_DIFF = new Set(["ConstantOfShape", "Shape", "Equal", "Less", "ScatterND"]);

/**
 * Emits the gradient graph of scalar `loss` with respect to each of `wrt`.
 * `seed` is d(final)/d(loss) (default 1). Returns a map from each wanted value to its gradient
 * (a zero tensor when the loss does not depend on it).
 */
export function gradients(g: Graph, loss: Value, wrt: Value[], seed?: Value): Map<Value, Value> {
  return gradientsFromSeeds(g, new Map([[loss, seed ?? g.scalar(1)]]), wrt);
}

/**
 * The same walk started from gradients given for intermediate values (e.g. d loss/d logits computed
 * in closed form), so the nodes after them are never differentiated.
 */
export function gradientsFromSeeds(g: Graph, seeds: Map<Value, Value>, wrt: Value[]): Map<Value, Value> {
  const tape = g.nodes.slice();
  // Forward pass: which values depend on a wanted leaf.
  const live = new Set<number>(wrt.map((v) => v.id));
  for (const n of tape) {
    if (n.inputs.some((x) => x && live.has(x.id))) { for (const y of n.outputs) live.add(y.id); }
  }
  const grad = new Map<number, Value>();
  for (const [v, d] of seeds) grad.set(v.id, d);
  const accumulate = (v: Value, d: Value) => {
    const prev = grad.get(v.id);
    grad.set(v.id, prev ? o.add(g, prev, d) : d);
  };
  for (let i = tape.length - 1; i >= 0; i--) {
    const n = tape[i];
    const dys = n.outputs.map((y) => grad.get(y.id) ?? null);
    if (dys.every((d) => d === null)) continue;
    const need = n.inputs.map((x) => !!x && live.has(x.id) && x.dtype.startsWith("float"));
    if (!need.some(Boolean)) continue;
    if (NON_DIFF.has(n.op)) continue;
    const rule = RULES[n.op];
    if (!rule) throw new Error(`No backward rule for op ${n.op}`);
    // A Gather whose table already has a gradient (a tied embedding: the LM head came first in the
    // reverse walk) scatter-adds into it, instead of scattering into a fresh zero table and adding
    // two full [V,H] tensors.
    if (n.op === "Gather" && need[0] && grad.has(n.inputs[0]!.id)) {
      const [data, idx] = n.inputs as Value[];
      grad.set(data.id, scatterRowsAdd(g, grad.get(data.id)!, idx, dys[0]!));
      continue;
    }
    // Multi-output rules get null for outputs without gradient; single-output ones always get one.
    const dxs = rule(g, n, dys, need);
    n.inputs.forEach((x, k) => {
      if (x && need[k] && dxs[k]) accumulate(x, dxs[k]!);
    });
  }
  const out = new Map<Value, Value>();
  for (const w of wrt) out.set(w, grad.get(w.id) ?? o.zeros(g, w.shape, w.dtype));
  return out;
}
