/**
 * RunConfig → an existing distributed trainer's config, field by field (docs/HANDOFF.md has the table).
 * Every field of the RunConfig ends in exactly one of two lists: `fields` (where it went in the
 * target's config, and as what) or `unmapped` (why it has no equivalent). Nothing is dropped silently;
 * the bundle's README and the CLI's JSON line print both lists.
 *
 * The dataset is not mapped to a target's chat template: it is rendered here, exactly as our trainer
 * tokenises it (engine/handoff/dataset.ts), so `dataset.*` fields are "applied in the data files".
 */
import { parseRunConfig, type RunConfig } from "../../config/training.ts";
import type { YamlValue } from "./yaml.ts";

/** handoff.json's format marker and version (a wrong one is not read back by import). */
export const HANDOFF_FORMAT = "gemma-tuner-handoff";
export const HANDOFF_VERSION = 1;

export const TARGETS = ["axolotl", "trl"] as const;
export type Target = typeof TARGETS[number];
export const LAUNCHERS = ["slurm", "skypilot", "local"] as const;
export type Launcher = typeof LAUNCHERS[number];
export const STRATEGIES = ["none", "zero2", "zero3", "fsdp"] as const;
export type Strategy = typeof STRATEGIES[number];
export const BASE_PRECISIONS = ["fp32", "bf16", "int8", "int4"] as const;
export type BasePrecision = typeof BASE_PRECISIONS[number];

/** A RunConfig, with the frozen base's precision where the config carries one (DESIGN.md RunConfig). */
export type HandoffConfig = RunConfig & { basePrecision?: BasePrecision };

/** One RunConfig field and what became of it. `theirs` is the target's key path (null when unmapped). */
export interface FieldMapping {
  ours: string;
  value: unknown;
  theirs: string | null;
  to?: unknown;
  note?: string;
}

export interface MapContext {
  /** The base model as the cluster names it: a Hub id or a path there. */
  baseModel: string;
  /** Gemma generation of the base (for FSDP's layer class). */
  generation: 1 | 2 | 3 | 4;
  hasValidation: boolean;
  gpus: number;
  nodes: number;
  strategy: Strategy;
  /** File names inside the bundle. */
  files: { train: string; validation: string; deepspeed?: string };
}

export interface MappedConfig {
  config: Record<string, YamlValue>;
  fields: FieldMapping[];
  unmapped: FieldMapping[];
}

/** Hugging Face's scheduler names for ours (warmup is linear in all three, as ours is). */
export const HF_SCHEDULER: Record<RunConfig["schedule"], string> = { cosine: "cosine", linear: "linear", constant: "constant_with_warmup" };

/** transformers' decoder-layer class of each generation (what FSDP wraps). */
export const DECODER_LAYER: Record<1 | 2 | 3 | 4, string> = { 1: "GemmaDecoderLayer", 2: "Gemma2DecoderLayer", 3: "Gemma3DecoderLayer", 4: "Gemma4TextDecoderLayer" };

export function slug(s: string): string {
  return s.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 60) || "run";
}

/** Collects the lists while a target's config is built. */
class Recorder {
  readonly fields: FieldMapping[] = [];
  readonly unmapped: FieldMapping[] = [];
  map(ours: string, value: unknown, theirs: string, to: unknown, note?: string) {
    this.fields.push({ ours, value, theirs, to, ...(note ? { note } : {}) });
  }
  none(ours: string, value: unknown, note: string) {
    this.unmapped.push({ ours, value, theirs: null, note });
  }
}

