/**
 * A job bundle: everything a GPU cluster needs to train a run with an existing distributed trainer
 * (Axolotl or TRL) instead of ours — the data rendered exactly as our trainer sees it, the target's
 * config mapped field by field (mapping.ts), a DeepSpeed ZeRO or FSDP setting for several GPUs, a
 * launcher (Slurm sbatch, SkyPilot task, or a local torchrun script), and a README. Nothing here runs
 * Python: the bundle is written for the cluster. `handoff.json` records the source config and the
 * mapping; `import` (engine/handoff/import.ts) reads it back with the trained adapter.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { readConfig, resolveModelPath } from "../model_dir.ts";
import { type BundleRow, jsonl, renderDataset } from "./dataset.ts";
import {
  deepspeedConfig,
  type FieldMapping,
  type HandoffConfig,
  type Launcher,
  mapAxolotl,
  type MapContext,
  type MappedConfig,
  mapTrl,
  slug,
  type Strategy,
  type Target,
} from "./mapping.ts";
import { toYaml, type YamlValue } from "./yaml.ts";
import { TRAIN_TRL_PY } from "./train_trl.ts";

import { HANDOFF_FORMAT, HANDOFF_VERSION } from "./mapping.ts";
export { HANDOFF_FORMAT, HANDOFF_VERSION };

export interface BundleOptions {
  target: Target;
  launcher: Launcher;
  /** GPUs per node (default 1). */
  gpus?: number;
  nodes?: number;
  /** Slurm wall-clock limit, HH:MM:SS or D-HH:MM:SS (default 24:00:00). */
  time?: string;
  /** none | zero2 | zero3 | fsdp; default none on one GPU, zero2 for LoRA and zero3 for full fine-tuning otherwise. */
  strategy?: Strategy;
  /** The base model as the cluster names it (a Hub id or a path there); default: derived from the model folder. */
  baseModel?: string;
  /** SkyPilot accelerator type (default A100). */
  accelerator?: string;
}

export interface BundleFile {
  name: string;
  data: Uint8Array;
}

export interface Bundle {
  files: BundleFile[];
  mapped: MappedConfig;
  /** Things the user must know before running (e.g. the base model is only on this machine). */
  warnings: string[];
  baseModel: string;
  strategy: Strategy;
  rows: { train: number; validation: number };
}

const TIME = /^(\d+-)?\d{1,3}:\d{2}:\d{2}$/;
const ACCEL = /^[A-Za-z0-9][A-Za-z0-9_-]{0,40}$/;
const MODEL_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,95}\/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$/;

/**
 * The base model's name on a cluster: the Hub id of a Hugging Face cache snapshot
 * (`models--org--name/snapshots/<sha>`), else config.json's `_name_or_path` when it is a Hub id, else the path.
 */
export function clusterModelName(model: string, modelDir: string): { name: string; warning?: string } {
  const m = /models--([^/\\]+?)--([^/\\]+)[/\\]snapshots[/\\]/.exec(modelDir);
  if (m) return { name: `${m[1]}/${m[2]}` };
  try {
    const raw = JSON.parse(fs.readFileSync(path.join(modelDir, "config.json"), "utf8"));
    if (typeof raw._name_or_path === "string" && MODEL_ID.test(raw._name_or_path)) return { name: raw._name_or_path };
  } catch { /* the name stays the path */ }
  const what = model === "demo" ? "the built-in demo model (a tiny random-init Gemma 3) exists only in this app" : `"${modelDir}" is a folder on this machine`;
  return {
    name: modelDir,
    warning: `The base model: ${what}. Copy the folder to the cluster and set the base model path in the config, or export again with --base-model ORG/NAME (a Hub model).`,
  };
}

function text(s: string): Uint8Array {
  return new TextEncoder().encode(s);
}

