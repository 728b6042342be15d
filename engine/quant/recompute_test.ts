/**
 * Per-layer checkpointing (engine/gemma/staged.ts, activations "layer") gives the same loss and
 * gradients as saving every activation, for LoRA on each base precision and for full fine-tuning,
 * and saves only the layers' inputs.
 */
import { TrainEngine } from "../train_engine.ts";
import { randomWeights, tinyConfig, tinyConfig4 } from "../gemma/testing.ts";
import type { GemmaConfig } from "../gemma/config.ts";
import { buildBody } from "../gemma/staged.ts";
import { freezeWeights } from "./base.ts";

const TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];
const SPEC = { r: 4, alpha: 8, dropout: 0.1, rslora: false, targets: TARGETS };

function batch() {
  const T = 8;
  const ids = Int32Array.from([2, 17, 5, 33, 40, 8, 8, 21, 2, 30, 31, 32, 9, 1, 0, 0]);
  return { inputIds: ids, labels: ids.map((v, i) => (i % T < 2 ? -100 : v)), batchSize: 2, seqLen: T };
}

async function grads(gen: 1 | 2 | 3 | "4-ple", method: "lora" | "full", precision: "fp32" | "bf16" | "int4", activations: "save" | "layer") {
  const c: GemmaConfig = gen === "4-ple" ? tinyConfig4("ple") : tinyConfig(gen, true);
  const w = randomWeights(c, gen === "4-ple" ? 19 : 11 + gen, 0.2);
  const model = precision === "fp32" ? { config: c, weights: w } : freezeWeights(c, w, precision);
  const e = await TrainEngine.create({ model, method, lora: SPEC, seed: 5, activations, headChunkElements: 16 * 20 });
  // Non-zero B, so the LoRA branches carry gradient into A and the layers below.
  for (const [k, t] of e.trainable) if (k.includes("lora_B")) t.data.forEach((_, i) => (t.data[i] = Math.cos(i + k.length) * 0.1));
  e.zeroGrads();
  const r = await e.forwardBackward(batch(), { dropoutSeed: 3 });
  const out = new Map([...e.grads].map(([k, g]) => [k, g.slice()]));
  e.release();
  return { loss: r.lossSum, grads: out };
}

// "4-ple": Gemma 4 with per-layer inputs, KV sharing (layers 2, 3 read 0, 1) and the double-wide MLP.
for (const gen of [1, 2, 3, "4-ple"] as const) {
  for (const [method, precision] of [["lora", "fp32"], ["lora", "bf16"], ["lora", "int4"], ["full", "fp32"]] as const) {
    Deno.test(`Gemma ${gen}, ${method}, ${precision} base: per-layer recompute gives the gradients of saved activations`, async () => {
      const a = await grads(gen, method, precision, "save");
      const b = await grads(gen, method, precision, "layer");
      if (Math.abs(a.loss - b.loss) > 1e-5 * Math.abs(a.loss)) throw new Error(`loss ${b.loss} vs ${a.loss}`);
      let worst = 0, scale = 0, layer0 = 0, sourceK = 0;
      for (const [k, g] of a.grads) {
        const h = b.grads.get(k)!;
        for (let i = 0; i < g.length; i++) {
          worst = Math.max(worst, Math.abs(g[i] - h[i]));
          scale = Math.max(scale, Math.abs(g[i]));
          if (k.includes("layers.0.")) layer0 = Math.max(layer0, Math.abs(h[i]));
          if (k.includes("layers.1.self_attn.k_proj")) sourceK = Math.max(sourceK, Math.abs(h[i]));
        }
      }
      // Gemma 4: layer 1's keys are read by layer 3 too; their gradient must arrive (and match).
      if (gen === "4-ple" && method === "lora" && sourceK === 0) throw new Error("the KV-sharing source layer's k_proj gradient is zero");
      // Layer 0's gradients pass through every recomputed layer: zero there would mean a broken chain.
      if (scale === 0 || layer0 === 0) throw new Error(`gradients are zero (largest ${scale}, layer 0 ${layer0})`);
      if (worst > 2e-5 * scale) throw new Error(`gradients differ by ${worst} (largest ${scale})`);
    });
  }
}

Deno.test("per-layer checkpointing saves only each layer's input (Gemma 4: plus PLE inputs and shared keys); full Gemma 4 E falls back", async () => {
  const c = tinyConfig(3, true);
  const b = buildBody(c, { batch: "batch", seq: "seq", positions: "positions", method: "lora", lora: SPEC, activations: "layer", basePrecision: "bf16" });
  const want = Array.from({ length: c.numLayers }, (_, i) => `ckpt.${i + 1}`);
  if (b.saved.join() !== want.join()) throw new Error(`saved ${b.saved}, expected ${want}`);
  const save = buildBody(c, { batch: "batch", seq: "seq", positions: "positions", method: "lora", lora: SPEC, activations: "save", basePrecision: "bf16" });
  if (save.saved.length <= b.saved.length) throw new Error(`saving all activations saved only ${save.saved.length} values`);
  const { presetConfig } = await import("../init_model.ts");
  const g4 = presetConfig("gemma-4-e2b", 4).config;
  // E2B's pattern cut to 4 layers: S S S F, no KV-shared layer; cut to 4 with sharing is the tiny "ple" config.
  const t4 = tinyConfig4("ple");
  const s4 = buildBody(t4, { batch: 1, seq: 4, positions: 4, method: "lora", lora: SPEC, activations: "layer" });
  const want4 = ["ckpt.ple", "ckpt.1", "ckpt.k.0", "ckpt.v.0", "ckpt.2", "ckpt.k.1", "ckpt.v.1", "ckpt.3", "ckpt.4"];
  if (s4.saved.join() !== want4.join()) throw new Error(`Gemma 4 saved ${s4.saved}, expected ${want4}`);
  const f4 = buildBody(t4, { batch: 1, seq: 4, positions: 4, method: "full", activations: "layer" });
  if (f4.saved.some((n) => n.startsWith("ckpt."))) throw new Error("full fine-tuning of Gemma 4 with PLE was checkpointed per layer");
  const e2b = buildBody(g4, { batch: 1, seq: 4, positions: 4, method: "lora", lora: SPEC, activations: "layer" });
  if (!e2b.saved.includes("ckpt.4")) throw new Error(`gemma-4-e2b (4 layers) saved ${e2b.saved}`);
});
