/**
 * Multimodal checkpoints, text part: only the text decoder is loaded, it scores exactly like the same
 * weights in a text-only checkpoint, adapters carry the checkpoint's own module paths with a
 * target_modules regex that misses the vision tower, and a merged export keeps every other tensor's bytes.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { initModel } from "./init_model.ts";
import { describeModel, loadModel, resolveCheckpoint } from "./model_dir.ts";
import { initLora, rng } from "./lora.ts";
import { readAdapter, writeAdapter } from "./peft.ts";
import { exportMerged } from "./export.ts";
import { score } from "./score.ts";
import { checkpointLayout } from "./model_dir.ts";
import { paramSpecs } from "./gemma/params.ts";
import { listCheckpoint, readHeader, readTensorBytes, readTensorF32, writeSafetensors } from "./safetensors.ts";
import { TrainEngine } from "./train_engine.ts";

const IDS = [2, 9259, 1902, 236764, 672, 563, 107, 1];
const LORA = { r: 4, alpha: 8, dropout: 0, rslora: false, targets: ["q_proj", "v_proj", "down_proj"] as ("q_proj" | "v_proj" | "down_proj")[] };

/** The same text weights as a plain Gemma3ForCausalLM directory. */
function asCausalLm(mmDir: string, out: string) {
  const { config, text } = resolveCheckpoint(mmDir);
  fs.mkdirSync(out, { recursive: true });
  writeSafetensors(path.join(out, "model.safetensors"), [...text].map(([name, e]) => ({ name, dtype: "F32" as const, shape: e.shape, data: readTensorF32(e) })));
  const raw = JSON.parse(fs.readFileSync(path.join(mmDir, "config.json"), "utf8"));
  fs.writeFileSync(path.join(out, "config.json"), JSON.stringify({ ...raw.text_config, architectures: ["Gemma3ForCausalLM"], eos_token_id: raw.eos_token_id }));
  return config;
}

function maxDiff(a: number[], b: number[]) {
  return Math.max(...a.map((x, i) => Math.abs(x - b[i])));
}

for (const [preset, prefix] of [["tiny-3-mm", "language_model.model."], ["tiny-3-mm-v5", "model.language_model."]] as const) {
  Deno.test(`${preset}: text decoder only (${prefix}…), scores = the text-only checkpoint, model info lists the towers`, async () => {
    const root = fs.mkdtempSync("/tmp/gt-mm-");
    const dir = await initModel({ preset, out: path.join(root, "mm"), seed: 3, std: 0.1, embedStd: 0.5 });
    const info = describeModel(dir);
    if (!info.multimodal || info.architecture !== "Gemma3ForConditionalGeneration" || info.otherTensors !== 6) {
      throw new Error(`model info: ${JSON.stringify({ ...info, config: undefined })}`);
    }
    if (!info.notes.some((n) => n.includes("Multimodal"))) throw new Error(`notes: ${info.notes}`);
    const m = await loadModel(dir);
    if (m.config.textPrefix !== prefix) throw new Error(`prefix ${m.config.textPrefix}`);
    const names = paramSpecs(m.config).map((s) => s.name).sort();
    if (JSON.stringify([...m.weights.keys()].sort()) !== JSON.stringify(names)) throw new Error("loaded tensors are not exactly the text decoder's");
    asCausalLm(dir, path.join(root, "text"));
    const a = await score({ model: dir, ids: IDS }), b = await score({ model: path.join(root, "text"), ids: IDS });
    if (maxDiff(a.token_nll, b.token_nll) > 1e-6) throw new Error(`multimodal vs text-only scores differ by ${maxDiff(a.token_nll, b.token_nll)}`);
    fs.rmSync(root, { recursive: true, force: true });
  });
}

