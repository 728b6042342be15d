/** The ONNX Gemma graph against the float64 reference, finite differences, and LoRA merging. */
import { referenceForward, referenceTokenNll } from "./reference.ts";
import { finiteDifferenceCheck, randomWeights, runSequence, tinyConfig } from "./testing.ts";
import { initLora, mergeLora, rng } from "../lora.ts";
import { loraScaling } from "./model.ts";

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function check(label: string, diff: number, tol: number) {
  if (!(diff <= tol)) throw new Error(`${label}: max difference ${diff} exceeds ${tol}`);
}

const IDS = [2, 17, 5, 33, 40, 8, 8, 21, 1, 12];

for (const gen of [1, 2, 3] as const) {
  for (const stress of [false, true]) {
    Deno.test(`Gemma ${gen}${stress ? " (stress)" : ""}: ONNX logits match the float64 reference`, async () => {
      const c = tinyConfig(gen, stress);
      const w = randomWeights(c, 11 + gen, stress ? 0.2 : 0.05);
      const ref = referenceForward(c, w, IDS);
      const got = await runSequence(c, w, IDS, { logits: true });
      // The graph computes logits for positions 0…T−2 (each predicts the next token).
      const V = c.vocabSize;
      check("logits", maxDiff(got.logits!, ref.subarray(0, (IDS.length - 1) * V)), 1e-4);
      check("token nll", maxDiff(got.nll, referenceTokenNll(c, w, IDS)), 1e-4);
    });
  }
}

Deno.test("stress settings make every feature matter (the parity test can see each one)", () => {
  const base = tinyConfig(2, true);
  const w = randomWeights(base, 5, 0.2);
  const ref = referenceForward(base, w, IDS);
  const variants: [string, object][] = [
    ["attention softcap", { attnSoftcap: null }],
    ["final softcap", { finalSoftcap: null }],
    ["sliding window", { slidingWindow: null }],
  ];
  for (const [label, patch] of variants) {
    const other = referenceForward({ ...base, ...patch }, w, IDS);
    if (maxDiff(ref, other) < 1e-3) throw new Error(`${label} does not change the stress output`);
  }
  const g3 = tinyConfig(3, true);
  const w3 = randomWeights(g3, 6, 0.2);
  const r3 = referenceForward(g3, w3, IDS);
  if (maxDiff(r3, referenceForward({ ...g3, ropeScalingFull: 1 }, w3, IDS)) < 1e-3) throw new Error("rope scaling has no effect");
  if (maxDiff(r3, referenceForward({ ...g3, ropeThetaSliding: g3.ropeThetaFull }, w3, IDS)) < 1e-3) throw new Error("local rope base has no effect");
  if (g3.attnSoftcap !== null) throw new Error("Gemma 3 must ignore attn_logit_softcapping, as transformers does");
  if (maxDiff(r3, referenceForward({ ...g3, finalSoftcap: null }, w3, IDS)) < 1e-3) throw new Error("Gemma 3 final softcap has no effect");
});

for (const gen of [1, 2, 3] as const) {
  Deno.test(`Gemma ${gen}: whole-model gradients match finite differences (float64)`, async () => {
    const c = tinyConfig(gen, true);
    const w32 = randomWeights(c, 21 + gen, 0.2);
    const w = new Map([...w32].map(([k, v]) => [k, Float64Array.from(v)]));
    const ids = IDS.slice(0, 7);
    const { worst, where } = await finiteDifferenceCheck(c, w, ids, 99, [...w.keys()]);
    if (worst > 1e-4) throw new Error(`gradient mismatch ${worst} at ${where}`);
  });
}

Deno.test("LoRA with B≠0 equals the merged weight W + s·B·A, and its gradients match finite differences", async () => {
  const c = tinyConfig(3, true);
  const w = randomWeights(c, 31, 0.1);
  const spec = { r: 4, alpha: 8, rslora: false, dropout: 0, targets: ["q_proj", "v_proj", "o_proj", "down_proj"] };
  const lora = initLora(c, spec, 3);
  const r = rng(4);
  for (const [name, t] of lora) if (name.includes("lora_B")) t.data.forEach((_, i) => (t.data[i] = (r() - 0.5) * 0.4));
  const tensors = new Map([...lora].map(([k, v]) => [k, v.data]));
  const withLora = await runSequence(c, w, IDS, { lora: { spec, tensors }, logits: true });
  const merged = mergeLora(w, lora, loraScaling(spec));
  const plain = await runSequence(c, merged, IDS, { logits: true });
  check("LoRA vs merged logits", maxDiff(withLora.logits!, plain.logits!), 1e-4);
  const base = await runSequence(c, w, IDS, { logits: true });
  if (maxDiff(base.logits!, withLora.logits!) < 1e-3) throw new Error("the adapter had no effect");

  // LoRA gradients in float64 vs finite differences.
  const t64 = new Map([...tensors].map(([k, v]) => [k, Float64Array.from(v)]));
  const w64 = new Map([...w].map(([k, v]) => [k, Float64Array.from(v)]));
  const g = await runSequence(c, w64, IDS, { float: "float64", method: "lora", lora: { spec, tensors: t64 } });
  if (g.grads.size !== lora.size) throw new Error(`expected ${lora.size} LoRA gradients, got ${g.grads.size}`);
  for (const name of [...t64.keys()].slice(0, 6)) {
    const d = t64.get(name)!;
    const i = Math.floor(d.length / 3);
    const orig = d[i], h = 1e-5;
    d[i] = orig + h;
    const lp = (await runSequence(c, w64, IDS, { float: "float64", lora: { spec, tensors: t64 } })).loss;
    d[i] = orig - h;
    const lm = (await runSequence(c, w64, IDS, { float: "float64", lora: { spec, tensors: t64 } })).loss;
    d[i] = orig;
    const numeric = (lp - lm) / (2 * h), analytic = g.grads.get(name)![i];
    if (Math.abs(numeric - analytic) > 1e-6 + 1e-4 * Math.abs(numeric)) {
      throw new Error(`${name}[${i}]: analytic ${analytic} numeric ${numeric}`);
    }
  }
});
