/**
 * RunConfig: the one JSON shape that the create form, `POST /api/runs` and `train --config` take.
 * Names follow DESIGN.md; every message names the field so a person can fix the input.
 */
import { z } from "zod";

export const LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] as const;

export const LoraSchema = z.object({
  r: z.number().int().min(1).max(1024).default(8),
  alpha: z.number().positive().max(1e6).default(16),
  dropout: z.number().min(0).max(0.9).default(0.05),
  rslora: z.boolean().default(false),
  targets: z.array(z.enum(LORA_TARGETS)).min(1, "choose at least one target module").default([...LORA_TARGETS]),
}).strict();

export const DatasetSchema = z.object({
  /** "sample" = the built-in sample dataset; otherwise a path to a JSONL/JSON/CSV/Parquet file. */
  path: z.string().min(1, "dataset path is empty").max(4096),
  format: z.enum(["auto", "messages", "prompt_completion", "alpaca", "text"]).default("auto"),
  /** Fraction of rows held out for eval (0 = none). */
  validation: z.number().min(0).max(0.5).default(0.1),
  /** Optional separate validation file; overrides the fraction. */
  validationPath: z.string().min(1).max(4096).optional(),
  /** Explicit field mapping: our field name → the column in the file. */
  fields: z.record(z.string().max(200), z.string().max(200)).optional(),
  packing: z.boolean().default(false),
  /** Train on the usable rows when some cannot be read or converted (their count is reported); off: refuse the dataset. */
  skipInvalid: z.boolean().default(false),
}).strict();

export const RunConfigSchema = z.object({
  name: z.string().trim().min(1, "name is empty").max(100).default("run"),
  model: z.string().min(1, "model is empty").max(4096).default("demo"),
  dataset: DatasetSchema,
  method: z.enum(["lora", "full"]).default("lora"),
  /** The frozen base's precision for LoRA (docs/QUANT.md); absent: the default policy for the model's size. */
  basePrecision: z.enum(["fp32", "bf16", "int8", "int4"]).optional(),
  lora: LoraSchema.default(LoraSchema.parse({})),
  maxSteps: z.number().int().min(1).max(10_000_000).optional(),
  epochs: z.number().positive().max(1000).optional(),
  batchSize: z.number().int().min(1).max(1024).default(4),
  gradAccum: z.number().int().min(1).max(1024).default(1),
  learningRate: z.number().positive().max(1).default(2e-4),
  schedule: z.enum(["cosine", "linear", "constant"]).default("cosine"),
  warmupSteps: z.number().int().min(0).max(1_000_000).default(10),
  /**
   * AdamW with float32 moments (torch.optim.AdamW), or with blockwise 8-bit moments (bitsandbytes'
   * scheme, docs/OPTIMIZER.md): 6 bytes less per trainable parameter, for full fine-tuning of larger models.
   */
  optimizer: z.enum(["adamw", "adamw-8bit"]).default("adamw"),
  weightDecay: z.number().min(0).max(10).default(0),
  adamBeta1: z.number().min(0).max(0.9999).default(0.9),
  adamBeta2: z.number().min(0).max(0.999999).default(0.999),
  adamEps: z.number().positive().max(1).default(1e-8),
  maxGradNorm: z.number().min(0).max(1e6).default(1.0),
  maxLength: z.number().int().min(8).max(131072).default(512),
  evalEvery: z.number().int().min(0).max(10_000_000).default(50),
  saveEvery: z.number().int().min(0).max(10_000_000).default(50),
  keepCheckpoints: z.number().int().min(1).max(1000).default(3),
  seed: z.number().int().min(0).max(2 ** 31 - 1).default(42),
  device: z.enum(["cpu", "webgpu", "cuda"]).default("cpu"),
  threads: z.number().int().min(1).max(256).optional(),
}).strict().superRefine((c, ctx) => {
  if (c.method === "full" && c.basePrecision && c.basePrecision !== "fp32") {
    ctx.addIssue({
      code: "custom",
      path: ["basePrecision"],
      message: `a ${c.basePrecision} base works with LoRA only; full fine-tuning trains every weight in fp32 (choose method lora, or basePrecision fp32)`,
    });
  }
  if (c.maxSteps === undefined && c.epochs === undefined) {
    ctx.addIssue({ code: "custom", path: ["maxSteps"], message: "set maxSteps or epochs" });
  }
});

export type RunConfig = z.infer<typeof RunConfigSchema>;
export type LoraConfig = z.infer<typeof LoraSchema>;

/** One line per problem, each naming the field: `dataset.path: dataset path is empty`. */
export function formatIssues(error: z.ZodError): string {
  return error.issues.map((i) => `${i.path.length ? i.path.join(".") : "(root)"}: ${i.message}`).join("\n");
}

/** Validates unknown input (a parsed JSON body or file) into a RunConfig, or throws a RangeError naming each field. */
export function parseRunConfig(input: unknown, source = "run config"): RunConfig {
  const r = RunConfigSchema.safeParse(input);
  if (!r.success) throw new RangeError(`Invalid ${source}:\n${formatIssues(r.error)}`);
  return r.data;
}