/** The fields every target treats alike: dataset handling, runtime choices of this app. */
function common(cfg: HandoffConfig, ctx: MapContext, r: Recorder, dataKey: string, evalKey: string) {
  const d = cfg.dataset;
  r.map("dataset.path", d.path, dataKey, ctx.files.train, "rendered into the data file with our chat template and label mask");
  r.map("dataset.format", d.format, dataKey, ctx.files.train, "applied when rendering (rows are pre-tokenised)");
  if (d.fields !== undefined) r.map("dataset.fields", d.fields, dataKey, ctx.files.train, "applied when rendering");
  r.map(
    "dataset.skipInvalid",
    d.skipInvalid,
    dataKey,
    ctx.files.train,
    d.skipInvalid ? "invalid rows were left out of the data file" : "every row was valid (else the bundle is refused)",
  );
  if (d.validationPath !== undefined) {
    r.map("dataset.validationPath", d.validationPath, evalKey, ctx.hasValidation ? ctx.files.validation : null, "rendered into the validation file");
  }
  if (ctx.hasValidation) {
    r.map(
      "dataset.validation",
      d.validation,
      evalKey,
      ctx.files.validation,
      d.validationPath ? "unused: validationPath is set" : "the same seeded split as ours, written as its own file",
    );
  } else r.none("dataset.validation", d.validation, "no validation rows: nothing held out");
  r.none("device", cfg.device, "this app's runtime choice; the target trains on the cluster's GPUs");
  if (cfg.threads !== undefined) r.none("threads", cfg.threads, "CPU threads of this app's runtime; no equivalent on GPUs");
}

/** Axolotl's YAML config (https://docs.axolotl.ai/docs/config-reference.html), pre-tokenised datasets. */
/** transformers' `optim` names: torch's AdamW, or bitsandbytes' blockwise 8-bit AdamW (the scheme ours follows). */
const HF_OPTIM = { "adamw": "adamw_torch", "adamw-8bit": "adamw_bnb_8bit" } as const;
const OPTIM_8BIT_NOTE = "bitsandbytes' blockwise 8-bit AdamW; ours follows its scheme (docs/OPTIMIZER.md)";