function checkOptions(o: BundleOptions): Required<Omit<BundleOptions, "baseModel" | "strategy">> {
  const gpus = o.gpus ?? 1, nodes = o.nodes ?? 1, time = o.time ?? "24:00:00", accelerator = o.accelerator ?? "A100";
  if (!Number.isInteger(gpus) || gpus < 1 || gpus > 64) throw new RangeError(`GPUs per node must be a whole number from 1 to 64, got ${gpus}`);
  if (!Number.isInteger(nodes) || nodes < 1 || nodes > 1024) throw new RangeError(`Nodes must be a whole number from 1 to 1024, got ${nodes}`);
  if (!TIME.test(time)) throw new RangeError(`Time limit "${time}" is not HH:MM:SS or D-HH:MM:SS (e.g. 24:00:00 or 2-00:00:00)`);
  if (!ACCEL.test(accelerator)) throw new RangeError(`Accelerator "${accelerator}" is not a SkyPilot accelerator name (e.g. A100, H100, L4)`);
  return { target: o.target, launcher: o.launcher, gpus, nodes, time, accelerator };
}

/** Builds the bundle's files in memory (the data files can be large: they are what is trained on). */
export async function buildBundle(cfg: HandoffConfig, dataDir: string, opts: BundleOptions): Promise<Bundle> {
  const o = checkOptions(opts);
  const world = o.gpus * o.nodes;
  const strategy: Strategy = opts.strategy ?? (world === 1 ? "none" : cfg.method === "full" ? "zero3" : "zero2");
  const modelDir = await resolveModelPath(cfg.model, dataDir);
  const generation = readConfig(modelDir).generation;
  const derived = clusterModelName(cfg.model, modelDir);
  const baseModel = opts.baseModel ?? derived.name;
  const warnings: string[] = [];
  if (!opts.baseModel && derived.warning) warnings.push(derived.warning);
  const data = await renderDataset(cfg, dataDir);
  const hasValidation = data.validation.length > 0;
  const dsName = strategy === "zero2" || strategy === "zero3" ? `deepspeed/${strategy}.json` : undefined;
  const ctx: MapContext = {
    baseModel,
    generation,
    hasValidation,
    gpus: o.gpus,
    nodes: o.nodes,
    strategy,
    files: { train: "data/train.jsonl", validation: "data/validation.jsonl", deepspeed: dsName },
  };
  const mapped = o.target === "axolotl" ? mapAxolotl(cfg, ctx) : mapTrl(cfg, ctx);
  if (world > 1) {
    warnings.push(
      `The effective batch is batchSize × gradAccum × GPUs = ${cfg.batchSize} × ${cfg.gradAccum} × ${world} = ${cfg.batchSize * cfg.gradAccum * world} rows a step (here it was ${
        cfg.batchSize * cfg.gradAccum
      }); lower gradAccum to keep it.`,
    );
  }
  if (data.prepared.invalid.length) warnings.push(`${data.prepared.invalid.length} row(s) of the dataset were left out (dataset.skipInvalid), as our trainer leaves them out.`);
  if (o.launcher === "skypilot") {
    mapped.unmapped.push({
      ours: "(launcher) time",
      value: o.time,
      theirs: null,
      note: "SkyPilot tasks have no wall-clock limit; use `sky jobs launch` or autostop (`sky launch -i MINUTES --down`)",
    });
  }

  const configName = o.target === "axolotl" ? "axolotl.yaml" : "trl.yaml";
  const header = [
    `Written by gemma-tuner export-job from run config "${cfg.name}" (target ${o.target}).`,
    "Field-by-field mapping and the fields with no equivalent: README.md and handoff.json.",
  ];
  const files: BundleFile[] = [
    { name: configName, data: text(toYaml(mapped.config as Record<string, YamlValue>, header)) },
    { name: "data/train.jsonl", data: text(jsonl(data.train)) },
  ];
  if (hasValidation) files.push({ name: "data/validation.jsonl", data: text(jsonl(data.validation)) });
  if (o.target === "trl") files.push({ name: "train_trl.py", data: text(TRAIN_TRL_PY) });
  if (dsName) files.push({ name: dsName, data: text(JSON.stringify(deepspeedConfig(strategy === "zero3" ? 3 : 2), null, 2) + "\n") });
  const cmd = o.target === "axolotl" ? ["-m", "axolotl.cli.train", configName] : ["train_trl.py", configName];
  const launcher = launcherFile(o.launcher, cmd, { ...o, name: slug(cfg.name) });
  files.push(launcher);
  files.push({ name: "requirements.txt", data: text(requirements(o.target, cfg, strategy)) });
  const handoff = {
    format: HANDOFF_FORMAT,
    version: HANDOFF_VERSION,
    createdAt: new Date().toISOString(),
    target: o.target,
    launcher: o.launcher,
    gpus: o.gpus,
    nodes: o.nodes,
    time: o.time,
    strategy,
    baseModel,
    generation,
    config: cfg,
    fields: mapped.fields,
    unmapped: mapped.unmapped,
    dataset: {
      format: data.prepared.format,
      train: data.train.length,
      validation: data.validation.length,
      trainTokens: data.prepared.trainTokens,
      truncated: data.prepared.truncated,
      invalid: data.prepared.invalid.length,
    },
    warnings,
  };
  files.push({ name: "handoff.json", data: text(JSON.stringify(handoff, null, 2) + "\n") });
  files.push({
    name: "README.md",
    data: text(
      readme(cfg, {
        ...o,
        strategy,
        configName,
        launcher: launcher.name,
        mapped,
        warnings,
        baseModel,
        rows: { train: data.train.length, validation: data.validation.length },
        files: files.map((f) => f.name),
      }),
    ),
  });
  return { files, mapped, warnings, baseModel, strategy, rows: { train: data.train.length, validation: data.validation.length } };
}

