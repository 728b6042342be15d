/**
 * Bringing a model back: a PEFT adapter written by PEFT's naming rules (as Axolotl/TRL save it: bf16,
 * `base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight`), with the HF Trainer's
 * trainer_state.json and TensorBoard events, imported from a folder and from a zip upload. It becomes
 * a completed run, shows in the playground's models, generates, and exports. Bad adapters are refused
 * with the tensor and shapes named, and leave nothing behind.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { createApp } from "../routes/app.tsx";
import { loadAppSettings } from "../config/app.ts";
import { TrainingService } from "../trainer/service.ts";
import { readStatus } from "../trainer/run_dir.ts";
import { EventWriter } from "../trainer/tfevents.ts";
import { importModel } from "../trainer/import_run.ts";
import { ensureDemoModel } from "../engine/init_model.ts";
import { loadModel } from "../engine/model_dir.ts";
import { writeSafetensors } from "../engine/safetensors.ts";
import { zipFiles } from "../engine/export.ts";
import { assert, assertEquals } from "./_assert.ts";

const R = 4;

/** A trainer's output folder: PEFT files, a checkpoint with trainer_state.json, TensorBoard events. */
async function peftOutput(root: string, dataDir: string, o: { base?: string; badShape?: boolean } = {}): Promise<string> {
  const base = await loadModel(await ensureDemoModel(dataDir));
  const out = path.join(root, "outputs", "chat");
  fs.mkdirSync(path.join(out, "checkpoint-4"), { recursive: true });
  let seed = 1;
  const rand = (n: number, scale: number) => Float32Array.from({ length: n }, () => ((seed = (seed * 16807) % 2147483647) / 2147483647 - 0.5) * scale);
  const tensors = [];
  for (let i = 0; i < base.config.numLayers; i++) {
    for (const m of ["q_proj", "v_proj"]) {
      const [outDim, inDim] = base.shapes.get(`model.layers.${i}.self_attn.${m}.weight`)!;
      const a = [R, inDim + (o.badShape && i === 0 ? 1 : 0)], b = [outDim, R];
      tensors.push({ name: `base_model.model.model.layers.${i}.self_attn.${m}.lora_A.weight`, dtype: "BF16" as const, shape: a, data: rand(a[0] * a[1], 0.2) });
      tensors.push({ name: `base_model.model.model.layers.${i}.self_attn.${m}.lora_B.weight`, dtype: "BF16" as const, shape: b, data: rand(b[0] * b[1], 0.2) });
    }
  }
  const config = {
    alpha_pattern: {},
    auto_mapping: null,
    base_model_name_or_path: o.base ?? "google/gemma-3-270m",
    bias: "none",
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layers_pattern: null,
    layers_to_transform: null,
    lora_alpha: 8,
    lora_dropout: 0.05,
    modules_to_save: null,
    peft_type: "LORA",
    r: R,
    rank_pattern: {},
    revision: null,
    target_modules: ["v_proj", "q_proj"],
    task_type: "CAUSAL_LM",
    use_dora: false,
    use_rslora: false,
  };
  for (const d of [out, path.join(out, "checkpoint-4")]) {
    writeSafetensors(path.join(d, "adapter_model.safetensors"), tensors, { format: "pt" });
    fs.writeFileSync(path.join(d, "adapter_config.json"), JSON.stringify(config, null, 2));
  }
  fs.writeFileSync(path.join(out, "checkpoint-4", "trainer_state.json"), JSON.stringify({ global_step: 4, log_history: [{ loss: 0.5, step: 4 }] }));
  const tb = path.join(out, "runs", "Dec02_01-00-00_node1");
  fs.mkdirSync(tb, { recursive: true });
  const w = new EventWriter(tb);
  for (let s = 1; s <= 4; s++) w.scalars(s, { "train/loss": 2 / s, "train/learning_rate": 1e-4 });
  w.close();
  return out;
}

function runIds(dataDir: string): string[] {
  return fs.readdirSync(path.join(dataDir, "runs")).sort();
}

