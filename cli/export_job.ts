/**
 * `gemma-tuner export-job`: a job bundle for an existing distributed trainer (engine/handoff/bundle.ts),
 * from a run directory or a RunConfig file. Prints one JSON line: {"out","target","launcher","files",
 * "baseModel","strategy","rows","fields","unmapped","warnings"}.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { defineVerb } from "./verb.ts";
import { UsageError } from "./flags.ts";
import { resolveDataDir } from "../config/app.ts";
import { buildBundle, writeBundle } from "../engine/handoff/bundle.ts";
import { type Launcher, LAUNCHERS, parseHandoffConfig, STRATEGIES, type Strategy, type Target, TARGETS } from "../engine/handoff/mapping.ts";

function oneOf<T extends string>(flag: string, v: string, allowed: readonly T[]): T {
  if (!allowed.includes(v as T)) throw new UsageError(`export-job: --${flag} must be one of ${allowed.join(", ")}, got "${v}"`);
  return v as T;
}

/** run.json's config (either shape trainer/run_dir.ts reads), or a config file. */
export function readJobConfig(file: string, isRunDir: boolean) {
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e) {
    if ((e as { code?: string }).code === "ENOENT") {
      throw new RangeError(isRunDir ? `"${path.dirname(file)}" is not a run directory: run.json is missing` : `Config file "${file}" does not exist`);
    }
    throw new SyntaxError(`Cannot read "${file}": ${(e as Error).message}`);
  }
  if (isRunDir && raw.config && typeof raw.config === "object") return parseHandoffConfig(raw.config, file);
  if (isRunDir) {
    const { id: _i, runId: _r, createdAt: _c, modelInfo: _m, datasetInfo: _d, modelDir: _md, imported: _im, ...cfg } = raw;
    return parseHandoffConfig(cfg, file);
  }
  return parseHandoffConfig(raw, file);
}

export const exportJobVerb = defineVerb({
  name: "export-job",
  usage: "gemma-tuner export-job (--run DIR | --config FILE) --target axolotl|trl [--launcher slurm|skypilot|local] [--gpus N] [--nodes N] [--time HH:MM:SS] --out DIR",
  flags: {
    run: { kind: "string", help: "run directory whose config to hand off", metavar: "DIR" },
    config: { kind: "string", help: "a RunConfig JSON file", metavar: "FILE" },
    target: { kind: "string", help: "axolotl or trl", metavar: "TARGET" },
    launcher: { kind: "string", help: "slurm (default), skypilot or local", default: "slurm", metavar: "KIND" },
    gpus: { kind: "number", help: "GPUs per node", default: 1 },
    nodes: { kind: "number", help: "nodes", default: 1 },
    time: { kind: "string", help: "Slurm time limit (HH:MM:SS or D-HH:MM:SS)", default: "24:00:00" },
    strategy: { kind: "string", help: "multi-GPU: none, zero2, zero3 or fsdp (default: none on 1 GPU, else zero2 for LoRA, zero3 for full)", metavar: "S" },
    "base-model": { kind: "string", help: "the base model as the cluster names it (a Hub id); default: derived from the model folder", metavar: "ORG/NAME" },
    accelerator: { kind: "string", help: "SkyPilot accelerator type", default: "A100" },
    out: { kind: "string", help: "output directory (new or empty)", metavar: "DIR" },
    data: { kind: "string", help: "data directory (for the demo model and the sample dataset)", metavar: "DIR" },
  },
  required: ["target", "out"],
  exactlyOne: [["run", "config"]],
  async run(f) {
    const target = oneOf<Target>("target", f.target, TARGETS);
    const launcher = oneOf<Launcher>("launcher", f.launcher, LAUNCHERS);
    const strategy = f.strategy ? oneOf<Strategy>("strategy", f.strategy, STRATEGIES) : undefined;
    const runDir = f.run ? path.resolve(f.run) : undefined;
    const cfg = runDir ? readJobConfig(path.join(runDir, "run.json"), true) : readJobConfig(path.resolve(f.config!), false);
    // A run lives in <data>/runs/<id>, so its data dir (where the demo model is) is two levels up.
    const dataDir = f.data ? resolveDataDir(f.data) : runDir ? path.dirname(path.dirname(runDir)) : resolveDataDir();
    const bundle = await buildBundle(cfg, dataDir, {
      target,
      launcher,
      gpus: f.gpus,
      nodes: f.nodes,
      time: f.time,
      strategy,
      baseModel: f["base-model"],
      accelerator: f.accelerator,
    });
    const out = path.resolve(f.out);
    const files = writeBundle(bundle, out);
    console.log(JSON.stringify({
      out,
      target,
      launcher,
      files,
      baseModel: bundle.baseModel,
      strategy: bundle.strategy,
      rows: bundle.rows,
      fields: bundle.mapped.fields,
      unmapped: bundle.mapped.unmapped,
      warnings: bundle.warnings,
    }));
    return 0;
  },
});