export function mapAxolotl(cfg: HandoffConfig, ctx: MapContext): MappedConfig {
  const r = new Recorder();
  const c: Record<string, YamlValue> = {};
  const set = (ours: string, value: unknown, theirs: string, to: YamlValue, note?: string) => {
    c[theirs] = to;
    r.map(ours, value, theirs, to, note);
  };
  set("model", cfg.model, "base_model", ctx.baseModel, cfg.model === ctx.baseModel ? undefined : "as the cluster finds it");
  const bp = cfg.basePrecision;
  const quant = cfg.method === "lora" && (bp === "int4" || bp === "int8");
  if (cfg.method === "lora") set("method", cfg.method, "adapter", bp === "int4" ? "qlora" : "lora");
  else r.map("method", cfg.method, "adapter", null, "full fine-tuning: no adapter key");
  if (bp !== undefined) {
    if (bp === "int4" && quant) set("basePrecision", bp, "load_in_4bit", true, "bitsandbytes NF4 (QLoRA); ours is block int4");
    else if (bp === "int8" && quant) set("basePrecision", bp, "load_in_8bit", true, "bitsandbytes LLM.int8; ours is per-block int8");
    else if (bp === "bf16") set("basePrecision", bp, "bf16", true);
    else if (bp === "fp32") set("basePrecision", bp, "bf16", false, "float32 weights and compute");
    else r.none("basePrecision", bp, "a quantised base needs LoRA; full fine-tuning loads it in bf16 instead");
  }
  if (c.bf16 === undefined) c.bf16 = bp === "fp32" ? false : "auto";
  if (cfg.method === "lora") {
    set("lora.r", cfg.lora.r, "lora_r", cfg.lora.r);
    set("lora.alpha", cfg.lora.alpha, "lora_alpha", cfg.lora.alpha);
    set("lora.dropout", cfg.lora.dropout, "lora_dropout", cfg.lora.dropout);
    set("lora.targets", cfg.lora.targets, "lora_target_modules", [...cfg.lora.targets]);
    set("lora.rslora", cfg.lora.rslora, "peft_use_rslora", cfg.lora.rslora);
  } else for (const k of ["r", "alpha", "dropout", "targets", "rslora"] as const) r.none(`lora.${k}`, cfg.lora[k], "method is full: no adapter");
  if (cfg.maxSteps !== undefined) set("maxSteps", cfg.maxSteps, "max_steps", cfg.maxSteps);
  if (cfg.epochs !== undefined) set("epochs", cfg.epochs, "num_epochs", cfg.epochs, cfg.maxSteps !== undefined ? "max_steps wins, as ours does" : undefined);
  else c.num_epochs = 1;
  set("batchSize", cfg.batchSize, "micro_batch_size", cfg.batchSize, "per GPU");
  set("gradAccum", cfg.gradAccum, "gradient_accumulation_steps", cfg.gradAccum);
  set("learningRate", cfg.learningRate, "learning_rate", cfg.learningRate);
  set("schedule", cfg.schedule, "lr_scheduler", HF_SCHEDULER[cfg.schedule]);
  set("warmupSteps", cfg.warmupSteps, "warmup_steps", cfg.warmupSteps);
  set("optimizer", cfg.optimizer, "optimizer", HF_OPTIM[cfg.optimizer], cfg.optimizer === "adamw-8bit" ? OPTIM_8BIT_NOTE : undefined);
  set("weightDecay", cfg.weightDecay, "weight_decay", cfg.weightDecay);
  set("adamBeta1", cfg.adamBeta1, "adam_beta1", cfg.adamBeta1);
  set("adamBeta2", cfg.adamBeta2, "adam_beta2", cfg.adamBeta2);
  set("adamEps", cfg.adamEps, "adam_epsilon", cfg.adamEps);
  set("maxGradNorm", cfg.maxGradNorm, "max_grad_norm", cfg.maxGradNorm);
  set("maxLength", cfg.maxLength, "sequence_len", cfg.maxLength, "rows are already cut to it");
  set("dataset.packing", cfg.dataset.packing, "sample_packing", false, cfg.dataset.packing ? "rows are packed in the data file as ours are; axolotl must not repack" : undefined);
  c.datasets = [{ path: ctx.files.train, ds_type: "json", split: "train" }];
  if (ctx.hasValidation) c.test_datasets = [{ path: ctx.files.validation, ds_type: "json", split: "train" }];
  c.val_set_size = 0;
  common(cfg, ctx, r, "datasets", "test_datasets");
  if (ctx.hasValidation && cfg.evalEvery > 0) set("evalEvery", cfg.evalEvery, "eval_steps", cfg.evalEvery);
  else r.none("evalEvery", cfg.evalEvery, ctx.hasValidation ? "0: no evaluation" : "no validation split: no evaluation");
  if (cfg.saveEvery > 0) set("saveEvery", cfg.saveEvery, "save_steps", cfg.saveEvery);
  else r.map("saveEvery", cfg.saveEvery, "save_strategy", "no", "0: only the final model");
  if (cfg.saveEvery <= 0) c.save_strategy = "no";
  set("keepCheckpoints", cfg.keepCheckpoints, "save_total_limit", cfg.keepCheckpoints);
  set("seed", cfg.seed, "seed", cfg.seed, "data order differs: ours shuffles with mulberry32, theirs with torch");
  set("name", cfg.name, "output_dir", `./outputs/${slug(cfg.name)}`);
  c.gradient_checkpointing = true;
  c.logging_steps = 1;
  c.use_tensorboard = true;
  c.dataset_prepared_path = "./prepared";
  if (ctx.strategy === "zero2" || ctx.strategy === "zero3") c.deepspeed = ctx.files.deepspeed!;
  if (ctx.strategy === "fsdp") {
    c.fsdp = ["full_shard", "auto_wrap"];
    c.fsdp_config = { fsdp_transformer_layer_cls_to_wrap: DECODER_LAYER[ctx.generation], fsdp_offload_params: false, fsdp_state_dict_type: "FULL_STATE_DICT" };
  }
  return { config: c, fields: r.fields, unmapped: r.unmapped };
}

/**
 * The config of the bundle's train_trl.py: `model` (from_pretrained arguments), `peft` (peft.LoraConfig
 * arguments), `sft` (trl.SFTConfig arguments) and `data` (the files).
 */
