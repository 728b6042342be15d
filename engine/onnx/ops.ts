/**
 * Op helpers over the builder: each computes its output shape (static or symbolic, builder.ts) and
 * records one node.
 * Every op here but ReduceMax has a backward rule in autodiff.ts (RULES), keyed by the same op type.
 */
import { addDim, type Dim, type DType, type Graph, isStatic, product, type Value } from "./builder.ts";

/** Numpy-style broadcast of two shapes; symbols broadcast only against 1 or themselves. */
export function broadcastShape(a: readonly Dim[], b: readonly Dim[]): Dim[] {
  const n = Math.max(a.length, b.length);
  const out: Dim[] = [];
  for (let i = 0; i < n; i++) {
    const x = a[a.length - n + i] ?? 1;
    const y = b[b.length - n + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) throw new RangeError(`Cannot broadcast [${a}] with [${b}]`);
    out.push(x === 1 ? y : x);
  }
  return out;
}

function binary(g: Graph, op: string, a: Value, b: Value): Value {
  return g.node(op, [a, b], [{ shape: broadcastShape(a.shape, b.shape), dtype: a.dtype }])[0];
}

export const add = (g: Graph, a: Value, b: Value) => binary(g, "Add", a, b);
export const sub = (g: Graph, a: Value, b: Value) => binary(g, "Sub", a, b);
export const mul = (g: Graph, a: Value, b: Value) => binary(g, "Mul", a, b);
export const div = (g: Graph, a: Value, b: Value) => binary(g, "Div", a, b);

function unary(g: Graph, op: string, x: Value, attrs = {}): Value {
  return g.node(op, [x], [{ shape: x.shape, dtype: x.dtype }], attrs)[0];
}

export const neg = (g: Graph, x: Value) => unary(g, "Neg", x);
export const exp = (g: Graph, x: Value) => unary(g, "Exp", x);
export const tanh = (g: Graph, x: Value) => unary(g, "Tanh", x);
export const sqrt = (g: Graph, x: Value) => unary(g, "Sqrt", x);
export const reciprocal = (g: Graph, x: Value) => unary(g, "Reciprocal", x);
export const identity = (g: Graph, x: Value) => unary(g, "Identity", x);
export const softmax = (g: Graph, x: Value, axis = -1) => unary(g, "Softmax", x, { axis });
export const logSoftmax = (g: Graph, x: Value, axis = -1) => unary(g, "LogSoftmax", x, { axis });
export const log = (g: Graph, x: Value) => unary(g, "Log", x);
/**
 * log softmax as x − max − log Σ exp(x − max), for forward-only use: ORT's WebGPU provider has no
 * LogSoftmax kernel and would run that node on the CPU (docs/DEVICES.md). No gradient flows through the
 * max (it cancels), so this is not for differentiation; seed gradients on x instead.
 */
export function logSoftmaxComposed(g: Graph, x: Value, axis = -1): Value {
  const shifted = sub(g, x, reduceMax(g, x, [axis], true));
  return sub(g, shifted, log(g, reduceSum(g, exp(g, shifted), [axis], true)));
}
/** GELU with the tanh approximation as one node (opset 20): its backward keeps only x. */
export const geluTanh = (g: Graph, x: Value) => unary(g, "Gelu", x, { approximate: "tanh" });

/** Batched matrix product [..., M, K] × [..., K, N] → [..., M, N]. */
export function matmul(g: Graph, a: Value, b: Value): Value {
  const [m, k] = a.shape.slice(-2);
  const [k2, n] = b.shape.slice(-2);
  if (k !== k2) throw new RangeError(`MatMul inner dims differ: [${a.shape}] × [${b.shape}]`);
  const batch = broadcastShape(a.shape.slice(0, -2), b.shape.slice(0, -2));
  return g.node("MatMul", [a, b], [{ shape: [...batch, m, n], dtype: a.dtype }])[0];
}

export interface GemmOptions {
  transA?: boolean;
  transB?: boolean;
  alpha?: number;
  beta?: number;
}

/** Y = alpha·op(A)·op(B) (+ beta·C), 2-D only. */
export function gemm(g: Graph, a: Value, b: Value, o: GemmOptions = {}, c?: Value): Value {
  const [m, k] = o.transA ? [a.shape[1], a.shape[0]] : [a.shape[0], a.shape[1]];
  const [k2, n] = o.transB ? [b.shape[1], b.shape[0]] : [b.shape[0], b.shape[1]];
  if (a.shape.length !== 2 || b.shape.length !== 2 || k !== k2) {
    throw new RangeError(`Gemm shapes do not fit: [${a.shape}]${o.transA ? "ᵀ" : ""} × [${b.shape}]${o.transB ? "ᵀ" : ""}`);
  }
  const attrs: Record<string, number | { float: number }> = {};
  if (o.transA) attrs.transA = 1;
  if (o.transB) attrs.transB = 1;
  if (o.alpha !== undefined && o.alpha !== 1) attrs.alpha = { float: o.alpha };
  if (c && o.beta !== undefined && o.beta !== 1) attrs.beta = { float: o.beta };
  return g.node("Gemm", c ? [a, b, c] : [a, b], [{ shape: [m, n], dtype: a.dtype }], attrs)[0];
}

