/**
 * Gemma 4: the ONNX graph against the independent float64 reference on stress weights, each feature
 * shown to change the output, gradients against finite differences, and LoRA with B≠0 = merged.
 */
import { reference4Forward } from "./reference4.ts";
import { finiteDifferenceCheck, type Gemma4Variant, randomWeights, runSequence, tinyConfig4, tinyRawConfig4 } from "./testing.ts";
import { type GemmaConfig, normalizeConfig } from "./config.ts";
import { initLora, mergeLora, rng } from "../lora.ts";
import { loraScaling } from "./model.ts";

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

const IDS = [2, 17, 5, 33, 40, 8, 8, 21, 1, 12];
const VARIANTS: Gemma4Variant[] = ["ple", "kv", "moe"];

for (const v of VARIANTS) {
  Deno.test(`Gemma 4 (${v}, stress): ONNX logits match the float64 reference to 1e-4`, async () => {
    const c = tinyConfig4(v);
    const w = randomWeights(c, 41, 0.2);
    const ref = reference4Forward(c, w, IDS);
    const got = await runSequence(c, w, IDS, { logits: true });
    const d = maxDiff(got.logits!, ref.subarray(0, (IDS.length - 1) * c.vocabSize));
    if (!(d <= 1e-4)) throw new Error(`logits differ by ${d}`);
  });
}

Deno.test("Gemma 4 stress settings make every feature visible to the parity test", () => {
  const visible = (c: GemmaConfig, w: Map<string, Float32Array>, label: string, patch: Partial<GemmaConfig>, wpatch?: (w: Map<string, Float32Array>) => void) => {
    const ref = reference4Forward(c, w, IDS);
    const w2 = new Map(w);
    wpatch?.(w2);
    const other = reference4Forward({ ...c, ...patch }, w2, IDS);
    if (maxDiff(ref, other) < 1e-3) throw new Error(`${label} does not change the stress output`);
  };
  const ple = tinyConfig4("ple");
  const wp = randomWeights(ple, 42, 0.2);
  const r = rng(7);
  const rand = (n: number) => Float32Array.from({ length: n }, () => (r() - 0.5) * 0.4);
  visible(ple, wp, "attention scale 1.0", { queryPreAttnScalar: 8 });
  visible(ple, wp, "proportional RoPE (partial rotation)", { ropePartialFull: 1 });
  visible(ple, wp, "sliding window", { slidingWindow: null });
  visible(ple, wp, "final soft-cap", { finalSoftcap: null });
  visible(ple, wp, "per-layer embeddings", { ple: null });
  visible(ple, wp, "layer_scalar", {}, (w) => w.forEach((_, k) => k.endsWith("layer_scalar") && w.set(k, Float32Array.of(1))));
  visible(ple, wp, "plain-weight norms (not 1 + w)", {}, (w) => w.forEach((t, k) => k.endsWith("norm.weight") && w.set(k, t.map((x) => x + 1))));
  // KV sharing: with their own (stored, ignored) k/v, the shared layers would give another output.
  visible(ple, wp, "KV sharing", { layers: ple.layers.map((l, i) => ({ ...l, kvSource: i })) }, (w) => {
    for (const i of [2, 3]) {
      const l = ple.layers[i], n = l.kvHeads * l.headDim * ple.hiddenSize;
      w.set(`model.layers.${i}.self_attn.k_proj.weight`, rand(n));
      w.set(`model.layers.${i}.self_attn.v_proj.weight`, rand(n));
      w.set(`model.layers.${i}.self_attn.k_norm.weight`, Float32Array.from({ length: l.headDim }, () => 1));
    }
  });
  if (ple.layers[3].intermediate !== 2 * ple.layers[1].intermediate) throw new Error("double-wide MLP not applied to the shared layers");
  if (ple.layers[1].headDim === ple.layers[0].headDim) throw new Error("head dims do not differ per layer type");

  const kv = tinyConfig4("kv");
  const wk = randomWeights(kv, 43, 0.2);
  visible(kv, wk, "K=V (v from the raw k projection)", { layers: kv.layers.map((l) => ({ ...l, kEqV: false })) }, (w) => {
    kv.layers.forEach((l, i) => l.kEqV && w.set(`model.layers.${i}.self_attn.v_proj.weight`, rand(l.kvHeads * l.headDim * kv.hiddenSize)));
  });
  visible(kv, wk, "v-norm", { vNorm: false });
  const moe = tinyConfig4("moe");
  const wm = randomWeights(moe, 44, 0.2);
  visible(moe, wm, "top-k routing", { moe: { ...moe.moe!, topK: moe.moe!.experts } });
  visible(moe, wm, "per-expert scale", {}, (w) => w.forEach((t, k) => k.endsWith("per_expert_scale") && w.set(k, t.map(() => 1))));
});

for (const v of VARIANTS) {
  Deno.test(`Gemma 4 (${v}): whole-model gradients match finite differences (float64)`, async () => {
    const c = tinyConfig4(v);
    const w = new Map([...randomWeights(c, 51, 0.2)].map(([k, t]) => [k, Float64Array.from(t)]));
    const ids = IDS.slice(0, 7);
    const { worst, where, full } = await finiteDifferenceCheck(c, w, ids, 98);
    if (worst > 1e-4) throw new Error(`gradient mismatch ${worst} at ${where}`);
    if ([...full.grads.keys()].some((k) => k.endsWith("layer_scalar") || k.includes("experts."))) throw new Error("buffers or experts were made trainable");
  });
}