export function mapTrl(cfg: HandoffConfig, ctx: MapContext): MappedConfig {
  const r = new Recorder();
  const model: Record<string, YamlValue> = {};
  const sft: Record<string, YamlValue> = {};
  let peft: Record<string, YamlValue> | null = null;
  const at = (sec: Record<string, YamlValue>, name: string) => (ours: string, value: unknown, theirs: string, to: YamlValue, note?: string) => {
    sec[theirs] = to;
    r.map(ours, value, `${name}.${theirs}`, to, note);
  };
  const m = at(model, "model"), s = at(sft, "sft");
  m("model", cfg.model, "name_or_path", ctx.baseModel, cfg.model === ctx.baseModel ? undefined : "as the cluster finds it");
  const bp = cfg.basePrecision;
  const quant = cfg.method === "lora" && (bp === "int4" || bp === "int8");
  model.torch_dtype = bp === "fp32" ? "float32" : "bfloat16";
  if (bp !== undefined) {
    if (bp === "int4" && quant) {
      m("basePrecision", bp, "load_in_4bit", true, "bitsandbytes NF4 (QLoRA); ours is block int4");
      model.bnb_4bit_quant_type = "nf4";
      model.bnb_4bit_compute_dtype = "bfloat16";
    } else if (bp === "int8" && quant) m("basePrecision", bp, "load_in_8bit", true, "bitsandbytes LLM.int8; ours is per-block int8");
    else if (bp === "bf16" || bp === "fp32") m("basePrecision", bp, "torch_dtype", model.torch_dtype);
    else r.none("basePrecision", bp, "a quantised base needs LoRA; full fine-tuning loads it in bf16 instead");
  }
  sft.bf16 = bp !== "fp32";
  if (cfg.method === "lora") {
    peft = { task_type: "CAUSAL_LM", bias: "none" };
    const p = at(peft, "peft");
    r.map("method", cfg.method, "peft", "LoraConfig");
    p("lora.r", cfg.lora.r, "r", cfg.lora.r);
    p("lora.alpha", cfg.lora.alpha, "lora_alpha", cfg.lora.alpha);
    p("lora.dropout", cfg.lora.dropout, "lora_dropout", cfg.lora.dropout);
    p("lora.targets", cfg.lora.targets, "target_modules", [...cfg.lora.targets]);
    p("lora.rslora", cfg.lora.rslora, "use_rslora", cfg.lora.rslora);
  } else {
    r.map("method", cfg.method, "peft", null, "full fine-tuning: no LoraConfig");
    for (const k of ["r", "alpha", "dropout", "targets", "rslora"] as const) r.none(`lora.${k}`, cfg.lora[k], "method is full: no adapter");
  }
  s("name", cfg.name, "output_dir", `./outputs/${slug(cfg.name)}`);
  if (cfg.maxSteps !== undefined) s("maxSteps", cfg.maxSteps, "max_steps", cfg.maxSteps);
  if (cfg.epochs !== undefined) s("epochs", cfg.epochs, "num_train_epochs", cfg.epochs, cfg.maxSteps !== undefined ? "max_steps wins, as ours does" : undefined);
  s("batchSize", cfg.batchSize, "per_device_train_batch_size", cfg.batchSize, "per GPU");
  sft.per_device_eval_batch_size = cfg.batchSize;
  s("gradAccum", cfg.gradAccum, "gradient_accumulation_steps", cfg.gradAccum);
  s("learningRate", cfg.learningRate, "learning_rate", cfg.learningRate);
  s("schedule", cfg.schedule, "lr_scheduler_type", HF_SCHEDULER[cfg.schedule]);
  s("warmupSteps", cfg.warmupSteps, "warmup_steps", cfg.warmupSteps);
  s("optimizer", cfg.optimizer, "optim", HF_OPTIM[cfg.optimizer], cfg.optimizer === "adamw-8bit" ? OPTIM_8BIT_NOTE : undefined);
  s("weightDecay", cfg.weightDecay, "weight_decay", cfg.weightDecay);
  s("adamBeta1", cfg.adamBeta1, "adam_beta1", cfg.adamBeta1);
  s("adamBeta2", cfg.adamBeta2, "adam_beta2", cfg.adamBeta2);
  s("adamEps", cfg.adamEps, "adam_epsilon", cfg.adamEps);
  s("maxGradNorm", cfg.maxGradNorm, "max_grad_norm", cfg.maxGradNorm);
  s("maxLength", cfg.maxLength, "max_length", cfg.maxLength, "rows are already cut to it");
  s("dataset.packing", cfg.dataset.packing, "packing", false, cfg.dataset.packing ? "rows are packed in the data file as ours are; TRL must not repack" : undefined);
  common(cfg, ctx, r, "data.train", "data.validation");
  if (ctx.hasValidation && cfg.evalEvery > 0) {
    sft.eval_strategy = "steps";
    s("evalEvery", cfg.evalEvery, "eval_steps", cfg.evalEvery);
  } else {
    sft.eval_strategy = "no";
    r.none("evalEvery", cfg.evalEvery, ctx.hasValidation ? "0: no evaluation" : "no validation split: no evaluation");
  }
  if (cfg.saveEvery > 0) {
    sft.save_strategy = "steps";
    s("saveEvery", cfg.saveEvery, "save_steps", cfg.saveEvery);
  } else {
    sft.save_strategy = "no";
    r.map("saveEvery", cfg.saveEvery, "sft.save_strategy", "no", "0: only the final model");
  }
  s("keepCheckpoints", cfg.keepCheckpoints, "save_total_limit", cfg.keepCheckpoints);
  s("seed", cfg.seed, "seed", cfg.seed, "data order differs: ours shuffles with mulberry32, theirs with torch");
  sft.data_seed = cfg.seed;
  sft.logging_steps = 1;
  sft.report_to = ["tensorboard"];
  sft.gradient_checkpointing = true;
  // The rows are final: TRL must neither re-tokenise nor drop our labels column.
  sft.dataset_kwargs = { skip_prepare_dataset: true };
  sft.remove_unused_columns = false;
  if (ctx.strategy === "zero2" || ctx.strategy === "zero3") sft.deepspeed = ctx.files.deepspeed!;
  if (ctx.strategy === "fsdp") {
    sft.fsdp = "full_shard auto_wrap";
    sft.fsdp_config = { transformer_layer_cls_to_wrap: [DECODER_LAYER[ctx.generation]] };
  }
  const config: Record<string, YamlValue> = {
    model,
    peft,
    sft,
    data: { train: ctx.files.train, validation: ctx.hasValidation ? ctx.files.validation : null },
  };
  return { config, fields: r.fields, unmapped: r.unmapped };
}