export function reshape(g: Graph, x: Value, shape: readonly Dim[]): Value {
  if (product(shape) !== product(x.shape)) throw new RangeError(`Cannot reshape [${x.shape}] to [${shape}]`);
  // 0 copies the input's dim at that axis (Reshape's default), so those need no run-time value.
  const target = shape.map((d, i) => (typeof d === "string" && x.shape[i] === d ? 0 : d));
  // Without such a placeholder, a dim read at run time may itself be 0 (an expert with no tokens,
  // engine/gemma/moe.ts): allowzero keeps it 0 instead of copying the input's dim.
  const allowzero: Record<string, number> = !isStatic(target) && !target.includes(0) ? { allowzero: 1 } : {};
  return g.node("Reshape", [x, g.shapeValue(target, -1)], [{ shape, dtype: x.dtype }], allowzero)[0];
}

export function transpose(g: Graph, x: Value, perm: readonly number[]): Value {
  return g.node("Transpose", [x], [{ shape: perm.map((p) => x.shape[p]), dtype: x.dtype }], { perm: [...perm] })[0];
}

function normAxes(x: Value, axes: readonly number[]): number[] {
  return axes.map((a) => (a < 0 ? a + x.shape.length : a)).sort((p, q) => p - q);
}

function reduce(g: Graph, op: string, x: Value, axes: readonly number[], keepdims: boolean): Value {
  const ax = normAxes(x, axes);
  const shape = keepdims ? x.shape.map((d, i) => (ax.includes(i) ? 1 : d)) : x.shape.filter((_, i) => !ax.includes(i));
  return g.node(op, [x, g.ints(ax)], [{ shape, dtype: x.dtype }], { keepdims: keepdims ? 1 : 0 })[0];
}

export const reduceSum = (g: Graph, x: Value, axes: readonly number[], keepdims = true) => reduce(g, "ReduceSum", x, axes, keepdims);
export const reduceMean = (g: Graph, x: Value, axes: readonly number[], keepdims = true) => reduce(g, "ReduceMean", x, axes, keepdims);
/** No backward rule: used only where nothing is differentiated through it (a softmax's shift). */
export const reduceMax = (g: Graph, x: Value, axes: readonly number[], keepdims = true) => reduce(g, "ReduceMax", x, axes, keepdims);

export function expand(g: Graph, x: Value, shape: readonly Dim[]): Value {
  const out = broadcastShape(x.shape, shape);
  // A dim x already has needs no run-time value: 1 in Expand's shape keeps it.
  const lead = out.length - x.shape.length;
  const target = isStatic(shape) ? shape : out.map((d, i) => (i >= lead && x.shape[i - lead] === d && typeof d === "string" ? 1 : d));
  return g.node("Expand", [x, g.shapeValue(target)], [{ shape: out, dtype: x.dtype }])[0];
}

/** Rows of `data` (axis 0) picked by integer `indices`: [...idx, ...data[1:]]. */
export function gather(g: Graph, data: Value, indices: Value): Value {
  return g.node("Gather", [data, indices], [{ shape: [...indices.shape, ...data.shape.slice(1)], dtype: data.dtype }], { axis: 0 })[0];
}

export function gatherElements(g: Graph, data: Value, indices: Value, axis: number): Value {
  return g.node("GatherElements", [data, indices], [{ shape: indices.shape, dtype: data.dtype }], { axis })[0];
}

export function scatterElementsAdd(g: Graph, data: Value, indices: Value, updates: Value, axis: number): Value {
  return g.node("ScatterElements", [data, indices, updates], [{ shape: data.shape, dtype: data.dtype }], { axis, reduction: "add" })[0];
}

export function scatterNDAdd(g: Graph, data: Value, indices: Value, updates: Value): Value {
  return g.node("ScatterND", [data, indices, updates], [{ shape: data.shape, dtype: data.dtype }], { reduction: "add" })[0];
}

/** A zero tensor made at run time (never a big initializer). */
export function zeros(g: Graph, shape: readonly Dim[], dtype: DType = g.float): Value {
  const tensorDtype = dtype;
  const data = dtype === "float64" ? new Float64Array(1) : dtype === "int64" ? new BigInt64Array(1) : new Float32Array(1);
  return g.node("ConstantOfShape", [g.shapeValue(shape)], [{ shape, dtype }], { value: { tensor: { dtype: tensorDtype, shape: [1], data } } })[0];
}

export function concat(g: Graph, xs: Value[], axis: number): Value {
  const ax = axis < 0 ? axis + xs[0].shape.length : axis;
  const shape = [...xs[0].shape];
  shape[ax] = xs.slice(1).reduce((s: Dim, x) => addDim(s, x.shape[ax]), xs[0].shape[ax]);
  return g.node("Concat", xs, [{ shape, dtype: xs[0].dtype }], { axis: ax })[0];
}

export function split(g: Graph, x: Value, sizes: readonly Dim[], axis: number): Value[] {
  const ax = axis < 0 ? axis + x.shape.length : axis;
  if (!isStatic(sizes)) throw new RangeError(`Split of [${x.shape}] needs static sizes, got [${sizes}]`);
  return g.node(
    "Split",
    [x, g.ints(sizes)],
    sizes.map((s) => ({ shape: x.shape.map((d, i) => (i === ax ? s : d)), dtype: x.dtype })),
    { axis: ax },
  );
}

export function cast(g: Graph, x: Value, to: DType): Value {
  const code = { float32: 1, float64: 11, int64: 7, int32: 6, bool: 9, uint8: 2, uint16: 4, uint4: 21 }[to];
  return g.node("Cast", [x], [{ shape: x.shape, dtype: to }], { to: code })[0];
}

/** x·scalar without a broadcast-shaped constant. */
export function scale(g: Graph, x: Value, s: number): Value {
  return s === 1 ? x : mul(g, x, g.scalar(s));
}