/** Writes the bundle into `out` (new or empty); returns the file names. */
export function writeBundle(bundle: Bundle, out: string): string[] {
  if (fs.existsSync(out) && fs.readdirSync(out).length) throw new RangeError(`Output directory "${out}" is not empty; choose another --out`);
  for (const f of bundle.files) {
    const p = path.join(out, f.name);
    fs.mkdirSync(path.dirname(p), { recursive: true });
    fs.writeFileSync(p, f.data);
    if (f.name.endsWith(".sh") || f.name.endsWith(".sbatch")) fs.chmodSync(p, 0o755);
  }
  return bundle.files.map((f) => f.name);
}

interface LaunchOptions {
  gpus: number;
  nodes: number;
  time: string;
  accelerator: string;
  name: string;
}

function launcherFile(kind: Launcher, cmd: string[], o: LaunchOptions): BundleFile {
  const args = cmd.join(" ");
  if (kind === "slurm") {
    return {
      name: "job.sbatch",
      data: text(`#!/bin/bash
# Slurm job written by gemma-tuner export-job. Submit from this folder: sbatch job.sbatch
# Nodes, GPUs and time below are parameters: override any at submit time, e.g.
#   sbatch --nodes=4 --gres=gpu:8 --time=2-00:00:00 job.sbatch
#SBATCH --job-name=${o.name}
#SBATCH --nodes=${o.nodes}
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:${o.gpus}
#SBATCH --cpus-per-task=${Math.min(64, 8 * o.gpus)}
#SBATCH --time=${o.time}
#SBATCH --output=%x-%j.out
set -euo pipefail
cd "\${SLURM_SUBMIT_DIR:-.}"
if [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi
GPUS_PER_NODE="\${SLURM_GPUS_ON_NODE:-${o.gpus}}"
MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
MASTER_PORT="\${MASTER_PORT:-29500}"
srun --kill-on-bad-exit=1 torchrun \\
  --nnodes "$SLURM_NNODES" --nproc_per_node "$GPUS_PER_NODE" \\
  --rdzv_id "$SLURM_JOB_ID" --rdzv_backend c10d --rdzv_endpoint "$MASTER_ADDR:$MASTER_PORT" \\
  ${args}
`),
    };
  }
  if (kind === "skypilot") {
    const task: Record<string, YamlValue> = {
      name: o.name,
      resources: { accelerators: `${o.accelerator}:${o.gpus}` },
      num_nodes: o.nodes,
      workdir: ".",
      setup: "pip install -r requirements.txt\n",
      run: [
        "set -e",
        'MASTER_ADDR=$(echo "$SKYPILOT_NODE_IPS" | head -n 1)',
        'torchrun --nnodes "$SKYPILOT_NUM_NODES" --node_rank "$SKYPILOT_NODE_RANK" --nproc_per_node "$SKYPILOT_NUM_GPUS_PER_NODE" \\',
        `  --master_addr "$MASTER_ADDR" --master_port 29500 ${args}`,
      ].join("\n") + "\n",
    };
    return {
      name: "sky.yaml",
      data: text(
        toYaml(task, [
          "SkyPilot task written by gemma-tuner export-job. Launch from this folder: sky launch -c " + o.name + " sky.yaml",
          "Override GPUs and nodes at launch: sky launch --gpus " + o.accelerator + ":8 --num-nodes 2 sky.yaml",
        ]),
      ),
    };
  }
  return {
    name: "run_local.sh",
    data: text(`#!/bin/bash
# One machine, every GPU it has (or GPUS=N ./run_local.sh). Written by gemma-tuner export-job.
set -euo pipefail
cd "$(dirname "$0")"
if [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi
GPUS="\${GPUS:-${o.gpus}}"
torchrun --standalone --nproc_per_node "$GPUS" ${args}
`),
  };
}

