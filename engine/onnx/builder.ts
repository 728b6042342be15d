/**
 * A small ONNX graph builder: values with shapes, nodes recorded in order (the tape that autodiff
 * walks backwards), encoded to a ModelProto with onnx-proto.
 *
 * A dimension is a number or a symbol (an ONNX dim_param such as "seq"), so one graph serves every
 * batch and sequence length (docs/GRAPHS.md). Symbolic dims are products or sums of names ("batch*seq",
 * "past+seq"); ops that need a dimension at run time (Reshape, Expand, ConstantOfShape) get it from
 * the Shape of a graph input that carries it (`dimValue`), computed once per graph.
 *
 * Large tensors never go into the protobuf: weights are graph inputs fed as zero-copy views, and only
 * small constants (shapes, scalars, rotation matrices) become initializers.
 */
import onnxProto from "onnx-proto";

const onnx = onnxProto.onnx;

/** uint8, uint16 and uint4 carry stored or quantized frozen weights (engine/quant). */
export type DType = "float32" | "float64" | "int64" | "int32" | "bool" | "uint8" | "uint16" | "uint4";

/** A static size, or a symbol: a name, a product "a*b" or a sum "a+b" of names and numbers. */
export type Dim = number | string;

export interface Value {
  readonly id: number;
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly Dim[];
}

export type AttrValue = number | string | number[] | { tensor: ConstTensor } | { float: number };

export interface Node {
  op: string;
  domain: string;
  inputs: (Value | null)[];
  outputs: Value[];
  attrs: Record<string, AttrValue>;
}

export interface ConstTensor {
  dtype: DType;
  shape: number[];
  data: Float32Array | Float64Array | BigInt64Array | Int32Array | Uint8Array | Uint16Array;
}

const ONNX_DTYPE: Record<DType, number> = { float32: 1, float64: 11, int64: 7, int32: 6, bool: 9, uint8: 2, uint16: 4, uint4: 21 };

/** Element count of a static shape (throws on a symbolic one: the caller needed a static shape). */
export function size(shape: readonly Dim[]): number {
  let n = 1;
  for (const d of shape) {
    if (typeof d !== "number") throw new RangeError(`Shape [${shape}] is symbolic; a static shape is needed here`);
    n *= d;
  }
  return n;
}

export function isStatic(shape: readonly Dim[]): shape is readonly number[] {
  return shape.every((d) => typeof d === "number");
}

/** a·b, folded when both are numbers ("batch*seq" otherwise). */
export function mulDim(a: Dim, b: Dim): Dim {
  if (typeof a === "number" && typeof b === "number") return a * b;
  if (a === 1) return b;
  if (b === 1) return a;
  return `${a}*${b}`;
}

/** a+b, folded when both are numbers ("past+seq" otherwise). */
export function addDim(a: Dim, b: Dim): Dim {
  if (typeof a === "number" && typeof b === "number") return a + b;
  return `${a}+${b}`;
}

/** The canonical form of a product of dims (number × sorted names), to compare element counts. */
export function product(shape: readonly Dim[]): string {
  let n = 1;
  const names: string[] = [];
  for (const d of shape) {
    if (typeof d === "number") n *= d;
    else if (d.includes("+")) names.push(`(${d})`);
    else for (const f of d.split("*")) /^\d+$/.test(f) ? (n *= Number(f)) : names.push(f);
  }
  return n === 0 ? "0" : [String(n), ...names.sort()].join("*");
}

/** Suffix of the inputs `Graph.inputAsColumn` adds; fed by `createSession`'s run, never by callers. */
export const COLUMN_SUFFIX = ".as_column";

/** The names a caller feeds for these inputs: an `inputAsColumn` input is fed through its base input. */
export function feedNames(inputs: readonly Value[]): string[] {
  const names = inputs.map((v) => v.name.endsWith(COLUMN_SUFFIX) ? v.name.slice(0, -COLUMN_SUFFIX.length) : v.name);
  return [...new Set(names)];
}

/** One graph under construction. `float` is the floating type of every activation (float64 for gradient checks). */
export class Graph {
  readonly nodes: Node[] = [];
  readonly inputs: Value[] = [];
  readonly outputs: Value[] = [];
  readonly initializers = new Map<Value, ConstTensor>();
  /** Inputs turned into initializers stored outside the model file (ONNX external data). */
  readonly external = new Map<Value, { location: string; offset: number; length: number; dtype: DType; shape: number[] }>();
  private nextId = 0;
  private names = new Set<string>();
  private nextSuffix = new Map<string, number>();
  private constCache = new Map<string, Value>();
  /** Where each symbol can be read at run time: a graph input and its axis. */
  private dimSources = new Map<string, { v: Value; axis: number }>();
  private dimValues = new Map<string, Value>();

  constructor(readonly float: DType = "float32") {}

