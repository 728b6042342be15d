/** The RunConfig → Axolotl / TRL mapping, field by field: every field lands in exactly one list, with the right key and value. */
import { assert, assertEquals, assertThrows } from "../../tests/_assert.ts";
import { parseRunConfig } from "../../config/training.ts";
import { type FieldMapping, type HandoffConfig, mapAxolotl, type MapContext, mapTrl, parseHandoffConfig } from "./mapping.ts";
import { toYaml, yamlNumber, yamlString } from "./yaml.ts";
import YAML from "yaml";

const CTX: MapContext = {
  baseModel: "google/gemma-3-1b-pt",
  generation: 3,
  hasValidation: true,
  gpus: 8,
  nodes: 2,
  strategy: "zero2",
  files: { train: "data/train.jsonl", validation: "data/validation.jsonl", deepspeed: "deepspeed/zero2.json" },
};

const CFG: HandoffConfig = {
  ...parseRunConfig({
    name: "My Run",
    model: "/models/gemma",
    dataset: { path: "/d.jsonl", format: "messages", validation: 0.15, packing: true, skipInvalid: true, fields: { messages: "conv" } },
    method: "lora",
    lora: { r: 32, alpha: 64, dropout: 0.1, rslora: true, targets: ["q_proj", "k_proj", "down_proj"] },
    maxSteps: 500,
    epochs: 3,
    batchSize: 6,
    gradAccum: 4,
    learningRate: 1.5e-4,
    schedule: "constant",
    warmupSteps: 25,
    optimizer: "adamw-8bit",
    weightDecay: 0.01,
    adamBeta1: 0.85,
    adamBeta2: 0.995,
    adamEps: 1e-6,
    maxGradNorm: 0.5,
    maxLength: 1024,
    evalEvery: 20,
    saveEvery: 100,
    keepCheckpoints: 4,
    seed: 1234,
    device: "webgpu",
    threads: 6,
  }),
  basePrecision: "int8",
};

/** Every leaf path of the config (objects expanded, arrays and records as one value). */
function leaves(o: Record<string, unknown>, prefix = ""): string[] {
  return Object.entries(o).flatMap(([k, v]) =>
    v && typeof v === "object" && !Array.isArray(v) && k !== "fields" ? leaves(v as Record<string, unknown>, `${prefix}${k}.`) : [`${prefix}${k}`]
  );
}

function byOurs(list: FieldMapping[]): Map<string, FieldMapping> {
  return new Map(list.map((f) => [f.ours, f]));
}

/** theirs key path → value inside the target config. */
function get(cfg: Record<string, unknown>, keyPath: string): unknown {
  return keyPath.split(".").reduce<unknown>((o, k) => (o as Record<string, unknown>)?.[k], cfg);
}

function checkComplete(m: { fields: FieldMapping[]; unmapped: FieldMapping[] }) {
  const all = [...m.fields, ...m.unmapped].map((f) => f.ours).filter((o) => !o.startsWith("("));
  assertEquals([...all].sort(), [...new Set(all)].sort(), "a field is listed twice");
  assertEquals([...all].sort(), leaves(CFG).sort(), "every RunConfig field is mapped or listed as unmapped");
}

