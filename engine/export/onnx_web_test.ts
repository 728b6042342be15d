/**
 * Browser ONNX export on tiny Gemma 1/2/3 checkpoints (real Gemma 3 tokenizer), verified in
 * transformers.js: same token NLLs as our engine (≤ 1e-3) and the same greedy tokens. The sliding
 * window is cut to 5 so the 20-token probe crosses it and the in-graph sliding mask matters.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as ort from "onnxruntime-node";
import { initModel } from "../init_model.ts";
import { loadModel } from "../model_dir.ts";
import { loadTokenizer } from "../tokenizer.ts";
import { writeWebExport } from "./onnx_web.ts";
import { ONNX_NLL_BOUND, runtimeProbe, verifyOnnxExport } from "./onnx_probe.ts";

async function tinyModel(gen: 1 | 2 | 3, window: number | null, seed = 10 + gen) {
  const root = fs.mkdtempSync("/tmp/gt-onnxweb-");
  const dir = await initModel({ preset: `tiny-${gen}`, out: path.join(root, "model"), seed, std: 0.5, embedStd: 0.05 }); // scales whose greedy tokens vary
  if (window) {
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, "config.json"), "utf8"));
    cfg.sliding_window = window;
    fs.writeFileSync(path.join(dir, "config.json"), JSON.stringify(cfg));
  }
  return { root, dir, model: await loadModel(dir), tokenizer: await loadTokenizer(dir) };
}

for (const gen of [1, 2, 3] as const) {
  Deno.test(`Gemma ${gen}: the browser ONNX export runs in transformers.js with our engine's NLLs and greedy tokens`, async () => {
    const { root, dir, model, tokenizer } = await tinyModel(gen, gen === 1 ? null : 5);
    const out = path.join(root, "web");
    const files = writeWebExport(model.config, model.weights, dir, out);
    for (const f of ["config.json", "onnx/model.onnx", "onnx/model.onnx_data", "tokenizer.json", "tokenizer_config.json"]) {
      if (!files.includes(f) || !fs.existsSync(path.join(out, f))) throw new Error(`export lacks ${f}: ${files}`);
    }
    const cfg = JSON.parse(fs.readFileSync(path.join(out, "config.json"), "utf8"));
    if (cfg["transformers.js_config"]?.use_external_data_format?.["model.onnx"] !== 1) throw new Error("config.json does not declare the external data");

    // The I/O contract as onnxruntime reads it: names and dynamic dims.
    const s = await ort.InferenceSession.create(path.join(out, "onnx", "model.onnx"));
    const L = model.config.numLayers;
    const wantIn = ["input_ids", "attention_mask", "position_ids", ...Array.from({ length: L }, (_, i) => [`past_key_values.${i}.key`, `past_key_values.${i}.value`]).flat()];
    const wantOut = ["logits", ...Array.from({ length: L }, (_, i) => [`present.${i}.key`, `present.${i}.value`]).flat()];
    if (s.inputNames.join() !== wantIn.join()) throw new Error(`inputs ${s.inputNames}`);
    if ([...s.outputNames].sort().join() !== wantOut.sort().join()) throw new Error(`outputs ${s.outputNames}`);
    const meta = s.inputMetadata.find((m) => m.name === "past_key_values.0.key") as { shape?: (number | string)[] };
    if (JSON.stringify(meta.shape) !== JSON.stringify(["batch_size", model.config.numKvHeads, "past_sequence_length", model.config.headDim])) {
      throw new Error(`past shape ${JSON.stringify(meta.shape)}`);
    }
    await s.release();

    const v = await verifyOnnxExport(out, model, tokenizer);
    console.log(`Gemma ${gen}: max abs NLL diff ${v.maxAbsNllDiff.toExponential(2)} over ${v.tokens} tokens, greedy ${v.greedyRuntime.join(" ")}`);
    if (v.tokens < 12) throw new Error(`probe too short: ${v.tokens}`);
    if (!(v.maxAbsNllDiff <= ONNX_NLL_BOUND)) throw new Error(`NLLs differ by ${v.maxAbsNllDiff}`);
    if (!v.greedyEqual) throw new Error(`greedy tokens: ours ${v.greedyOurs}, transformers.js ${v.greedyRuntime}`);
    if (!v.tokenizerEqual) throw new Error("transformers.js's tokenizer encodes the probe differently");
    if (!v.pass) throw new Error(JSON.stringify(v));
    fs.rmSync(root, { recursive: true, force: true });
  });
}

Deno.test("the probe notices a wrong export: weights of another model give different NLLs", async () => {
  const a = await tinyModel(3, 5);
  const b = await tinyModel(3, 5, 99);
  const out = path.join(a.root, "web");
  writeWebExport(a.model.config, a.model.weights, a.dir, out);
  const ids = a.tokenizer.encode("Hello there, general Kenobi.", { addSpecialTokens: true });
  const runtime = await runtimeProbe(out, ids, "Hello there");
  const { ourProbe } = await import("./onnx_probe.ts");
  // Same shapes (both tiny), different weights: a mix-up would show here.
  const other = await ourProbe({ config: a.model.config, weights: b.model.weights }, ids);
  const d = Math.max(...other.nll.map((x, i) => Math.abs(x - runtime.nll[i])));
  if (!(d > 10 * ONNX_NLL_BOUND)) throw new Error(`different weights differ by only ${d}`);
  fs.rmSync(a.root, { recursive: true, force: true });
  fs.rmSync(b.root, { recursive: true, force: true });
});
