/**
 * `gemma-tuner train`: `--config FILE.json` creates a run under <data>/runs/ and trains it;
 * `--run DIR` starts or resumes the run in DIR (trainer/worker.ts). Prints one JSON line (TrainResult).
 */
import * as fs from "node:fs";
import { dirname, resolve } from "node:path";
import { DEVICE_FLAGS, UsageError } from "./flags.ts";
import { defineVerb } from "./verb.ts";
import { resolveDataDir } from "../config/app.ts";
import { parseRunConfig, type RunConfig } from "../config/training.ts";
import { createRun } from "../trainer/run_dir.ts";
import { runWorker } from "../trainer/worker.ts";

/** A config file as a RunConfig, or a UsageError naming the file and what is wrong in it. */
function readConfigFile(file: string): RunConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(Deno.readTextFileSync(file));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new UsageError(`train: config file "${file}" does not exist`);
    throw new UsageError(`train: cannot read "${file}": ${(e as Error).message}`);
  }
  try {
    return parseRunConfig(raw, `"${file}"`);
  } catch (e) {
    throw new UsageError(`train: ${(e as Error).message}`);
  }
}

export const trainVerb = defineVerb({
  name: "train",
  usage: "gemma-tuner train (--config FILE.json [--data DIR] | --run RUN_DIR) [--no-save-on-abort]",
  flags: {
    config: { kind: "string", help: "RunConfig JSON file: create a new run under <data>/runs/ and train it", metavar: "FILE.json" },
    run: { kind: "string", help: "run directory: start or resume the run in it", metavar: "RUN_DIR" },
    data: { kind: "string", help: "data directory (default $GEMMA_TUNER_HOME or the platform data dir)", metavar: "DIR" },
    "no-save-on-abort": { kind: "boolean", help: "do not save a checkpoint when stopped by SIGTERM/SIGINT" },
    "ort-providers": DEVICE_FLAGS["ort-providers"],
  },
  exactlyOne: [["config", "run"]],
  async run(f) {
    if (f["ort-providers"]) Deno.env.set("GEMMA_TUNER_ORT_PROVIDERS", f["ort-providers"]);
    let runDir: string, dataDir: string;
    if (f.config) {
      const config = readConfigFile(f.config);
      dataDir = resolveDataDir(f.data);
      runDir = createRun(config, dataDir);
    } else {
      runDir = resolve(f.run!);
      if (!fs.existsSync(runDir)) throw new UsageError(`train: run directory "${runDir}" does not exist`);
      // A run lives in <data>/runs/<id>.
      dataDir = f.data ? resolveDataDir(f.data) : dirname(dirname(runDir));
    }
    const result = await runWorker(runDir, dataDir, { saveOnAbort: !f["no-save-on-abort"] });
    console.log(JSON.stringify(result));
    return result.state === "completed" || result.state === "aborted" ? 0 : 1;
  },
});