Deno.test("Axolotl mapping: field by field", () => {
  const m = mapAxolotl(CFG, CTX);
  checkComplete(m);
  const f = byOurs(m.fields);
  const expect: [string, string, unknown][] = [
    ["model", "base_model", "google/gemma-3-1b-pt"],
    ["method", "adapter", "lora"],
    ["basePrecision", "load_in_8bit", true],
    ["lora.r", "lora_r", 32],
    ["lora.alpha", "lora_alpha", 64],
    ["lora.dropout", "lora_dropout", 0.1],
    ["lora.targets", "lora_target_modules", ["q_proj", "k_proj", "down_proj"]],
    ["lora.rslora", "peft_use_rslora", true],
    ["maxSteps", "max_steps", 500],
    ["epochs", "num_epochs", 3],
    ["batchSize", "micro_batch_size", 6],
    ["gradAccum", "gradient_accumulation_steps", 4],
    ["learningRate", "learning_rate", 1.5e-4],
    ["schedule", "lr_scheduler", "constant_with_warmup"],
    ["warmupSteps", "warmup_steps", 25],
    ["optimizer", "optimizer", "adamw_bnb_8bit"],
    ["weightDecay", "weight_decay", 0.01],
    ["adamBeta1", "adam_beta1", 0.85],
    ["adamBeta2", "adam_beta2", 0.995],
    ["adamEps", "adam_epsilon", 1e-6],
    ["maxGradNorm", "max_grad_norm", 0.5],
    ["maxLength", "sequence_len", 1024],
    ["dataset.packing", "sample_packing", false],
    ["evalEvery", "eval_steps", 20],
    ["saveEvery", "save_steps", 100],
    ["keepCheckpoints", "save_total_limit", 4],
    ["seed", "seed", 1234],
    ["name", "output_dir", "./outputs/my-run"],
    ["dataset.path", "datasets", "data/train.jsonl"],
    ["dataset.validation", "test_datasets", "data/validation.jsonl"],
  ];
  for (const [ours, theirs, to] of expect) {
    const e = f.get(ours);
    assert(e, `${ours} is not mapped`);
    assertEquals([e.theirs, e.to], [theirs, to], ours);
    if (!["datasets", "test_datasets"].includes(theirs)) assertEquals(m.config[theirs], to, `config.${theirs}`);
  }
  assertEquals(m.config.datasets, [{ path: "data/train.jsonl", ds_type: "json", split: "train" }]);
  assertEquals(m.config.val_set_size, 0, "the split is ours, not axolotl's");
  assertEquals(m.config.deepspeed, "deepspeed/zero2.json");
  const u = byOurs(m.unmapped);
  assertEquals([...u.keys()].sort(), ["device", "threads"]);
});

Deno.test("TRL mapping: field by field, into model / peft / sft sections", () => {
  const m = mapTrl(CFG, CTX);
  checkComplete(m);
  const f = byOurs(m.fields);
  const expect: [string, string, unknown][] = [
    ["model", "model.name_or_path", "google/gemma-3-1b-pt"],
    ["basePrecision", "model.load_in_8bit", true],
    ["lora.r", "peft.r", 32],
    ["lora.alpha", "peft.lora_alpha", 64],
    ["lora.dropout", "peft.lora_dropout", 0.1],
    ["lora.targets", "peft.target_modules", ["q_proj", "k_proj", "down_proj"]],
    ["lora.rslora", "peft.use_rslora", true],
    ["maxSteps", "sft.max_steps", 500],
    ["epochs", "sft.num_train_epochs", 3],
    ["batchSize", "sft.per_device_train_batch_size", 6],
    ["gradAccum", "sft.gradient_accumulation_steps", 4],
    ["learningRate", "sft.learning_rate", 1.5e-4],
    ["schedule", "sft.lr_scheduler_type", "constant_with_warmup"],
    ["warmupSteps", "sft.warmup_steps", 25],
    ["optimizer", "sft.optim", "adamw_bnb_8bit"],
    ["weightDecay", "sft.weight_decay", 0.01],
    ["adamBeta1", "sft.adam_beta1", 0.85],
    ["adamBeta2", "sft.adam_beta2", 0.995],
    ["adamEps", "sft.adam_epsilon", 1e-6],
    ["maxGradNorm", "sft.max_grad_norm", 0.5],
    ["maxLength", "sft.max_length", 1024],
    ["dataset.packing", "sft.packing", false],
    ["evalEvery", "sft.eval_steps", 20],
    ["saveEvery", "sft.save_steps", 100],
    ["keepCheckpoints", "sft.save_total_limit", 4],
    ["seed", "sft.seed", 1234],
    ["name", "sft.output_dir", "./outputs/my-run"],
  ];
  for (const [ours, theirs, to] of expect) {
    const e = f.get(ours);
    assert(e, `${ours} is not mapped`);
    assertEquals([e.theirs, e.to], [theirs, to], ours);
    assertEquals(get(m.config, theirs), to, `config.${theirs}`);
  }
  assertEquals(get(m.config, "sft.eval_strategy"), "steps");
  assertEquals(get(m.config, "sft.dataset_kwargs"), { skip_prepare_dataset: true });
  assertEquals(get(m.config, "data"), { train: "data/train.jsonl", validation: "data/validation.jsonl" });
});