Deno.test("Gemma 4: LoRA with B≠0 equals the merged weight; no adapter on KV-shared k/v or K=V v_proj", async () => {
  for (const v of ["ple", "moe"] as const) {
    const c = tinyConfig4(v);
    const w = randomWeights(c, 61, 0.1);
    const spec = { r: 2, alpha: 4, rslora: false, dropout: 0, targets: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj"] };
    const lora = initLora(c, spec, 3);
    for (const name of lora.keys()) {
      const i = Number(/layers\.(\d+)\./.exec(name)![1]), l = c.layers[i];
      if ((l.kvSource !== i && /[kv]_proj/.test(name)) || (l.kEqV && name.includes("v_proj"))) throw new Error(`adapter on a module the layer lacks: ${name}`);
    }
    const r = rng(4);
    for (const [name, t] of lora) if (name.includes("lora_B")) t.data.forEach((_, i) => (t.data[i] = (r() - 0.5) * 0.4));
    const tensors = new Map([...lora].map(([k, x]) => [k, x.data]));
    const withLora = await runSequence(c, w, IDS, { lora: { spec, tensors }, logits: true });
    const plain = await runSequence(c, mergeLora(w, lora, loraScaling(spec)), IDS, { logits: true });
    const d = maxDiff(withLora.logits!, plain.logits!);
    if (d > 1e-4) throw new Error(`${v}: LoRA vs merged logits differ by ${d}`);
    const base = await runSequence(c, w, IDS, { logits: true });
    if (maxDiff(base.logits!, withLora.logits!) < 1e-3) throw new Error("the adapter had no effect");
  }
});

Deno.test("Gemma 4 MoE: only the routed experts run (NaN weights in every other expert leave the logits finite and equal)", async () => {
  // 16 experts, top-2, 4 tokens: at most 8 experts per layer get a token, so at least 8 get none.
  const c = normalizeConfig({ ...tinyRawConfig4("moe"), num_experts: 16, top_k_experts: 2 }, "tiny-gemma-4-moe-16");
  const { experts: E, intermediate: I } = c.moe!, H = c.hiddenSize;
  const ids = IDS.slice(0, 4);
  const w = randomWeights(c, 45, 0.2);
  const ref = reference4Forward(c, w, ids);
  const finite = (xs: ArrayLike<number>) => Array.prototype.every.call(xs, Number.isFinite);
  // The reference runs only each token's top-k experts: an expert whose NaN weights keep it finite
  // received no token.
  let poisoned = new Map(w), idle = 0;
  for (let l = 0; l < c.numLayers; l++) {
    for (let e = 0; e < E; e++) {
      const trial = new Map(poisoned);
      const gu = Float32Array.from(trial.get(`model.layers.${l}.experts.gate_up_proj`)!);
      const dn = Float32Array.from(trial.get(`model.layers.${l}.experts.down_proj`)!);
      gu.fill(NaN, e * 2 * I * H, (e + 1) * 2 * I * H);
      dn.fill(NaN, e * H * I, (e + 1) * H * I);
      trial.set(`model.layers.${l}.experts.gate_up_proj`, gu);
      trial.set(`model.layers.${l}.experts.down_proj`, dn);
      if (finite(reference4Forward(c, trial, ids))) (poisoned = trial), idle++;
    }
  }
  if (idle < 8 * c.numLayers) throw new Error(`only ${idle} idle experts found`);
  const got = await runSequence(c, poisoned, ids, { logits: true });
  if (!finite(got.logits!)) throw new Error("an expert without tokens was computed (NaN reached the logits)");
  const d = maxDiff(got.logits!, ref.subarray(0, (ids.length - 1) * c.vocabSize));
  if (!(d <= 1e-4)) throw new Error(`logits differ by ${d}`);
  // The LoRA backward, on the same routing (B = 0 as at the start of training, so the stream and the
  // experts picked are the base model's): idle experts stay out of every gradient.
  const spec = { r: 2, alpha: 4, rslora: false, dropout: 0, targets: ["q_proj", "k_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] };
  const lora = initLora(c, spec, 5);
  const tensors = new Map([...lora].map(([k, x]) => [k, x.data]));
  const clean = await runSequence(c, w, ids, { method: "lora", lora: { spec, tensors } });
  const dirty = await runSequence(c, poisoned, ids, { method: "lora", lora: { spec, tensors } });
  if (clean.grads.size === 0) throw new Error("no LoRA gradients");
  for (const [name, g] of clean.grads) {
    const h = dirty.grads.get(name)!;
    if (!finite(h)) throw new Error(`NaN from an idle expert reached grad.${name}`);
    const dg = maxDiff(g, h);
    if (dg > 1e-6) throw new Error(`grad.${name} differs by ${dg} with idle experts poisoned`);
  }
  if (clean.grads.get([...clean.grads.keys()].find((k) => k.includes("layers.0.self_attn.q_proj.lora_B"))!)!.every((x) => x === 0)) {
    throw new Error("attention's LoRA got no gradient");
  }
});