Deno.test("import: a PEFT adapter from a bundle's output becomes a completed run; it is in the playground, generates and exports", async () => {
  const root = fs.mkdtempSync("/tmp/gt-import-");
  const dataDir = path.join(root, "data");
  const service = new TrainingService(dataDir, { intervalMs: 0 });
  try {
    const app = createApp({ settings: loadAppSettings({ host: "127.0.0.1", port: 0, data: dataDir }), service });
    const bundle = path.join(root, "bundle");
    const out = await peftOutput(bundle, dataDir);
    // The bundle's record names the run and its base model ("demo"), which the adapter's Hub id alone would not find here.
    fs.writeFileSync(
      path.join(bundle, "handoff.json"),
      JSON.stringify({ format: "gemma-tuner-handoff", version: 1, target: "axolotl", config: { name: "chat", model: "demo", dataset: { path: "sample" }, maxSteps: 4 } }),
    );

    const r = await importModel({ source: out, dataDir });
    assertEquals([r.kind, r.baseModel, r.tensors, r.step, r.fromHandoff, r.events.length], [
      "adapter",
      "demo",
      4 * (await loadModel(await ensureDemoModel(dataDir))).config.numLayers,
      4,
      true,
      1,
    ]);
    assertEquals(readStatus(r.runDir)?.state, "completed");
    const run = JSON.parse(fs.readFileSync(path.join(r.runDir, "run.json"), "utf8"));
    assertEquals([run.config.name, run.config.model, run.config.method, run.config.lora.r, run.config.lora.alpha, run.config.lora.targets], ["chat", "demo", "lora", R, 8, [
      "q_proj",
      "v_proj",
    ]]);
    assertEquals(run.imported.target, "axolotl");
    assert(fs.existsSync(path.join(r.runDir, "final", "adapter_model.safetensors")), "final/ holds the adapter");
    assert(!runIds(dataDir).some((n) => n.startsWith(".import-")), "the staging folder is gone");

    const v = service.list().find((x) => x.id === r.runId);
    assert(v && v.hasFinal, "the run is in the history with a final model");
    assertEquals(v.trainLoss, 0.5, "train/loss from the imported TensorBoard events");
    const models = await (await app.request("/v1/models")).json();
    assert(models.data.some((m: { id: string }) => m.id === `${r.runId}/final`), `playground models: ${JSON.stringify(models.data)}`);
    const play = await (await app.request("/inference")).text();
    assert(play.includes(`${r.runId}/final`), "the playground page lists it");

    const chat = await app.request("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ model: `${r.runId}/final`, messages: [{ role: "user", content: "What is the capital of France?" }], max_tokens: 5, temperature: 0 }),
    });
    assertEquals(chat.status, 200, await chat.clone().text());
    const body = await chat.json();
    assert(typeof body.choices[0].message.content === "string" && body.usage.completion_tokens > 0, `generated: ${JSON.stringify(body)}`);

    const exp = await app.request(`/api/export?model=${r.runId}/final&as=adapter`);
    assertEquals([exp.status, exp.headers.get("Content-Type")], [200, "application/zip"]);
    await exp.body?.cancel();

    // The same output as a zip through the Import form.
    const entries: { name: string; data: Uint8Array }[] = [];
    for (const f of fs.readdirSync(out, { recursive: true }) as string[]) {
      const p = path.join(out, f);
      if (fs.statSync(p).isFile()) entries.push({ name: `chat/${f}`, data: fs.readFileSync(p) });
    }
    const form = new FormData();
    form.append("file", new File([await zipFiles(entries) as Uint8Array<ArrayBuffer>], "chat.zip", { type: "application/zip" }));
    form.append("name", "from zip");
    form.append("base", "demo");
    const page = await app.request("/import", { method: "POST", body: form, headers: { "HX-Request": "true", "HX-CSRF": "1" } });
    const text = await page.text();
    assertEquals(page.status, 200, text);
    const id = /run <a href="\/runs\/([^"]+)"/.exec(text)?.[1];
    assert(id, `import answer: ${text}`);
    const zipped = service.list().find((x) => x.id === decodeURIComponent(id));
    assert(zipped && zipped.run.config.name === "from zip" && zipped.hasFinal, "the zip import is a run too");
    assert(!fs.readdirSync(dataDir).some((n) => n.startsWith(".upload-")), "the uploaded zip is removed");
  } finally {
    await service.stop();
  }
});

Deno.test("import refuses, naming what is wrong, and leaves nothing behind", async () => {
  const root = fs.mkdtempSync("/tmp/gt-import-bad-");
  const dataDir = path.join(root, "data");
  const service = new TrainingService(dataDir, { intervalMs: 0 });
  try {
    const app = createApp({ settings: loadAppSettings({ host: "127.0.0.1", port: 0, data: dataDir }), service });
    const bad = await peftOutput(path.join(root, "bad"), dataDir, { base: "demo", badShape: true });
    const before = runIds(dataDir);
    let err = "";
    await importModel({ source: bad, dataDir }).catch((e) => (err = e.message));
    assert(/layers\.0\.self_attn\.q_proj\.lora_A\.weight has shape \[4,\d+\] but the base's model\.layers\.0\.self_attn\.q_proj is \[\d+,\d+\]/.test(err), err);
    const unknown = await peftOutput(path.join(root, "unknown"), dataDir, { base: "google/not-downloaded" });
    const res = await app.request("/import", { method: "POST", body: new URLSearchParams({ folder: unknown }), headers: { "HX-Request": "true", "HX-CSRF": "1" } });
    const msg = await res.text();
    assert(res.status === 400 && msg.includes("google/not-downloaded") && msg.includes("is not on this machine"), `${res.status} ${msg}`);
    fs.rmSync(path.join(unknown, "adapter_model.safetensors"));
    await importModel({ source: unknown, dataDir, base: "demo" }).catch((e) => (err = e.message));
    assert(err.includes("adapter_model.safetensors is missing"), err);
    const empty = path.join(root, "empty");
    fs.mkdirSync(empty);
    await importModel({ source: empty, dataDir }).catch((e) => (err = e.message));
    assert(err.includes("Nothing to import"), err);
    assertEquals(runIds(dataDir), before, "refused imports left no run and no staging folder");
  } finally {
    await service.stop();
  }
});