Deno.test("mapping: full fine-tuning, 4-bit, fp32, FSDP and no validation", () => {
  const full = { ...CFG, method: "full" as const, basePrecision: "int4" as const };
  const ax = mapAxolotl(full, { ...CTX, strategy: "fsdp", hasValidation: false });
  assertEquals(ax.config.adapter, undefined, "no adapter for full fine-tuning");
  assertEquals(ax.config.load_in_4bit, undefined, "4-bit loading needs LoRA");
  assert(ax.unmapped.some((u) => u.ours === "basePrecision"), "the unusable basePrecision is listed");
  assert(ax.unmapped.some((u) => u.ours === "lora.r"), "LoRA fields are listed as unused");
  assert(ax.unmapped.some((u) => u.ours === "evalEvery") && ax.unmapped.some((u) => u.ours === "dataset.validation"), "no validation: eval is listed");
  assertEquals(ax.config.fsdp, ["full_shard", "auto_wrap"]);
  assertEquals((ax.config.fsdp_config as Record<string, unknown>).fsdp_transformer_layer_cls_to_wrap, "Gemma3DecoderLayer");
  const q = mapAxolotl({ ...CFG, basePrecision: "int4" }, CTX);
  assertEquals([q.config.adapter, q.config.load_in_4bit], ["qlora", true]);
  const t = mapTrl({ ...CFG, basePrecision: "fp32" }, { ...CTX, strategy: "none" });
  assertEquals([get(t.config, "model.torch_dtype"), get(t.config, "sft.bf16"), get(t.config, "sft.deepspeed")], ["float32", false, undefined]);
});

Deno.test("parseHandoffConfig keeps basePrecision and names a bad one", () => {
  const c = parseHandoffConfig({ model: "demo", dataset: { path: "sample" }, maxSteps: 2, basePrecision: "bf16" }, "x.json");
  assertEquals(c.basePrecision, "bf16");
  assertThrows(
    () => parseHandoffConfig({ model: "demo", dataset: { path: "sample" }, maxSteps: 2, basePrecision: "fp8" }, "x.json"),
    /x\.json:\nbasePrecision: expected one of fp32, bf16, int8, int4/,
  );
  assertThrows(() => parseHandoffConfig({ model: "demo", dataset: { path: "sample" } }, "x.json"), /maxSteps: set maxSteps or epochs/);
});

Deno.test("YAML emitter: strings YAML 1.1 would misread are quoted, floats keep a dot, blocks round-trip", () => {
  assertEquals(["yes", "on", "No", "null", "~", "1", "x: y", "#a", "q_proj", "data/train.jsonl"].map(yamlString), [
    '"yes"',
    '"on"',
    '"No"',
    '"null"',
    '"~"',
    '"1"',
    '"x: y"',
    '"#a"',
    "q_proj",
    "data/train.jsonl",
  ]);
  assertEquals([2e-4, 1e-8, 1.5e21, 16, 0.05, -3].map(yamlNumber), ["0.0002", "1.0e-8", "1.5e+21", "16", "0.05", "-3"]);
  const doc = { a: "line one\n  line two\n", b: [{ c: [1, 2], d: "on" }, [], {}], e: 'tab\tand "quotes" and ünïcode', f: null, g: "trailing space \n" };
  const text = toYaml(doc, ["header"]);
  for (const version of ["1.1", "1.2"] as const) assertEquals(YAML.parse(text, { version }), doc, `YAML ${version}`);
  assert(text.startsWith("# header\n") && text.includes("a: |\n  line one\n    line two\n"), text);
  assertThrows(() => yamlNumber(NaN), /only finite numbers/);
});