function requirements(target: Target, cfg: HandoffConfig, strategy: Strategy): string {
  const lines = target === "axolotl"
    ? ["axolotl>=0.8", "tensorboard"]
    : ["torch>=2.4", "transformers>=4.53", "trl>=0.20", "peft>=0.15", "datasets>=3.0", "accelerate>=1.0", "pyyaml", "tensorboard"];
  if (strategy === "zero2" || strategy === "zero3") lines.push("deepspeed>=0.15");
  const quantBase = cfg.method === "lora" && (cfg.basePrecision === "int4" || cfg.basePrecision === "int8");
  if (quantBase || cfg.optimizer === "adamw-8bit") lines.push("bitsandbytes>=0.45");
  return lines.join("\n") + "\n";
}

function cell(v: unknown): string {
  if (v === undefined) return "";
  const s = typeof v === "string" ? v : JSON.stringify(v);
  return s.replaceAll("|", "\\|").replaceAll("\n", " ");
}

interface ReadmeInfo {
  target: Target;
  launcher: string;
  gpus: number;
  nodes: number;
  time: string;
  accelerator: string;
  strategy: Strategy;
  configName: string;
  mapped: MappedConfig;
  warnings: string[];
  baseModel: string;
  rows: { train: number; validation: number };
  files: string[];
}

