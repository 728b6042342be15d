/**
 * Quality of a low-precision base (docs/QUANT.md "Bounds"): on a checkpoint with realistic weight
 * scales, the bf16 / int8 / int4 base's token NLLs stay within NLL_BOUND (engine/quant/policy.ts)
 * of the fp32 base's; and a LoRA trained on a quantized base merges into the unquantized checkpoint.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { TrainEngine } from "../train_engine.ts";
import { paramSpecs } from "../gemma/params.ts";
import { loraScaling } from "../gemma/model.ts";
import { mergeLora, rng } from "../lora.ts";
import { AdamW } from "../optim.ts";
import { initModel } from "../init_model.ts";
import { loadModel } from "../model_dir.ts";
import { writeAdapter } from "../peft.ts";
import { exportMerged } from "../export.ts";
import { dequantize, quantize } from "./blocks.ts";
import { freezeWeights, loadForTraining } from "./base.ts";
import { NLL_BOUND } from "./policy.ts";
import { realisticConfig, realisticWeights } from "./_realistic.ts";
import { LORA_TARGETS } from "../../config/training.ts";

const TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

Deno.test("quality: bf16/int8/int4 base token NLLs stay within the documented bound of the fp32 base (realistic weight scales)", async () => {
  const c = realisticConfig("quality test");
  const w = realisticWeights(c, 42);
  const r = rng(7);
  const T = 48, B = 2;
  const ids = Int32Array.from({ length: B * T }, () => 2 + Math.floor(r() * (c.vocabSize - 2)));
  const spec = { r: 4, alpha: 8, dropout: 0, rslora: false, targets: TARGETS };
  const nll = async (model: Parameters<typeof TrainEngine.create>[0]["model"]) => {
    const e = await TrainEngine.create({ model, method: "lora", lora: spec, seed: 1 });
    const out: number[] = [];
    for (let b = 0; b < B; b++) {
      const one = { inputIds: ids.subarray(b * T, (b + 1) * T), labels: ids.subarray(b * T, (b + 1) * T), batchSize: 1, seqLen: T };
      out.push(...await e.tokenNll(one));
    }
    e.release();
    return out;
  };
  const ref = await nll({ config: c, weights: w });
  const mean = ref.reduce((a, b) => a + b, 0) / ref.length;
  // The fp32 model must be confident somewhere, or any quantization would look harmless.
  const spread = Math.max(...ref) - Math.min(...ref);
  if (spread < 2) throw new Error(`fp32 NLLs span only ${spread.toFixed(3)} nats (mean ${mean.toFixed(3)}): the test model is too uniform`);
  const shift: Record<string, number> = {};
  for (const p of ["bf16", "int8", "int4"] as const) {
    const q = await nll(freezeWeights(c, new Map([...w].map(([k, v]) => [k, v.slice()])), p));
    shift[p] = q.reduce((a, v, i) => a + Math.abs(v - ref[i]), 0) / q.length;
    console.log(`${p}: mean |ΔNLL| ${shift[p].toExponential(3)} nats/token (bound ${NLL_BOUND[p]}; fp32 mean NLL ${mean.toFixed(3)})`);
    if (!(shift[p] <= NLL_BOUND[p])) throw new Error(`${p} base: mean |ΔNLL| ${shift[p]} exceeds the bound ${NLL_BOUND[p]}`);
  }
  // Each step down in precision really changes the model (a no-op quantizer would pass the bounds).
  if (!(shift.int4 > shift.int8 && shift.int8 > shift.bf16 && shift.bf16 > 0)) throw new Error(`shifts not ordered int4 > int8 > bf16 > 0: ${JSON.stringify(shift)}`);
});

Deno.test("merge: a LoRA trained on an int4 base merges into the unquantized checkpoint (export --merged)", async () => {
  const tmp = fs.mkdtempSync(path.join(Deno.makeTempDirSync(), "merge-"));
  try {
    const modelDir = await initModel({ preset: "tiny-3", out: path.join(tmp, "model"), seed: 3, embedStd: 0.5 });
    const model = await loadForTraining(modelDir, { method: "lora", basePrecision: "int4" });
    if (!model.base || model.base.precision !== "int4") throw new Error("the model did not load with an int4 base");
    const spec = { r: 4, alpha: 8, dropout: 0, rslora: false, targets: [...TARGETS] };
    const e = await TrainEngine.create({ model, method: "lora", lora: spec, seed: 1 });
    const opt = new AdamW(e.trainable, { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 });
    const ids = Int32Array.from({ length: 16 }, (_, i) => 2 + ((i * 37) % 500));
    for (let s = 1; s <= 3; s++) {
      e.zeroGrads();
      const r = await e.forwardBackward({ inputIds: ids, labels: ids, batchSize: 1, seqLen: 16 });
      opt.update(e.grads, 1e-2, 1 / r.tokens);
    }
    e.release();
    const run = path.join(tmp, "run");
    fs.mkdirSync(path.join(run, "final"), { recursive: true });
    fs.writeFileSync(path.join(run, "run.json"), JSON.stringify({ config: { method: "lora", model: modelDir } }));
    writeAdapter(path.join(run, "final"), e.trainable, { ...spec, targets: [...LORA_TARGETS] }, modelDir);
    await exportMerged({ runDir: run, dataDir: tmp }, path.join(tmp, "merged"));
    const merged = (await loadModel(path.join(tmp, "merged"))).weights;
    const base = (await loadModel(modelDir)).weights;
    const want = mergeLora(base, e.trainable, loraScaling(spec));
    let moved = 0;
    for (const [name, wv] of want) {
      const got = merged.get(name)!;
      for (let i = 0; i < wv.length; i++) if (got[i] !== wv[i]) throw new Error(`${name}[${i}]: merged ${got[i]}, fp32 base + BA gives ${wv[i]}`);
      if (name.endsWith("q_proj.weight") && wv.some((v, i) => v !== base.get(name)![i])) moved++;
    }
    if (moved === 0) throw new Error("the adapter changed no weight: nothing was tested");
    // And the merge did not start from the dequantized int4 weights the adapter was trained on.
    const q = "model.layers.0.self_attn.q_proj.weight";
    const deq = dequantize(quantize(base.get(q)!, paramSpecs(model.config).find((s) => s.name === q)!.shape, "int4"));
    const off = merged.get(q)!.reduce((a, v, i) => Math.max(a, Math.abs(v - (deq[i] + want.get(q)![i] - base.get(q)![i]))), 0);
    if (off === 0) throw new Error("merged weights equal the dequantized base + BA");
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});