  private value(name: string, dtype: DType, shape: readonly Dim[]): Value {
    // The first free `name_i`, searched from where the last search for `name` stopped: every suffix
    // below it is taken (names are only ever added), so this is the same name a search from 1 finds,
    // without rescanning (an 18-layer backward has ~2000 "mul"s: the rescan cost ~1 s a build).
    let n = name;
    if (this.names.has(n)) {
      let i = this.nextSuffix.get(name) ?? 1;
      while (this.names.has(`${name}_${i}`)) i++;
      n = `${name}_${i}`;
      this.nextSuffix.set(name, i + 1);
    }
    this.names.add(n);
    return { id: this.nextId++, name: n, dtype, shape: [...shape] };
  }

  /** A graph input (fed on every run). */
  input(name: string, shape: readonly Dim[], dtype: DType = this.float): Value {
    if (this.names.has(name)) throw new Error(`Graph input "${name}" defined twice`);
    const v = this.value(name, dtype, shape);
    this.inputs.push(v);
    shape.forEach((d, axis) => {
      if (typeof d === "string" && !this.dimSources.has(d)) this.dimSources.set(d, { v, axis });
    });
    return v;
  }

  /**
   * Names a data-dependent dimension (e.g. how many tokens a mixture-of-experts layer routes to one
   * expert): `dimValue` reads it from the Shape of `v` at run time. The first definition wins.
   */
  defineDim(d: string, v: Value, axis: number): void {
    if (!this.dimSources.has(d)) this.dimSources.set(d, { v, axis });
  }

  /**
   * A dimension as an int64 [1] tensor: a constant for a number; for a symbol, read from the Shape
   * of an input that has it, or computed from its factors / terms. `null` when nothing carries it.
   */
  dimValue(d: Dim): Value | null {
    if (typeof d === "number") return this.ints([d]);
    const cached = this.dimValues.get(d);
    if (cached) return cached;
    let v: Value | null = null;
    const src = this.dimSources.get(d);
    if (src) {
      const shape = this.node("Shape", [src.v], [{ shape: [src.v.shape.length], dtype: "int64" }])[0];
      v = this.node("Gather", [shape, this.ints([src.axis])], [{ shape: [1], dtype: "int64" }], { axis: 0 })[0];
    } else {
      const [op, parts] = d.includes("+") ? ["Add", d.split("+")] : d.includes("*") ? ["Mul", d.split("*")] : ["", []];
      if (!op) return null;
      const vs = parts.map((p) => (/^\d+$/.test(p) ? this.ints([Number(p)]) : this.dimValue(p)));
      if (vs.some((x) => !x)) return null;
      v = vs.reduce((a, b) => this.node(op, [a!, b!], [{ shape: [1], dtype: "int64" }])[0])!;
    }
    this.dimValues.set(d, v);
    return v;
  }

  /**
   * A shape as an int64 vector: a constant when static; else the dims concatenated at run time.
   * `unknown` stands in for at most one symbol nothing carries (−1 for Reshape, 1 for Expand).
   */
  shapeValue(shape: readonly Dim[], unknown?: number): Value {
    if (isStatic(shape)) return this.ints(shape);
    let missing = 0;
    const parts = shape.map((d) => {
      const v = this.dimValue(d);
      if (v) return v;
      if (unknown === undefined || (unknown === -1 && ++missing > 1)) {
        throw new RangeError(`No graph input carries dimension "${d}" of [${shape}]`);
      }
      return this.ints([unknown]);
    });
    return this.node("Concat", parts, [{ shape: [shape.length], dtype: "int64" }], { axis: 0 })[0];
  }

  /**
   * The graph input `v` seen as [...shape, 1] (ScatterND's index layout), as a second input that
   * `createSession` feeds from the same buffer (engine/session.ts), so no int64 Reshape node exists:
   * ORT's WebGPU provider has none and would run it on the CPU. Null when `v` is not a graph input.
   */
  inputAsColumn(v: Value): Value | null {
    if (!this.inputs.includes(v)) return null;
    const name = `${v.name}${COLUMN_SUFFIX}`;
    return this.inputs.find((x) => x.name === name) ?? this.input(name, [...v.shape, 1], v.dtype);
  }

  /** A small constant stored in the model. Identical constants are shared. */
  constant(data: ConstTensor["data"] | number[], shape: readonly number[], dtype: DType = this.float): Value {
    const typed = toTyped(data, dtype);
    const key = typed.length <= 64 ? `${dtype}:${shape.join(",")}:${Array.from(typed as ArrayLike<number | bigint>).join(",")}` : "";
    if (key && this.constCache.has(key)) return this.constCache.get(key)!;
    const v = this.value(`const`, dtype, shape);
    this.initializers.set(v, { dtype, shape: [...shape], data: typed });
    if (key) this.constCache.set(key, v);
    return v;
  }

  /** A scalar constant of the graph's float type (shape [] broadcasts everywhere). */
  scalar(x: number): Value {
    return this.constant([x], [], this.float);
  }

