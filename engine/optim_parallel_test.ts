/**
 * The optimizer on two threads (engine/optim_pool.ts): the same numbers as a float64 AdamW reference
 * (weight decay, bias correction, clipping by the global norm) and bit for bit the single-threaded update,
 * alone and inside 20 full fine-tuning steps of the engine.
 */
import { deepStrictEqual as eq, ok } from "node:assert/strict";
import { AdamW, clipFactor, globalNorm, PARALLEL_MIN_ELEMENTS, type Param } from "./optim.ts";
import { fullRun } from "./optim_testing.ts";
import { rng } from "./lora.ts";
import { TIMEOUTS, waitFor } from "../tests/_timeouts.ts";

const OPTS = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1 };

/** A parameter set above the parallel threshold: one big "embedding", a matrix and a norm (no decay). */
function bigParams(): Map<string, Param> {
  const r = rng(7);
  const mk = (n: number, f: () => number) => {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = f();
    return a;
  };
  const nE = PARALLEL_MIN_ELEMENTS + 12345;
  return new Map<string, Param>([
    ["model.embed_tokens.weight", { shape: [nE], data: mk(nE, () => (r() - 0.5) * 0.1) }],
    ["model.layers.0.mlp.up_proj.weight", { shape: [300, 77], data: mk(300 * 77, () => (r() - 0.5) * 0.2) }],
    ["model.layers.0.input_layernorm.weight", { shape: [77], data: mk(77, () => r() - 0.5) }],
  ]);
}

function gradsFor(p: Map<string, Param>, t: number): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const [name, q] of p) {
    const g = new Float32Array(q.data.length);
    // Some gradient that depends on the weight and the step, with outliers so clipping bites.
    for (let i = 0; i < g.length; i++) g[i] = 3 * q.data[i] + Math.sin(i * 0.37 + t) * 0.5 + (i % 9973 === 0 ? 40 : 0);
    out.set(name, g);
  }
  return out;
}

async function parallelAdamW(p: Map<string, Param>): Promise<AdamW> {
  const opt = new AdamW(p, OPTS);
  await waitFor("the optimizer's worker to start", () => opt.parallel, TIMEOUTS.request);
  return opt;
}

Deno.test("AdamW on two threads matches a float64 reference: decay, bias correction, clipping", async () => {
  const p = bigParams();
  const opt = await parallelAdamW(p);
  // The reference: torch.optim.AdamW's arithmetic in float64 throughout, on its own copies.
  const ref = new Map([...p].map(([k, q]) => [k, { w: Float64Array.from(q.data), m: new Float64Array(q.data.length), v: new Float64Array(q.data.length) }]));
  const maxNorm = 1, scale = 1 / 512;
  let clipped = 0;
  for (let t = 1; t <= 5; t++) {
    const grads = gradsFor(p, t);
    const norm = opt.gradNorm(grads, scale);
    let sq = 0;
    for (const g of grads.values()) for (let i = 0; i < g.length; i++) sq += (g[i] * scale) ** 2;
    const refNorm = Math.sqrt(sq);
    ok(Math.abs(norm - refNorm) <= 1e-12 * refNorm, `step ${t}: norm ${norm} vs float64 ${refNorm}`);
    const clip = clipFactor(norm, maxNorm);
    if (clip < 1) clipped++;
    const lr = 0.01 * t;
    opt.update(grads, lr, scale * clip);
    const refClip = refNorm > maxNorm ? maxNorm / (refNorm + 1e-6) : 1;
    for (const [name, r] of ref) {
      const g = grads.get(name)!, wd = /norm/.test(name) ? 0 : OPTS.weightDecay;
      for (let i = 0; i < g.length; i++) {
        const gi = g[i] * scale * refClip;
        r.w[i] *= 1 - lr * wd;
        r.m[i] = 0.9 * r.m[i] + 0.1 * gi;
        r.v[i] = 0.999 * r.v[i] + 0.001 * gi * gi;
        r.w[i] -= lr * (r.m[i] / (1 - 0.9 ** t)) / (Math.sqrt(r.v[i] / (1 - 0.999 ** t)) + 1e-8);
      }
    }
  }
  ok(clipped === 5, `clipping applied on ${clipped} of 5 steps; the test needs it on every step`);
  const start = bigParams();
  // float32 storage of w, m and v over 5 steps: within a few float32 ulps of the float64 path (weights
  // here are below 1, ulp ≤ 6e-8); a changed formula (no bias correction, decay on norms, no clip) moves
  // weights by 1e-3 or more.
  let worst = 0, moved = 0;
  for (const [name, r] of ref) {
    const w = p.get(name)!.data, w0 = start.get(name)!.data;
    for (let i = 0; i < w.length; i++) {
      worst = Math.max(worst, Math.abs(w[i] - r.w[i]));
      if (w[i] !== w0[i]) moved++;
    }
  }
  ok(worst <= 2e-7, `worst difference from the float64 reference: ${worst}`);
  ok(moved > start.get("model.embed_tokens.weight")!.data.length, `only ${moved} weights moved`);
  eq(opt.step, 5);
  opt.close();
});

Deno.test("AdamW on two threads is bit-identical to one thread (update, norm, state)", async () => {
  const a = bigParams(), b = bigParams();
  const two = await parallelAdamW(a);
  const one = new AdamW(b, OPTS, { parallel: false });
  ok(!one.parallel && two.parallel);
  for (let t = 1; t <= 3; t++) {
    const ga = gradsFor(a, t), gb = gradsFor(b, t);
    const na = two.gradNorm(ga, 0.01), nb = one.gradNorm(gb, 0.01);
    eq(na, nb);
    eq(nb, globalNorm(gb.values(), 0.01));
    two.update(ga, 0.02, 0.01 * clipFactor(na, 1));
    one.update(gb, 0.02, 0.01 * clipFactor(nb, 1));
  }
  for (const [name, q] of a) {
    const w = b.get(name)!.data;
    let diff = 0;
    for (let i = 0; i < w.length; i++) if (!Object.is(w[i], q.data[i])) diff++;
    eq(diff, 0, `${name}: ${diff} weights differ`);
  }
  const sa = two.stateTensors(), sb = one.stateTensors();
  sa.forEach((t, k) => eq(t.data.every((x, i) => Object.is(x, sb[k].data[i])), true, t.name));
  two.close();
});

Deno.test("full fine-tuning: 20 steps with the two-thread optimizer give the single-thread losses exactly", async () => {
  const run = (parallel: boolean) => fullRun({ moments: "fp32", parallel, steps: 20, lr: 1e-3, maxNorm: 0.5, tokens: 600 });
  const two = await run(true), one = await run(false);
  eq(two.losses, one.losses);
  eq(two.norms, one.norms);
  ok(one.norms.some((n) => n > 0.5), "clipping never applied");
  ok(one.losses[19] < one.losses[3], `the loss did not fall: ${one.losses[3]} → ${one.losses[19]}`);
});
