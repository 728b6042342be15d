/** Export round trips: the merged model scores the same as base + adapter; the ONNX decoder runs alone and matches. */
import * as fs from "node:fs";
import * as path from "node:path";
import * as ort from "onnxruntime-node";
import { initModel } from "./init_model.ts";
import { loadModel } from "./model_dir.ts";
import { initLora, rng } from "./lora.ts";
import { writeAdapter } from "./peft.ts";
import { exportAdapter, exportMerged, exportOnnx, zipFiles } from "./export.ts";
import { score } from "./score.ts";
import { Generator, loadForGeneration } from "./generate.ts";
import { decoderMask, slotsFor } from "./decoder.ts";
import { ropeTables } from "./gemma/model.ts";

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

Deno.test("export: adapter files, merged model = base + adapter, ONNX decoder runs on its own", async () => {
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

  const onnxDir = path.join(root, "out-onnx");
  await exportOnnx(src, onnxDir, 64);
  const session = await ort.InferenceSession.create(path.join(onnxDir, "model.onnx"));
  const model = await loadForGeneration(base, adapter);
  const c = model.config, D = c.headDim;
  const gen = new Generator(model);
  // Prompt through both, token by token; the exported graph gets its cache from its own outputs.
  const caches = c.layerTypes.map((t) => ({ slots: slotsFor(c, t, 64), k: new Float32Array(slotsFor(c, t, 64) * c.numKvHeads * D), v: new Float32Array(slotsFor(c, t, 64) * c.numKvHeads * D) }));
  for (let p = 0; p < IDS.length; p++) {
    const feeds: Record<string, ort.Tensor> = { input_ids: new ort.Tensor("int64", BigInt64Array.of(BigInt(IDS[p])), [1]), last: new ort.Tensor("int64", BigInt64Array.of(0n), [1]) };
    for (const t of new Set(c.layerTypes)) {
      const { cos, sin } = ropeTables(c, t, p + 1);
      feeds[`rope_cos_${t}`] = new ort.Tensor("float32", Float32Array.from(cos.subarray(p * D)), [1, D]);
      feeds[`rope_sin_${t}`] = new ort.Tensor("float32", Float32Array.from(sin.subarray(p * D)), [1, D]);
      const slots = slotsFor(c, t, 64);
      feeds[`mask_${t}`] = new ort.Tensor("float32", decoderMask(c, t, slots, p, 1), [1, slots + 1]);
    }
    caches.forEach((x, i) => {
      feeds[`cache_k.${i}`] = new ort.Tensor("float32", x.k, [1, c.numKvHeads, x.slots, D]);
      feeds[`cache_v.${i}`] = new ort.Tensor("float32", x.v, [1, c.numKvHeads, x.slots, D]);
    });
    const out = await session.run(feeds);
    caches.forEach((x, i) => {
      const nk = out[`new_k.${i}`].data as Float32Array, nv = out[`new_v.${i}`].data as Float32Array;
      for (let h = 0; h < c.numKvHeads; h++) {
        x.k.set(nk.subarray(h * D, (h + 1) * D), (h * x.slots + (p % x.slots)) * D);
        x.v.set(nv.subarray(h * D, (h + 1) * D), (h * x.slots + (p % x.slots)) * D);
      }
    });
    const want = await gen.feed([IDS[p]]);
    const got = out.logits.data as Float32Array;
    let diff = 0;
    for (let i = 0; i < want.length; i++) diff = Math.max(diff, Math.abs(want[i] - got[i]));
    if (diff > 1e-3) throw new Error(`exported ONNX logits differ by ${diff} at position ${p}`);
  }
  gen.release();
  await session.release();
});

Deno.test("zip: a store-only archive with correct CRCs and a central directory", () => {
  const z = zipFiles([{ name: "a.txt", data: new TextEncoder().encode("hello") }, { name: "b.bin", data: new Uint8Array([1, 2, 3]) }]);
  const dv = new DataView(z.buffer);
  if (dv.getUint32(0, true) !== 0x04034b50) throw new Error("no local header");
  if (dv.getUint32(14, true) !== 0x3610a686) throw new Error("wrong CRC-32 of 'hello'");
  if (dv.getUint32(z.length - 22, true) !== 0x06054b50 || dv.getUint16(z.length - 12, true) !== 2) throw new Error("bad end record");
});
