/** Read-only run summaries straight from the run directories (the protocol files). */
import * as fs from "node:fs";
import * as path from "node:path";

export interface RunSummary {
  id: string;
  name: string;
  state: string;
  model: string;
  method: string;
  dataset: string;
  step: number;
  totalSteps: number;
  createdAt: string;
  updatedAt: string;
  trainLoss?: number;
  evalLoss?: number;
}

export const RUN_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

function readJson(file: string): Record<string, unknown> | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, "utf8"));
  } catch {
    return undefined;
  }
}

export function readRunSummary(dataDir: string, id: string): RunSummary | undefined {
  if (!RUN_ID.test(id)) return undefined;
  const dir = path.join(dataDir, "runs", id);
  const run = readJson(path.join(dir, "run.json"));
  if (!run) return undefined;
  const status = readJson(path.join(dir, "status.json")) ?? {};
  const cfg = (run.config ?? run) as Record<string, unknown>;
  const ds = cfg.dataset as { path?: string } | undefined;
  return {
    id,
    name: String(cfg.name ?? id),
    state: String(status.state ?? "unknown"),
    model: String(cfg.model ?? "?"),
    method: String(cfg.method ?? "?"),
    dataset: String(ds?.path ?? "?"),
    step: Number(status.step ?? 0),
    totalSteps: Number(status.totalSteps ?? 0),
    createdAt: String(run.createdAt ?? ""),
    updatedAt: String(status.updatedAt ?? ""),
    trainLoss: typeof status.trainLoss === "number" ? status.trainLoss : undefined,
    evalLoss: typeof status.evalLoss === "number" ? status.evalLoss : undefined,
  };
}

/** Every run, newest first. */
export function listRunSummaries(dataDir: string): RunSummary[] {
  const root = path.join(dataDir, "runs");
  let ids: string[] = [];
  try {
    ids = fs.readdirSync(root).filter((d) => RUN_ID.test(d));
  } catch {
    return [];
  }
  return ids.map((id) => readRunSummary(dataDir, id)).filter((r): r is RunSummary => !!r)
    .sort((a, b) => (a.createdAt < b.createdAt ? 1 : -1));
}
