/** What every route module is built from: the settings, the training service and the playground's models. */
import type { AppSettings } from "../config/app.ts";
import type { TrainingService } from "../trainer/service.ts";
import * as fs from "node:fs";
import * as path from "node:path";
import { ModelCache } from "../engine/mod.ts";
import type { DeviceChoice } from "./devices.tsx";

export interface AppDeps {
  settings: AppSettings;
  service: TrainingService;
  models?: ModelCache;
  /** Which devices work here (the create form's choice); tests inject one. */
  probeDevices?: () => Promise<DeviceChoice[]>;
  /** Free bytes where the HF cache lives (the Hub page's disk check); tests inject a small number. */
  hubFreeBytes?: (dir: string) => number;
}

/** The models of the playground: the demo model and every run's final model and checkpoints. */
export function modelCacheFor(deps: AppDeps): ModelCache {
  return new ModelCache(deps.settings.dataDir, () =>
    deps.service.list().map((v) => ({
      id: v.id,
      dir: v.dir,
      baseModel: v.run.config.model,
      method: v.run.config.method,
      basePrecision: v.run.config.basePrecision,
      checkpoints: v.checkpoints,
      hasFinal: v.hasFinal,
      finalStep: v.hasFinal ? finalStep(v.dir) : undefined,
      name: v.run.config.name,
      trainLoss: v.trainLoss,
      training: v.status.state === "training" || v.status.state === "initializing",
    })));
}

/** The step of the checkpoint a run's final/ was copied from (final/checkpoint.txt), if it says. */
function finalStep(runDir: string): number | undefined {
  try {
    const m = /^checkpoint-(\d+)\s*$/.exec(fs.readFileSync(path.join(runDir, "final", "checkpoint.txt"), "utf8"));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}