Deno.test("multimodal LoRA: trained adapter names follow the checkpoint; target_modules reaches the text decoder only; merged export keeps the towers byte for byte", async () => {
  const root = fs.mkdtempSync("/tmp/gt-mm-lora-");
  const base = await initModel({ preset: "tiny-3-mm", out: path.join(root, "base"), seed: 5, std: 0.1, embedStd: 0.5 });
  const model = await loadModel(base);
  const engine = await TrainEngine.create({ model, method: "lora", lora: LORA, seed: 1, adapter: initLora(model.config, LORA, 1) });
  const r = rng(9);
  for (const [k, t] of engine.trainable) if (k.includes("lora_B")) t.data.forEach((_, i) => (t.data[i] = (r() - 0.5) * 0.5));
  const batch = { inputIds: Int32Array.from(IDS), labels: Int32Array.from(IDS), batchSize: 1, seqLen: IDS.length };
  await engine.forwardBackward(batch);
  if ([...engine.grads.values()].every((g) => g.every((x) => x === 0))) throw new Error("no gradient reached the adapter");
  engine.release();

  const runDir = path.join(root, "runs", "r1");
  writeAdapter(path.join(runDir, "final"), engine.trainable, LORA, base, checkpointLayout(base));
  fs.writeFileSync(path.join(runDir, "run.json"), JSON.stringify({ id: "r1", config: { method: "lora", model: base } }));
  const names = readHeader(path.join(runDir, "final", "adapter_model.safetensors")).entries.map((e) => e.name);
  if (!names.every((n) => n.startsWith("base_model.model.language_model.model.layers."))) throw new Error(`adapter names: ${names.slice(0, 3)}`);
  const cfg = JSON.parse(fs.readFileSync(path.join(runDir, "final", "adapter_config.json"), "utf8"));
  // PEFT full-matches a string target_modules against module names (Python re; this subset reads the same in JS).
  const re = new RegExp(`^(?:${cfg.target_modules})$`);
  for (const m of ["language_model.model.layers.0.self_attn.q_proj", "model.language_model.layers.1.mlp.down_proj"]) if (!re.test(m)) throw new Error(`${m} not targeted`);
  for (
    const m of [
      "vision_tower.vision_model.encoder.layers.0.self_attn.q_proj",
      "model.vision_tower.vision_model.encoder.layers.0.self_attn.q_proj",
      "language_model.model.layers.0.self_attn.k_proj",
    ]
  ) {
    if (re.test(m)) throw new Error(`${m} would be wrapped`);
  }
  const back = readAdapter(path.join(runDir, "final"));
  if (back.lora.targets.sort().join() !== "down_proj,q_proj,v_proj" || !back.tensors.has("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight")) {
    throw new Error(`adapter read back: ${back.lora.targets} ${[...back.tensors.keys()][0]}`);
  }

  const out = path.join(root, "merged");
  await exportMerged({ runDir, dataDir: root }, out);
  const before = listCheckpoint(base), after = listCheckpoint(out);
  if (after.size !== before.size) throw new Error(`merged export has ${after.size} tensors, base ${before.size}`);
  const text = new Set(paramSpecs(model.config).map((s) => `language_model.model.${s.name.slice(6)}`));
  let others = 0;
  for (const [name, e] of before) {
    if (text.has(name)) continue;
    const a = readTensorBytes(e), b = readTensorBytes(after.get(name)!);
    if (after.get(name)!.dtype !== e.dtype || a.length !== b.length || a.some((x, i) => x !== b[i])) throw new Error(`${name} changed in the merged export`);
    others++;
  }
  if (others !== 6) throw new Error(`expected 6 untouched tower tensors, compared ${others}`);
  if (!JSON.parse(fs.readFileSync(path.join(out, "config.json"), "utf8")).vision_config) throw new Error("merged config lost its vision_config");
  const merged = await score({ model: out, ids: IDS }), withAdapter = await score({ model: base, adapter: path.join(runDir, "final"), ids: IDS });
  const plain = await score({ model: base, ids: IDS });
  if (maxDiff(merged.token_nll, withAdapter.token_nll) > 1e-4) throw new Error("merged ≠ base + adapter");
  if (maxDiff(plain.token_nll, merged.token_nll) < 1e-4) throw new Error("the adapter changed nothing: the test could not see a bad merge");
  fs.rmSync(root, { recursive: true, force: true });
});
