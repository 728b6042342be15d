/** TrainEngine: loss over labelled positions only, padding rows inert, accumulation additive. */
import { TrainEngine } from "./train_engine.ts";
import { randomWeights, tinyConfig, tinyConfig4 } from "./gemma/testing.ts";
import { referenceTokenNll } from "./gemma/reference.ts";
import { runSequence } from "./gemma/testing.ts";

const c = tinyConfig(3, true);
const w = randomWeights(c, 41, 0.1);
const T = 8;
const rowA = [2, 17, 5, 33, 40, 8, 8, 21];
const rowB = [2, 30, 31, 32, 9, 1, 0, 0];
// Labels: −100 on the prompt part and padding (HF convention, shifted inside the engine).
const labA = [-100, -100, -100, 33, 40, 8, 8, 21];
const labB = [-100, -100, 31, 32, 9, 1, -100, -100];

function batch(rows: number[][], labels: number[][]) {
  return { inputIds: Int32Array.from(rows.flat()), labels: Int32Array.from(labels.flat()), batchSize: rows.length, seqLen: T };
}

Deno.test("lossSum is the sum of reference NLLs over labelled positions only", async () => {
  const e = await TrainEngine.create({ model: { config: c, weights: w }, method: "full", seed: 1 });
  const r = await e.evaluate(batch([rowA, rowB], [labA, labB]));
  const nllA = referenceTokenNll(c, w, rowA), nllB = referenceTokenNll(c, w, rowB);
  // Position t predicts labels[t+1].
  let expected = 0, count = 0;
  labA.forEach((y, t) => {
    if (t > 0 && y !== -100) (expected += nllA[t - 1]), count++;
  });
  labB.forEach((y, t) => {
    if (t > 0 && y !== -100) (expected += nllB[t - 1]), count++;
  });
  if (r.tokens !== count) throw new Error(`counted ${r.tokens} tokens, expected ${count}`);
  if (Math.abs(r.lossSum - expected) > 1e-3) throw new Error(`lossSum ${r.lossSum}, reference ${expected}`);
  e.release();
});

Deno.test("gradients accumulate: two micro-batches equal one batch of both rows (padding rows inert)", async () => {
  const spec = { r: 4, alpha: 8, dropout: 0, rslora: false, targets: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] };
  const e = await TrainEngine.create({ model: { config: c, weights: w }, method: "lora", lora: spec, seed: 3 });
  // Give B non-zero values so every LoRA tensor has a gradient.
  for (const [k, t] of e.trainable) if (k.includes("lora_B")) t.data.forEach((_, i) => (t.data[i] = Math.sin(i + k.length) * 0.1));
  e.zeroGrads();
  const a = await e.forwardBackward(batch([rowA], [labA]));
  const b = await e.forwardBackward(batch([rowB], [labB]));
  const split = new Map([...e.grads].map(([k, g]) => [k, g.slice()]));
  e.zeroGrads();
  const both = await e.forwardBackward(batch([rowA, rowB], [labA, labB]));
  if (Math.abs(a.lossSum + b.lossSum - both.lossSum) > 1e-4) throw new Error("loss sums differ");
  let worst = 0, nonzero = 0;
  for (const [k, g] of e.grads) {
    const s = split.get(k)!;
    for (let i = 0; i < g.length; i++) {
      worst = Math.max(worst, Math.abs(g[i] - s[i]));
      if (g[i] !== 0) nonzero++;
    }
  }
  if (worst > 1e-4) throw new Error(`accumulated gradients differ by ${worst}`);
  if (nonzero === 0) throw new Error("all gradients are zero");
  e.release();
});

Deno.test("dropout masks are deterministic per step and change between steps", async () => {
  const spec = { r: 4, alpha: 8, dropout: 0.3, rslora: false, targets: ["q_proj", "v_proj"] };
  const e = await TrainEngine.create({ model: { config: c, weights: w }, method: "lora", lora: spec, seed: 5 });
  for (const [k, t] of e.trainable) if (k.includes("lora_B")) t.data.fill(0.05);
  const bt = batch([rowA], [labA]);
  const l1 = (await e.forwardBackward(bt, { dropoutSeed: 7 })).lossSum;
  const l2 = (await e.forwardBackward(bt, { dropoutSeed: 7 })).lossSum;
  const l3 = (await e.forwardBackward(bt, { dropoutSeed: 8 })).lossSum;
  if (l1 !== l2) throw new Error(`same step gave ${l1} and ${l2}`);
  if (l1 === l3) throw new Error("different steps gave identical dropout");
  e.release();
});

