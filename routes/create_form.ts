/**
 * The create form ⇄ RunConfig: presets, form decoding (every field validated by the RunConfig zod
 * schema, messages keyed by form field), and the HF-cache model scan.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { LORA_TARGETS, type RunConfig, RunConfigSchema } from "../config/training.ts";
import { huggingFaceCacheDirs } from "../config/app.ts";
import quickDemo from "../examples/quick-demo.json" with { type: "json" };
import { normalizeConfig } from "../engine/mod.ts";

export type FormValues = Record<string, string | string[]>;

type PresetValues = Omit<Partial<RunConfig>, "lora" | "dataset"> & { lora?: Partial<RunConfig["lora"]>; dataset?: Partial<RunConfig["dataset"]> };

/**
 * The Quick demo is examples/quick-demo.json (the same RunConfig `train --config` and POST /api/runs
 * take): its training settings, not its name, model or dataset path, which the form keeps.
 */
function fromFile(file: Record<string, unknown>): PresetValues {
  const { name: _n, model: _m, dataset, ...rest } = RunConfigSchema.parse(file);
  return { ...rest, dataset: { validation: dataset.validation } };
}

export const PRESETS: Record<string, { label: string; description: string; method: "lora" | "full"; values: PresetValues }> = {
  "quick-demo": {
    label: "Quick demo",
    description: "80 steps of full fine-tuning of the tiny demo model on the sample: about a minute on a quiet 2-core machine; afterwards it answers the sample's questions.",
    method: quickDemo.method as "full" | "lora",
    values: fromFile(quickDemo),
  },
  "quick-lora": {
    label: "Quick (LoRA)",
    description: "A short LoRA run (150 steps, rank 8): a first look at whether your data teaches the model anything.",
    method: "lora",
    values: { maxSteps: 150, batchSize: 8, learningRate: 0.01, warmupSteps: 5, maxLength: 128, evalEvery: 50, saveEvery: 50, lora: { r: 8, alpha: 16, dropout: 0 } },
  },
  "balanced-lora": {
    label: "Balanced (LoRA)",
    description: "LoRA for 2 epochs at rank 16, sequences up to 512 tokens: a sound default for a real model and dataset.",
    method: "lora",
    values: { epochs: 2, batchSize: 8, learningRate: 2e-4, warmupSteps: 20, maxLength: 512, evalEvery: 100, saveEvery: 100, lora: { r: 16, alpha: 32, dropout: 0.05 } },
  },
  "thorough-lora": {
    label: "Thorough (LoRA)",
    description: "LoRA for 4 epochs at rank 32 (rsLoRA), sequences up to 1024 tokens: slower, for when the balanced run underfits.",
    method: "lora",
    values: {
      epochs: 4,
      batchSize: 8,
      gradAccum: 2,
      learningRate: 1e-4,
      warmupSteps: 50,
      maxLength: 1024,
      evalEvery: 200,
      saveEvery: 200,
      lora: { r: 32, alpha: 64, dropout: 0.05, rslora: true },
    },
  },
  "balanced-full": {
    label: "Balanced (full)",
    description: "Every weight for 2 epochs at a low learning rate: needs several times the memory of LoRA.",
    method: "full",
    values: { epochs: 2, batchSize: 8, learningRate: 2e-5, warmupSteps: 20, maxLength: 512, evalEvery: 100, saveEvery: 100 },
  },
  "thorough-full": {
    label: "Thorough (full)",
    description: "Every weight for 3 epochs, batch 4 × 4 accumulation, sequences up to 1024 tokens: the most memory and time.",
    method: "full",
    values: { epochs: 3, batchSize: 4, gradAccum: 4, learningRate: 1e-5, warmupSteps: 50, maxLength: 1024, evalEvery: 200, saveEvery: 200 },
  },
};

/** The preset opened when none is chosen. */
export const DEFAULT_PRESET = "quick-demo";

/** The default form values: the Quick demo on the demo model and sample dataset. */
export function presetConfig(name: string): RunConfig {
  const p = PRESETS[name] ?? PRESETS[DEFAULT_PRESET];
  return RunConfigSchema.parse({
    name: "my-model",
    model: "demo",
    method: p.method,
    ...p.values,
    dataset: { path: "sample", ...p.values.dataset },
    lora: { ...p.values.lora },
  });
}

/** Form field name for a RunConfig issue path. */
export function fieldOf(p: (string | number)[]): string {
  const k = p.join(".");
  const map: Record<string, string> = {
    "dataset.path": "dataset_path",
    "dataset.format": "format",
    "dataset.validation": "validation",
    "lora.r": "lora_r",
    "lora.alpha": "lora_alpha",
    "lora.dropout": "lora_dropout",
    "lora.targets": "lora_targets",
  };
  return map[k] ?? (k.startsWith("lora.") ? "lora_targets" : k.startsWith("dataset.") ? "dataset_path" : k || "form");
}

const num = (v: string | string[] | undefined) => {
  const s = Array.isArray(v) ? v[0] : v;
  if (s === undefined || s.trim() === "") return undefined;
  return Number(s);
};
const str = (v: string | string[] | undefined) => (Array.isArray(v) ? v[0] : v)?.trim() ?? "";

interface Issue {
  code: string;
  message: string;
  minimum?: number | bigint;
  maximum?: number | bigint;
  inclusive?: boolean;
  origin?: string;
  expected?: string;
  values?: unknown[];
}

