/** The default base precision by model size, the memory estimate per precision, and the device refusal. */
import { presetConfig } from "../init_model.ts";
import { parseRunConfig } from "../../config/training.ts";
import { BasePrecisionError, checkBasePrecision, defaultBasePrecision, estimateRunMemory, probeBasePrecision } from "./policy.ts";
import { estimateMemory } from "../gemma/params.ts";

Deno.test("default base precision: int8 under 2B parameters, int4 from 2B, fp32 for full fine-tuning; the reason says so", () => {
  const want: [string, number | undefined, string][] = [["gemma-3-270m", undefined, "int8"], ["gemma-3-1b", undefined, "int8"], ["gemma-2-2b", undefined, "int4"], [
    "gemma-2-9b",
    undefined,
    "int4",
  ], ["gemma-3-12b", undefined, "int4"]];
  for (const [p, l, prec] of want) {
    const d = defaultBasePrecision(presetConfig(p, l).config);
    if (d.precision !== prec) throw new Error(`${p}: default ${d.precision}, expected ${prec}`);
    if (!d.reason.includes(prec) || !/within bound/.test(d.reason)) throw new Error(`${p}: reason "${d.reason}"`);
  }
  if (defaultBasePrecision(presetConfig("gemma-2-9b").config, "full").precision !== "fp32") throw new Error("full fine-tuning must default to fp32");
});

Deno.test("memory estimate follows the base precision and per-layer recompute", () => {
  const c = presetConfig("gemma-3-1b").config;
  const o = { method: "lora" as const, batchSize: 4, maxLength: 256, lora: { r: 8, targets: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] } };
  const plain = { method: "lora" as const, batchSize: 4, seqLen: 256, loraR: 8 };
  const m = Object.fromEntries((["fp32", "bf16", "int8", "int4"] as const).map((p) => [p, estimateRunMemory(c, { ...o, basePrecision: p })]));
  if (!(m.fp32.weightsBytes > m.bf16.weightsBytes && m.bf16.weightsBytes > m.int8.weightsBytes && m.int8.weightsBytes > m.int4.weightsBytes)) {
    throw new Error(`weights not ordered: ${Object.values(m).map((x) => x.weightsBytes)}`);
  }
  // bf16: projections 2 bytes a weight, the table too: about half of fp32's.
  const ratio = m.bf16.weightsBytes / m.fp32.weightsBytes;
  if (Math.abs(ratio - 0.5) > 0.01) throw new Error(`bf16/fp32 weights ${ratio}`);
  const all = estimateMemory(c, plain);
  if (!(m.bf16.activationBytes < all.activationBytes / 3)) {
    throw new Error(`per-layer recompute should keep far fewer activations: ${m.bf16.activationBytes} vs ${all.activationBytes}`);
  }
  // Full fine-tuning: fp32 weights, gradient and two moments as before; its activations are checkpointed
  // per layer as LoRA's (defaultActivations), except where the model cannot be (Gemma 4 with per-layer inputs).
  const full = estimateRunMemory(c, { ...o, method: "full" }), fullAll = estimateMemory(c, { ...plain, method: "full" });
  if (full.weightsBytes !== fullAll.weightsBytes || full.optimizerBytes !== fullAll.optimizerBytes || full.trainableBytes !== 0) {
    throw new Error(`full fine-tuning's weights or optimizer estimate changed: ${JSON.stringify(full)} vs ${JSON.stringify(fullAll)}`);
  }
  if (full.activationBytes !== m.fp32.activationBytes) throw new Error(`full fine-tuning's activations ${full.activationBytes}, LoRA's per-layer ${m.fp32.activationBytes}`);
  const e2b = presetConfig("gemma-4-e2b").config;
  if (estimateRunMemory(e2b, { ...o, method: "full" }).totalBytes !== estimateMemory(e2b, { ...plain, method: "full" }).totalBytes) {
    throw new Error("full fine-tuning of a model with per-layer inputs is not checkpointed per layer, so its estimate keeps every activation");
  }
});

Deno.test("RunConfig: basePrecision is optional, refused for full fine-tuning with the field named", () => {
  const base = { dataset: { path: "sample" }, maxSteps: 5 };
  if (parseRunConfig(base).basePrecision !== undefined) throw new Error("basePrecision should default to the policy (absent)");
  if (parseRunConfig({ ...base, basePrecision: "int4" }).basePrecision !== "int4") throw new Error("int4 not kept");
  let msg = "";
  try {
    parseRunConfig({ ...base, method: "full", basePrecision: "int4" });
  } catch (e) {
    msg = (e as Error).message;
  }
  if (!/basePrecision: .*LoRA only/.test(msg)) throw new Error(`full + int4: "${msg}"`);
});

Deno.test("a precision the device cannot run is refused before the run, naming the device, the precision and what works", async () => {
  for (const p of ["fp32", "bf16", "int8", "int4"] as const) await checkBasePrecision("cpu", p); // the CPU runs every kernel
  if ((await probeBasePrecision("cuda", "int4")) === null) return console.log("cuda runs int4 here: nothing to refuse on this machine");
  let err: unknown;
  try {
    await checkBasePrecision("cuda", "int4");
  } catch (e) {
    err = e;
  }
  if (!(err instanceof BasePrecisionError)) throw new Error(`expected a BasePrecisionError, got ${err}`);
  const m = err.message;
  if (!m.includes("int4") || !m.includes("device cuda") || !m.includes("device cpu")) throw new Error(`message: ${m}`);
});