/** DeepSpeed's JSON config; "auto" lets the HF Trainer fill batch sizes, clipping and precision from its own arguments. */
export function deepspeedConfig(stage: 2 | 3): Record<string, unknown> {
  const zero: Record<string, unknown> = { stage, overlap_comm: true, contiguous_gradients: true, reduce_bucket_size: "auto" };
  if (stage === 3) Object.assign(zero, { stage3_gather_16bit_weights_on_model_save: true, stage3_prefetch_bucket_size: "auto", stage3_param_persistence_threshold: "auto" });
  return {
    zero_optimization: zero,
    bf16: { enabled: "auto" },
    fp16: { enabled: "auto" },
    gradient_accumulation_steps: "auto",
    gradient_clipping: "auto",
    train_batch_size: "auto",
    train_micro_batch_size_per_gpu: "auto",
  };
}

/**
 * A RunConfig as a bundle reads it (a config file or run.json's `config`): validated by the RunConfig
 * schema; `basePrecision` is kept when the schema of this build does not know it yet.
 */
export function parseHandoffConfig(raw: unknown, source: string): HandoffConfig {
  if (!raw || typeof raw !== "object" || Array.isArray(raw)) throw new RangeError(`Invalid ${source}: expected a JSON object (a RunConfig)`);
  const { basePrecision, ...rest } = raw as Record<string, unknown>;
  if (basePrecision !== undefined && !BASE_PRECISIONS.includes(basePrecision as BasePrecision)) {
    throw new RangeError(`Invalid ${source}:\nbasePrecision: expected one of ${BASE_PRECISIONS.join(", ")}, got ${JSON.stringify(basePrecision)}`);
  }
  let cfg: RunConfig;
  try {
    cfg = parseRunConfig(raw, source);
  } catch (e) {
    if (basePrecision === undefined) throw e;
    cfg = parseRunConfig(rest, source);
  }
  return basePrecision === undefined ? cfg : { ...cfg, basePrecision: basePrecision as BasePrecision };
}
