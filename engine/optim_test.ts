import { deepStrictEqual as eq, ok, throws } from "node:assert/strict";
import { AdamW, clipFactor, defaultDecay, globalNorm, lrAt, type Param } from "./optim.ts";

const near = (a: number, b: number, tol: number, label: string) => ok(Math.abs(a - b) <= tol, `${label}: ${a} vs ${b} (diff ${Math.abs(a - b)})`);

function params(values: Record<string, number[]>): Map<string, Param> {
  return new Map(Object.entries(values).map(([k, v]) => [k, { shape: [v.length], data: Float32Array.from(v) }]));
}

Deno.test("AdamW matches a float64 reference of torch.optim.AdamW over 5 steps", () => {
  const p = params({ "a.lora_A.weight": [0.5, -1, 2], "model.norm.weight": [1, 1] });
  const opt = new AdamW(p, { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1 });
  // reference in float64, written out independently
  const ref = { a: [0.5, -1, 2], n: [1, 1] };
  const ma = [0, 0, 0], va = [0, 0, 0], mn = [0, 0], vn = [0, 0];
  for (let t = 1; t <= 5; t++) {
    const ga = ref.a.map((x, i) => 2 * x + i * 0.3 - 0.1 * t); // some gradient
    const gn = ref.n.map((x) => x - 3);
    const lr = 0.01 * t;
    const stepRef = (w: number[], g: number[], m: number[], v: number[], wd: number) => {
      for (let i = 0; i < w.length; i++) {
        w[i] *= 1 - lr * wd;
        m[i] = 0.9 * m[i] + 0.1 * g[i];
        v[i] = 0.999 * v[i] + 0.001 * g[i] * g[i];
        const mh = m[i] / (1 - 0.9 ** t), vh = v[i] / (1 - 0.999 ** t);
        w[i] -= lr * mh / (Math.sqrt(vh) + 1e-8);
      }
    };
    opt.update(new Map([["a.lora_A.weight", Float32Array.from(ga)], ["model.norm.weight", Float32Array.from(gn)]]), lr);
    stepRef(ref.a, ga, ma, va, 0.1);
    stepRef(ref.n, gn, mn, vn, 0); // norms get no decay
  }
  for (let i = 0; i < 3; i++) near(p.get("a.lora_A.weight")!.data[i], ref.a[i], 2e-6, `a[${i}]`);
  for (let i = 0; i < 2; i++) near(p.get("model.norm.weight")!.data[i], ref.n[i], 2e-6, `n[${i}]`);
  eq(opt.step, 5);
});

Deno.test("AdamW first step moves each weight by lr against its gradient sign, gradScale included", () => {
  const p = params({ w: [0, 0, 0] });
  const opt = new AdamW(p, { beta1: 0.9, beta2: 0.999, eps: 1e-12, weightDecay: 0 });
  opt.update(new Map([["w", Float32Array.from([100, -0.001, 5])]]), 0.1, 0.5);
  near(p.get("w")!.data[0], -0.1, 1e-6, "w0");
  near(p.get("w")!.data[1], 0.1, 1e-6, "w1");
  near(p.get("w")!.data[2], -0.1, 1e-6, "w2");
});

Deno.test("AdamW state round-trip continues identically", () => {
  const mk = () => params({ x: [1, 2, 3, 4] });
  const grad = (p: Map<string, Param>) => new Map([["x", p.get("x")!.data.map((v) => v * v - 2)]]);
  const a = mk(), optA = new AdamW(a, { beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.01 });
  for (let i = 0; i < 6; i++) optA.update(grad(a), 0.05);
  const b = mk(), optB1 = new AdamW(b, { beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.01 });
  for (let i = 0; i < 3; i++) optB1.update(grad(b), 0.05);
  const saved = new Map(optB1.stateTensors().map((t) => [t.name, t.data.slice()]));
  const b2 = params({ x: Array.from(b.get("x")!.data) });
  const optB2 = new AdamW(b2, { beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.01 });
  optB2.loadState(saved, optB1.step);
  for (let i = 0; i < 3; i++) optB2.update(grad(b2), 0.05);
  eq(Array.from(b2.get("x")!.data), Array.from(a.get("x")!.data));
  throws(() => optB2.loadState(new Map(), 1, "opt.safetensors"), /opt\.safetensors.*exp_avg\.x/);
});

Deno.test("AdamW minimises a quadratic", () => {
  const p = params({ x: [5, -3] });
  const opt = new AdamW(p, { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 });
  for (let i = 0; i < 500; i++) opt.update(new Map([["x", p.get("x")!.data.map((v) => 2 * (v - 1))]]), 0.05);
  near(p.get("x")!.data[0], 1, 0.05, "x0");
  near(p.get("x")!.data[1], 1, 0.05, "x1");
});

Deno.test("schedules: warmup, cosine, linear, constant", () => {
  const s = { peakLr: 1, warmupSteps: 4, totalSteps: 14 };
  eq([0, 1, 2, 3].map((t) => lrAt(t, { ...s, kind: "cosine" })), [0.25, 0.5, 0.75, 1]);
  eq(lrAt(4, { ...s, kind: "cosine" }), 1);
  near(lrAt(9, { ...s, kind: "cosine" }), 0.5, 1e-12, "cosine midpoint");
  near(lrAt(14, { ...s, kind: "cosine" }), 0, 1e-12, "cosine end");
  near(lrAt(9, { ...s, kind: "linear" }), 0.5, 1e-12, "linear midpoint");
  ok(lrAt(13, { ...s, kind: "linear" }) > 0);
  eq(lrAt(13, { ...s, kind: "constant" }), 1);
  eq(lrAt(0, { ...s, warmupSteps: 0, kind: "cosine" }), 1);
});

Deno.test("global norm and clip factor", () => {
  near(globalNorm([Float32Array.from([3]), Float32Array.from([4])]), 5, 1e-9, "norm");
  near(globalNorm([Float32Array.from([3, 4])], 0.5), 2.5, 1e-9, "scaled");
  near(clipFactor(10, 1), 0.1, 1e-6, "clip");
  eq(clipFactor(0.5, 1), 1);
  eq(clipFactor(10, 0), 1);
  eq(defaultDecay("model.layers.0.input_layernorm.weight"), false);
  eq(defaultDecay("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"), true);
});