const FILE_ROLE: [RegExp, string][] = [
  [/^axolotl\.yaml$/, "Axolotl's config, mapped field by field from the run config (table below)."],
  [/^trl\.yaml$/, "The config train_trl.py reads: `model` (from_pretrained), `peft` (peft.LoraConfig), `sft` (trl.SFTConfig), `data`."],
  [/^train_trl\.py$/, "Trains with TRL's SFTTrainer on the pre-tokenised rows (our labels are used as they are)."],
  [
    /^data\/train\.jsonl$/,
    "Training rows, pre-tokenised with the model's tokenizer and our chat template: input_ids, attention_mask, labels (−100 = not trained), completion_mask.",
  ],
  [/^data\/validation\.jsonl$/, "Validation rows: the same seeded split our trainer holds out."],
  [/^deepspeed\//, 'DeepSpeed ZeRO config for several GPUs (batch sizes, clipping and precision are "auto": taken from the trainer\'s arguments).'],
  [/^job\.sbatch$/, "Slurm batch script: torchrun on every node through srun; nodes, GPUs and time are #SBATCH parameters."],
  [/^sky\.yaml$/, "SkyPilot task: setup installs requirements.txt, run starts torchrun on every node."],
  [/^run_local\.sh$/, "One machine: torchrun over its GPUs."],
  [/^requirements\.txt$/, "Python packages for the cluster (pip install -r requirements.txt)."],
  [/^handoff\.json$/, "Machine-readable record: the source run config, the mapping, the unmapped fields. Keep it with the output for `gemma-tuner import`."],
  [/^README\.md$/, "This file."],
];

function readme(cfg: HandoffConfig, i: ReadmeInfo): string {
  const out = `outputs/${slug(cfg.name)}`;
  const run = i.launcher === "job.sbatch"
    ? ["sbatch job.sbatch", `# more or fewer resources: sbatch --nodes=${i.nodes} --gres=gpu:${i.gpus} --time=${i.time} job.sbatch`]
    : i.launcher === "sky.yaml"
    ? [`sky launch -c ${slug(cfg.name)} sky.yaml`, `sky rsync-down ${slug(cfg.name)} ~/sky_workdir/${out} ./${out}`]
    : ["./run_local.sh", "# or: GPUS=2 ./run_local.sh"];
  const lines = [
    `# Job bundle: ${cfg.name} (${i.target})`,
    "",
    `Written by gemma-tuner \`export-job\`. Base model: \`${i.baseModel}\`; method: ${cfg.method}; ${i.rows.train} training rows` +
    (i.rows.validation ? `, ${i.rows.validation} validation rows` : "") + `; ${i.nodes} node(s) × ${i.gpus} GPU(s); multi-GPU: ${i.strategy}.`,
    "",
    ...(i.warnings.length ? ["## Before you start", "", ...i.warnings.map((w) => `- ${w}`), ""] : []),
    "## Run it",
    "",
    "```sh",
    "python -m venv .venv && . .venv/bin/activate",
    "pip install -r requirements.txt",
    ...run,
    "```",
    "",
    `The trained ${
      cfg.method === "lora" ? "adapter (adapter_config.json + adapter_model.safetensors)" : "model"
    } lands in \`${out}/\`, with TensorBoard events under \`${out}/runs/\`.`,
    "",
    "## Bring it back",
    "",
    "Copy the output folder (or a zip of it) back, keep `handoff.json` beside it, then either",
    "",
    "```sh",
    `gemma-tuner import --adapter ${out}`,
    "```",
    "",
    "or use **Import** on the Runs page of the app. The run appears in the history and the playground, and exports like a local run.",
    "",
    "## Files",
    "",
    "| file | what it is |",
    "|---|---|",
    ...i.files.concat("README.md").filter((f, k, a) => a.indexOf(f) === k).map((f) => `| \`${f}\` | ${FILE_ROLE.find(([re]) => re.test(f))?.[1] ?? ""} |`),
    "",
    "## How the run config was mapped",
    "",
    `| ours | value | ${i.target} | as | note |`,
    "|---|---|---|---|---|",
    ...i.mapped.fields.map((f: FieldMapping) => `| \`${f.ours}\` | ${cell(f.value)} | ${f.theirs ? `\`${f.theirs}\`` : ""} | ${cell(f.to)} | ${cell(f.note)} |`),
    "",
    "## Fields with no equivalent",
    "",
    ...(i.mapped.unmapped.length ? i.mapped.unmapped.map((f) => `- \`${f.ours}\` = ${cell(f.value)}: ${f.note}`) : ["(none)"]),
    "",
    "## What is the same, and what is not",
    "",
    "- Same: the token ids and the label mask (assistant content and its end-of-turn marker are trained, everything else is −100), truncation, packing, the validation split, LoRA shape and scaling, AdamW settings, warmup and schedule, clipping.",
    "- Loss: the mean over trained tokens of a whole optimizer step, as the HF Trainer (transformers ≥ 4.46) also computes it across gradient accumulation.",
    "- Different: the order rows are drawn in (same seed, another shuffle), LoRA dropout masks, and GPU arithmetic (bf16 / TF32) versus our float32.",
    "",
  ];
  return lines.join("\n");
}

export type { BundleRow };