Deno.test("out-of-vocabulary ids and labels are refused with the position", async () => {
  const e = await TrainEngine.create({ model: { config: c, weights: w }, method: "full", seed: 1 });
  let msg = "";
  try {
    await e.evaluate(batch([[2, 999, 3, 4, 5, 6, 7, 8]], [[-100, 999, 3, 4, 5, 6, 7, 8]]));
  } catch (err) {
    msg = (err as Error).message;
  }
  if (!/outside the vocabulary/.test(msg)) throw new Error(`expected a vocabulary error, got "${msg}"`);
  e.release();
});

Deno.test("an unavailable device is a clear error naming it, never a silent CPU fallback", async () => {
  for (const device of ["webgpu", "cuda"] as const) {
    let msg = "";
    try {
      const e = await TrainEngine.create({ model: { config: c, weights: w }, method: "full", seed: 1, device });
      // A machine that has the device: the engine must really run there.
      const r = await e.evaluate(batch([rowA], [labA]));
      if (!(r.tokens > 0)) throw new Error(`${device} engine produced no result`);
      e.release();
      continue;
    } catch (err) {
      msg = (err as Error).message;
    }
    if (!msg.includes(`"${device}"`) || !/--device cpu/.test(msg)) throw new Error(`unclear ${device} error: ${msg}`);
  }
});

// The staged step (body forward → LM head in vocabulary chunks → body backward) against the single
// graph of model.ts, whose gradients are checked against finite differences in gemma/model_test.ts.
const CASES = [
  ...([1, 2, 3] as const).map((gen) => ({ label: `Gemma ${gen}`, cs: tinyConfig(gen, true), seed: 50 + gen })),
  ...(["ple", "kv", "moe"] as const).map((v, k) => ({ label: `Gemma 4 (${v})`, cs: tinyConfig4(v), seed: 60 + k })),
];
for (const { label, cs, seed } of CASES) {
  for (const method of ["full", "lora"] as const) {
    // Full fine-tuning of the experts is out of scope (refused; tested below).
    if (method === "full" && cs.moe) continue;
    for (const [activations, stageLayers] of [["recompute", 0], ["save", 0], ["layer", 0], ["layer", 1]] as const) {
      const how = stageLayers ? `${activations}, backward in stages of ${stageLayers} layer` : activations;
      Deno.test(`${label} ${method} (${how}): staged step with a chunked vocabulary equals the single graph`, async () => {
        const ws = randomWeights(cs, seed, 0.2);
        const ids = [2, 17, 5, 33, 40, 8, 8, 21, 1, 12];
        const spec = { r: 4, alpha: 8, dropout: 0, rslora: false, targets: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] };
        // 16 positions × 12 rows per chunk: the 48-word vocabulary in 4 chunks.
        const e = await TrainEngine.create({
          model: { config: cs, weights: new Map([...ws].map(([k, v]) => [k, v.slice()])) },
          method,
          lora: method === "lora" ? spec : undefined,
          seed: 9,
          headChunkElements: 16 * 12,
          activations,
          stageLayers,
        });
        const tensors = new Map<string, Float32Array>();
        for (const [k, t] of e.trainable) {
          if (k.includes("lora_B")) t.data.forEach((_, i) => (t.data[i] = Math.cos(i * 0.7 + k.length) * 0.2));
          tensors.set(k, t.data);
        }
        e.zeroGrads();
        const r = await e.forwardBackward({ inputIds: Int32Array.from(ids), labels: Int32Array.from(ids), batchSize: 1, seqLen: ids.length });
        const ref = await runSequence(cs, ws, ids, { method, lora: method === "lora" ? { spec, tensors } : undefined });
        if (Math.abs(r.lossSum - ref.loss) > 1e-4 * Math.abs(ref.loss)) throw new Error(`loss ${r.lossSum} vs single graph ${ref.loss}`);
        if (ref.grads.size !== e.grads.size) throw new Error(`${e.grads.size} gradients, single graph has ${ref.grads.size}`);
        for (const [name, want] of ref.grads) {
          const got = e.grads.get(name)!;
          let scale = 0, worst = 0;
          for (let i = 0; i < want.length; i++) {
            scale = Math.max(scale, Math.abs(want[i]));
            worst = Math.max(worst, Math.abs(got[i] - want[i]));
          }
          if (scale === 0 && method === "full") throw new Error(`${name}: zero gradient`);
          if (worst > 2e-4 * Math.max(scale, 1e-3)) throw new Error(`${name}: max difference ${worst} (gradient scale ${scale})`);
        }
        e.release();
      });
    }
  }
}

