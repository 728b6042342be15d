/**
 * Finite-difference checks of autodiff in float64: f = Σ out ⊙ R for a fixed random R, so every
 * output element's gradient path is exercised; analytic d f/d x from the graph vs central
 * differences of f. Used by the per-rule tests and the whole-model gradient test.
 */
import { Graph, size, type Value } from "./builder.ts";
import { gradients } from "./autodiff.ts";
import * as o from "./ops.ts";
import { createSession, tensor } from "../session.ts";
import type * as ortTypes from "onnxruntime-node";

export interface CheckInput {
  value: Value;
  data: Float64Array | BigInt64Array | Float32Array | Uint8Array;
  /** Check the gradient of this input (float inputs only). */
  check?: boolean;
}

export interface CheckResult {
  maxAbsErr: number;
  maxRelErr: number;
  worst: string;
}

/** Deterministic pseudo-random numbers in [-1, 1). */
export function prng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return (s / 4294967296) * 2 - 1;
  };
}

export function randn64(n: number, seed: number, scale = 1): Float64Array {
  const r = prng(seed);
  return Float64Array.from({ length: n }, () => r() * scale);
}

/**
 * Builds f = Σ out·R, its gradients w.r.t. the checked inputs, runs both, and compares with central
 * differences (step h). `build` gets a float64 graph and must return its inputs and output.
 */
export async function gradCheck(
  build: (g: Graph) => { inputs: CheckInput[]; out: Value },
  opts: { h?: number; seed?: number; maxElems?: number } = {},
): Promise<CheckResult> {
  const g = new Graph("float64");
  const { inputs, out } = build(g);
  const rData = randn64(size(out.shape), opts.seed ?? 7);
  const r = g.input("__R", out.shape);
  const f = o.reduceSum(g, o.mul(g, out, r), [...out.shape.keys()], false);
  g.output(f, "__f");
  const checked = inputs.filter((i) => i.check !== false && i.value.dtype === "float64");
  const grads = gradients(g, f, checked.map((i) => i.value));
  checked.forEach((i, k) => g.output(grads.get(i.value)!, `__grad${k}`));
  const session = await createSession(g.toBytes());
  const feeds = (override?: { k: number; data: Float64Array }) => {
    const fd: Record<string, ortTypes.Tensor> = { __R: tensor("float64", rData, out.shape as number[]) };
    inputs.forEach((i, k) => {
      const d = override && override.k === k ? override.data : i.data;
      fd[i.value.name] = tensor(i.value.dtype, d, i.value.shape as number[]);
    });
    return fd;
  };
  const base = await session.run(feeds());
  const h = opts.h ?? 1e-6;
  let maxAbsErr = 0, maxRelErr = 0, worst = "";
  for (const [k, inp] of inputs.entries()) {
    const ci = checked.indexOf(inp);
    if (ci < 0) continue;
    const analytic = base[`__grad${ci}`].data as Float64Array;
    const data = inp.data as Float64Array;
    const n = Math.min(data.length, opts.maxElems ?? 64);
    const stride = Math.max(1, Math.floor(data.length / n));
    for (let e = 0; e < data.length; e += stride) {
      const plus = data.slice(), minus = data.slice();
      plus[e] += h;
      minus[e] -= h;
      const fp = (await session.run(feeds({ k, data: plus })))["__f"].data[0] as number;
      const fm = (await session.run(feeds({ k, data: minus })))["__f"].data[0] as number;
      const numeric = (fp - fm) / (2 * h);
      const abs = Math.abs(numeric - analytic[e]);
      const rel = abs / Math.max(1e-3, Math.abs(numeric), Math.abs(analytic[e]));
      if (rel > maxRelErr) {
        maxRelErr = rel;
        worst = `${inp.value.name}[${e}]: analytic ${analytic[e]} numeric ${numeric}`;
      }
      maxAbsErr = Math.max(maxAbsErr, abs);
    }
  }
  await session.release();
  return { maxAbsErr, maxRelErr, worst };
}