  /** An int64 vector constant (shapes, axes). */
  ints(xs: readonly number[]): Value {
    return this.constant(BigInt64Array.from(xs.map(BigInt)), [xs.length], "int64");
  }

  /** Records a node; `outs` gives each output's shape and dtype. */
  node(
    op: string,
    inputs: (Value | null)[],
    outs: { shape: readonly Dim[]; dtype: DType }[],
    attrs: Record<string, AttrValue> = {},
    domain = "",
  ): Value[] {
    const outputs = outs.map((o) => this.value(`${op}`, o.dtype, o.shape));
    this.nodes.push({ op, domain, inputs, outputs, attrs });
    return outputs;
  }

  /** Marks a value as a graph output under `name` (adds an Identity when the name differs). */
  output(v: Value, name?: string): Value {
    let out = v;
    if (name && name !== v.name) {
      if (this.names.has(name)) throw new Error(`Graph output name "${name}" already used`);
      out = { id: this.nextId++, name, dtype: v.dtype, shape: [...v.shape] };
      this.names.add(name);
      this.nodes.push({ op: "Identity", domain: "", inputs: [v], outputs: [out], attrs: {} });
    }
    this.outputs.push(out);
    return out;
  }

  /**
   * Makes the named inputs initializers whose bytes live in `location` (next to the model file) at
   * the given offsets, for a model that runs without feeding its weights.
   */
  externalize(placements: Map<string, { offset: number; length: number }>, location: string): void {
    for (const [name, p] of placements) {
      const i = this.inputs.findIndex((v) => v.name === name);
      if (i < 0) throw new Error(`No graph input "${name}" to externalize`);
      const v = this.inputs[i];
      this.inputs.splice(i, 1);
      this.external.set(v, { location, offset: p.offset, length: p.length, dtype: v.dtype, shape: [...v.shape] as number[] });
    }
  }

  /** Encodes the graph as an ONNX model (opset 21, IR 10). */
  toBytes(): Uint8Array {
    const vi = (v: Value) => ({
      name: v.name,
      type: { tensorType: { elemType: ONNX_DTYPE[v.dtype], shape: { dim: v.shape.map((d) => (typeof d === "number" ? { dimValue: d } : { dimParam: d })) } } },
    });
    const graph = {
      name: "gemma_tuner",
      node: this.nodes.map((n, i) => ({
        name: `${n.op}_${i}`,
        opType: n.op,
        domain: n.domain,
        input: n.inputs.map((x) => (x ? x.name : "")),
        output: n.outputs.map((x) => x.name),
        attribute: Object.entries(n.attrs).map(([k, a]) => encodeAttr(k, a)),
      })),
      input: this.inputs.map(vi),
      output: this.outputs.map(vi),
      initializer: [
        ...[...this.initializers].map(([v, t]) => encodeTensor(v.name, t)),
        ...[...this.external].map(([v, e]) => ({
          name: v.name,
          dataType: ONNX_DTYPE[e.dtype],
          dims: e.shape,
          dataLocation: 1,
          externalData: [{ key: "location", value: e.location }, { key: "offset", value: String(e.offset) }, { key: "length", value: String(e.length) }],
        })),
      ],
    };
    const model = {
      irVersion: 10,
      producerName: "gemma-tuner",
      opsetImport: [{ domain: "", version: 21 }, { domain: "com.microsoft", version: 1 }],
      graph,
    };
    return onnx.ModelProto.encode(onnx.ModelProto.fromObject(model)).finish();
  }
}

function toTyped(data: ConstTensor["data"] | number[], dtype: DType): ConstTensor["data"] {
  if (!Array.isArray(data)) return data;
  switch (dtype) {
    case "float32":
      return Float32Array.from(data);
    case "float64":
      return Float64Array.from(data);
    case "int64":
      return BigInt64Array.from(data.map((x) => BigInt(x)));
    case "int32":
      return Int32Array.from(data);
    case "uint16":
      return Uint16Array.from(data);
    default: // bool, uint8 (uint4 constants come packed)
      return Uint8Array.from(data);
  }
}

function encodeTensor(name: string, t: ConstTensor) {
  const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  return { name, dataType: ONNX_DTYPE[t.dtype], dims: t.shape, rawData: bytes.slice() };
}

function encodeAttr(name: string, a: AttrValue) {
  const T = onnx.AttributeProto.AttributeType;
  if (typeof a === "number") {
    return Number.isInteger(a) ? { name, type: T.INT, i: a } : { name, type: T.FLOAT, f: a };
  }
  if (typeof a === "string") return { name, type: T.STRING, s: new TextEncoder().encode(a) };
  if (Array.isArray(a)) return { name, type: T.INTS, ints: a };
  if ("float" in a) return { name, type: T.FLOAT, f: a.float };
  return { name, type: T.TENSOR, t: encodeTensor(name, a.tensor) };
}