Deno.test("evaluate with the vocabulary in chunks equals one chunk", async () => {
  const cs = tinyConfig(2, true);
  const ws = randomWeights(cs, 77, 0.2);
  const b = batch([rowA, rowB], [labA, labB]);
  const whole = await TrainEngine.create({ model: { config: cs, weights: ws }, method: "full", seed: 1 });
  const chunked = await TrainEngine.create({ model: { config: cs, weights: ws }, method: "full", seed: 1, headChunkElements: 16 * 5 });
  const a = await whole.evaluate(b), c2 = await chunked.evaluate(b);
  if (a.tokens !== c2.tokens || Math.abs(a.lossSum - c2.lossSum) > 1e-4) throw new Error(`one chunk ${a.lossSum}, ten chunks ${c2.lossSum}`);
  whole.release();
  chunked.release();
});

Deno.test("Gemma 4 MoE: full fine-tuning is refused with what to use instead", async () => {
  const cs = tinyConfig4("moe");
  let msg = "";
  try {
    await TrainEngine.create({ model: { config: cs, weights: randomWeights(cs, 1) }, method: "full", seed: 1 });
  } catch (e) {
    msg = (e as Error).message;
  }
  if (!/mixture-of-experts.*use LoRA/.test(msg)) throw new Error(`unclear refusal: "${msg}"`);
});

Deno.test("the backward in stages of layers gives the gradients of the one backward graph (LoRA, per-layer checkpointing)", async () => {
  const cs = tinyConfig(3, true);
  const ws = randomWeights(cs, 71, 0.2);
  const ids = [2, 17, 5, 33, 40, 8, 8, 21, 1, 12];
  const spec = { r: 4, alpha: 8, dropout: 0.1, rslora: false, targets: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] };
  const run = async (stageLayers: number) => {
    const e = await TrainEngine.create({ model: { config: cs, weights: ws }, method: "lora", lora: spec, seed: 9, activations: "layer", stageLayers });
    for (const [k, t] of e.trainable) if (k.includes("lora_B")) t.data.forEach((_, i) => (t.data[i] = Math.sin(i * 0.3 + k.length) * 0.2));
    e.zeroGrads();
    const r = await e.forwardBackward({ inputIds: Int32Array.from(ids), labels: Int32Array.from(ids), batchSize: 1, seqLen: ids.length }, { dropoutSeed: 3 });
    const grads = new Map([...e.grads].map(([k, v]) => [k, v.slice()]));
    const stages = await e.backwardStages();
    e.release();
    return { loss: r.lossSum, grads, stages };
  };
  const one = await run(0), staged = await run(1);
  if (one.stages !== 1 || staged.stages !== cs.numLayers) throw new Error(`stages: ${one.stages} and ${staged.stages}, want 1 and ${cs.numLayers}`);
  if (staged.loss !== one.loss) throw new Error(`loss ${staged.loss} vs ${one.loss}`);
  for (const [name, want] of one.grads) {
    const got = staged.grads.get(name)!;
    let worst = 0, scale = 0;
    for (let i = 0; i < want.length; i++) (worst = Math.max(worst, Math.abs(got[i] - want[i]))), (scale = Math.max(scale, Math.abs(want[i])));
    if (scale === 0) throw new Error(`${name}: zero gradient`);
    if (worst > 1e-6 * scale) throw new Error(`${name}: staged differs by ${worst} (scale ${scale})`);
  }
});