/** A schema issue as a person reads it beside a field: "must be greater than 0", "must be a whole number". */
export function humanIssue(i: Issue): string {
  const n = (v: number | bigint | undefined) => String(v);
  if (i.code === "too_small" && i.origin === "number") return i.inclusive ? `must be ${n(i.minimum)} or more` : `must be greater than ${n(i.minimum)}`;
  if (i.code === "too_big" && i.origin === "number") return i.inclusive ? `must be ${n(i.maximum)} or less` : `must be less than ${n(i.maximum)}`;
  if (i.code === "too_small" && (i.origin === "string" || i.origin === "array")) return Number(i.minimum) <= 1 ? "must not be empty" : `needs at least ${n(i.minimum)}`;
  if (i.code === "too_big" && i.origin === "string") return `must be at most ${n(i.maximum)} characters`;
  if (i.code === "invalid_type" && i.expected === "int") return "must be a whole number";
  if (i.code === "invalid_type" && i.expected === "number") return "must be a number";
  if (i.code === "invalid_value" && i.values?.length) return `must be one of ${i.values.join(", ")}`;
  return i.message;
}

/** Decodes the form into a RunConfig, or field → message. */
export function formToConfig(f: FormValues): { config?: RunConfig; errors: Record<string, string> } {
  const errors: Record<string, string> = {};
  const fields: Record<string, string> = {};
  for (const [k, v] of Object.entries(f)) {
    if (k.startsWith("map_") && str(v)) fields[k.slice(4)] = str(v);
  }
  const targets = f.lora_targets === undefined ? [] : Array.isArray(f.lora_targets) ? f.lora_targets : [f.lora_targets];
  const modelPath = str(f.model_path);
  const untilMode = str(f.until) || "steps";
  const raw: Record<string, unknown> = {
    name: str(f.name) || "my-model",
    model: modelPath || str(f.model) || "demo",
    dataset: {
      path: str(f.dataset_path) || "sample",
      format: str(f.format) || "auto",
      validation: num(f.validation) ?? 0.1,
      skipInvalid: str(f.skip_invalid) === "on",
      ...(Object.keys(fields).length ? { fields } : {}),
    },
    method: str(f.method) || "lora",
    // "Base weights (LoRA)": empty is the default policy; full fine-tuning ignores the (hidden) select.
    basePrecision: (str(f.method) || "lora") === "lora" ? str(f.base_precision) || undefined : undefined,
    optimizer: str(f.optimizer) || undefined,
    lora: {
      r: num(f.lora_r),
      alpha: num(f.lora_alpha),
      dropout: num(f.lora_dropout),
      rslora: str(f.lora_rslora) === "on",
      targets,
    },
    ...(untilMode === "epochs" ? { epochs: num(f.epochs) } : { maxSteps: num(f.maxSteps) }),
    batchSize: num(f.batchSize),
    gradAccum: num(f.gradAccum),
    learningRate: num(f.learningRate),
    schedule: str(f.schedule) || undefined,
    warmupSteps: num(f.warmupSteps),
    maxLength: num(f.maxLength),
    evalEvery: num(f.evalEvery),
    saveEvery: num(f.saveEvery),
    seed: num(f.seed),
    device: str(f.device) || undefined,
  };
  for (const [k, v] of Object.entries(raw)) if (v === undefined) delete raw[k];
  const lora = raw.lora as Record<string, unknown>;
  for (const [k, v] of Object.entries(lora)) if (v === undefined) delete lora[k];
  for (const [k, v] of Object.entries(raw)) {
    if (typeof v === "number" && !Number.isFinite(v)) errors[k] = "must be a number";
  }
  for (const [k, v] of Object.entries(lora)) if (typeof v === "number" && !Number.isFinite(v)) errors[`lora_${k}`] = "must be a number";
  if (untilMode === "epochs" && raw.epochs === undefined) errors.epochs = "set the number of epochs";
  if (untilMode !== "epochs" && raw.maxSteps === undefined) errors.maxSteps = "set the number of steps";
  const r = RunConfigSchema.safeParse(raw);
  if (!r.success) {
    for (const i of r.error.issues) errors[fieldOf(i.path as (string | number)[])] ??= humanIssue(i as unknown as Issue);
  }
  if (r.success && r.data.warmupSteps > (r.data.maxSteps ?? Infinity)) errors.warmupSteps = `warmup (${r.data.warmupSteps}) is longer than the run (${r.data.maxSteps} steps)`;
  if (r.success && r.data.evalEvery > 0 && r.data.dataset.validation === 0) errors.validation = "evaluation needs a validation split (or set eval every to 0)";
  return Object.keys(errors).length || !r.success ? { errors } : { config: r.data, errors };
}

export interface CachedModel {
  label: string;
  dir: string;
}

/** Gemma models in the Hugging Face cache: hub/models--org--name/snapshots/<rev>/config.json. */
export function scanHuggingFaceCache(dirs = huggingFaceCacheDirs()): CachedModel[] {
  const out: CachedModel[] = [];
  for (const hub of dirs) {
    let entries: string[] = [];
    try {
      entries = fs.readdirSync(hub).filter((d) => d.startsWith("models--"));
    } catch {
      continue;
    }
    for (const e of entries) {
      const snaps = path.join(hub, e, "snapshots");
      let revs: string[] = [];
      try {
        revs = fs.readdirSync(snaps);
      } catch {
        continue;
      }
      for (const rev of revs) {
        const dir = path.join(snaps, rev);
        try {
          const cfg = JSON.parse(fs.readFileSync(path.join(dir, "config.json"), "utf8"));
          // Every config the engine accepts (multimodal Gemma 3 / Gemma 4 too); refused ones are not listed.
          normalizeConfig(cfg, path.join(dir, "config.json"));
          out.push({ label: `${e.slice(8).replace("--", "/")} (${rev.slice(0, 7)})`, dir });
        } catch {
          continue;
        }
      }
    }
  }
  return out;
}

export const ALL_TARGETS = LORA_TARGETS;
