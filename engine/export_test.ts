/** Export round trips: the merged model scores the same as base + adapter; the ONNX folder runs in transformers.js and matches. */
import * as fs from "node:fs";
import * as path from "node:path";
import { initModel } from "./init_model.ts";
import { loadModel } from "./model_dir.ts";
import { initLora, rng } from "./lora.ts";
import { writeAdapter } from "./peft.ts";
import { exportAdapter, exportMerged, exportOnnx, zipFiles } from "./export.ts";
import { score } from "./score.ts";

const IDS = [2, 9259, 1902, 236764, 672, 563];

async function fakeRun() {
  const root = fs.mkdtempSync("/tmp/gt-export-");
  const base = await initModel({ preset: "tiny-3", out: path.join(root, "base"), seed: 4, std: 0.1, embedStd: 0.5 });
  const m = await loadModel(base);
  const lora = { r: 4, alpha: 8, dropout: 0, rslora: false, targets: ["q_proj", "v_proj", "down_proj"] as ("q_proj" | "v_proj" | "down_proj")[] };
  const t = initLora(m.config, lora, 2);
  const r = rng(3);
  for (const [k, v] of t) if (k.includes("lora_B")) v.data.forEach((_, i) => (v.data[i] = (r() - 0.5) * 0.5));
  const runDir = path.join(root, "runs", "r1");
  writeAdapter(path.join(runDir, "final"), t, lora, base);
  fs.writeFileSync(path.join(runDir, "run.json"), JSON.stringify({ id: "r1", config: { method: "lora", model: base } }));
  return { root, base, runDir, adapter: path.join(runDir, "final") };
}

Deno.test("export: adapter files, merged model = base + adapter, ONNX folder verified in transformers.js", async () => {
  const { root, base, runDir, adapter } = await fakeRun();
  const src = { runDir, dataDir: root };
  const files = exportAdapter(src, path.join(root, "out-adapter"));
  if (!files.includes("adapter_model.safetensors") || !files.includes("adapter_config.json")) throw new Error(`adapter export: ${files}`);

  await exportMerged(src, path.join(root, "out-merged"));
  const merged = await score({ model: path.join(root, "out-merged"), ids: IDS });
  const withAdapter = await score({ model: base, adapter, ids: IDS });
  const plain = await score({ model: base, ids: IDS });
  const d = Math.max(...merged.token_nll.map((x, i) => Math.abs(x - withAdapter.token_nll[i])));
  if (d > 1e-4) throw new Error(`merged model scores differ from base + adapter by ${d}`);
  if (Math.abs(plain.mean_nll - merged.mean_nll) < 1e-4) throw new Error("the adapter changed nothing: the test would not see a bad merge");

  // The browser ONNX folder of the run, checked in transformers.js by the export itself.
  const onnxDir = path.join(root, "out-onnx");
  const v = await exportOnnx(src, onnxDir);
  if (!v || !v.pass) throw new Error(`ONNX export verification: ${JSON.stringify(v)}`);
  for (const f of ["onnx/model.onnx", "onnx/model.onnx_data", "config.json", "tokenizer.json", "README.md"]) {
    if (!fs.existsSync(path.join(onnxDir, f))) throw new Error(`ONNX export lacks ${f}`);
  }
  if (!fs.readFileSync(path.join(onnxDir, "README.md"), "utf8").includes("Result: **pass**")) throw new Error("model card lacks the verification result");
});

Deno.test("zip: a store-only archive with correct CRCs and a central directory", () => {
  const z = zipFiles([{ name: "a.txt", data: new TextEncoder().encode("hello") }, { name: "b.bin", data: new Uint8Array([1, 2, 3]) }]);
  const dv = new DataView(z.buffer);
  if (dv.getUint32(0, true) !== 0x04034b50) throw new Error("no local header");
  if (dv.getUint32(14, true) !== 0x3610a686) throw new Error("wrong CRC-32 of 'hello'");
  if (dv.getUint32(z.length - 22, true) !== 0x06054b50 || dv.getUint16(z.length - 12, true) !== 2) throw new Error("bad end record");
});
