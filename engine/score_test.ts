/** `score` end to end on checkpoints written to disk, against the float64 reference. */
import * as fs from "node:fs";
import * as path from "node:path";
import { initModel } from "./init_model.ts";
import { score } from "./score.ts";
import { loadModel } from "./model_dir.ts";
import { referenceTokenNll } from "./gemma/reference.ts";
import { initLora, rng } from "./lora.ts";
import { writeAdapter } from "./peft.ts";
import { loraScaling } from "./gemma/model.ts";

const tmp = fs.mkdtempSync("/tmp/gt-score-");
const IDS = [2, 9259, 1902, 236764, 672, 563, 496, 1594];

for (const gen of [1, 2, 3] as const) {
  Deno.test(`score on a tiny Gemma ${gen} checkpoint matches the float64 reference`, async () => {
    const dir = await initModel({ preset: `tiny-${gen}`, out: path.join(tmp, `g${gen}`), seed: gen, std: 0.1, embedStd: 0.5 });
    const r = await score({ model: dir, ids: IDS });
    const m = await loadModel(dir);
    const ref = referenceTokenNll(m.config, m.weights, IDS);
    const diff = Math.max(...r.token_nll.map((x, i) => Math.abs(x - ref[i])));
    if (!(diff <= 1e-4)) throw new Error(`token_nll differs from the reference by ${diff}`);
    if (Math.abs(r.mean_nll - ref.reduce((a, b) => a + b) / ref.length) > 1e-4) throw new Error("mean_nll is not the mean");
  });
}

Deno.test("score --adapter applies a PEFT adapter and --grad reports LoRA gradient norms", async () => {
  const dir = path.join(tmp, "g3");
  if (!fs.existsSync(dir)) await initModel({ preset: "tiny-3", out: dir, seed: 3, std: 0.1, embedStd: 0.5 });
  const m = await loadModel(dir);
  const lora = { r: 4, alpha: 8, dropout: 0, rslora: false, targets: ["q_proj", "v_proj", "down_proj"] as ("q_proj" | "v_proj" | "down_proj")[] };
  const tensors = initLora(m.config, lora, 1);
  const r = rng(2);
  for (const [k, t] of tensors) if (k.includes("lora_B")) t.data.forEach((_, i) => (t.data[i] = (r() - 0.5) * 0.5));
  const adir = path.join(tmp, "adapter");
  writeAdapter(adir, tensors, lora, dir);
  const got = await score({ model: dir, adapter: adir, ids: IDS, grad: true });
  const ref = referenceTokenNll(m.config, m.weights, IDS, {
    lora: { scaling: loraScaling(lora), r: 4, tensors: new Map([...tensors].map(([k, v]) => [k, v.data])) },
  });
  const diff = Math.max(...got.token_nll.map((x, i) => Math.abs(x - ref[i])));
  if (!(diff <= 1e-4)) throw new Error(`adapter token_nll differs from the reference by ${diff}`);
  const names = Object.keys(got.grad_l2!);
  if (names.length !== tensors.size || !names.every((n) => n.startsWith("base_model.model.model.layers."))) {
    throw new Error(`expected ${tensors.size} LoRA gradient norms, got ${names.length}`);
  }
  if (!names.some((n) => got.grad_l2![n] > 0)) throw new Error("all LoRA gradients are zero");
});
