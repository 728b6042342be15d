/**
 * The run directory, the protocol between the server and the worker (DESIGN.md "The run directory";
 * docs/CONTRACTS.md): its file names, the typed contents of run.json and status.json, reads, and
 * atomic writes. Both sides import this module and nothing of each other.
 *
 * status.json has one writer, `updateStatus`: it is replaced atomically (temp file + rename) so a reader
 * never sees half a file, under a lock so two writers cannot lose each other's fields; status.log gets
 * one human line whenever the state or the message changes.
 */
import * as fs from "node:fs";
import { join, resolve } from "node:path";
import { z } from "zod";
import { parseRunConfig, type RunConfig } from "../config/training.ts";

/** The names inside <data>/runs/<id>/. */
export const RUN_FILES = {
  run: "run.json",
  status: "status.json",
  statusLog: "status.log",
  checkpoints: "checkpoints",
  final: "final",
  stdout: "trainer_stdout.log",
  stderr: "trainer_stderr.log",
} as const;

export function runFile(runDir: string, name: keyof typeof RUN_FILES): string {
  return join(runDir, RUN_FILES[name]);
}

export const RUN_STATES = ["queued", "initializing", "training", "completed", "failed", "aborted"] as const;
export type RunState = typeof RUN_STATES[number];

export interface RunStatus {
  state: RunState;
  message: string;
  step: number;
  totalSteps: number;
  epoch: number;
  /** ISO 8601 time of the write. */
  updatedAt: string;
  pid: number;
  error?: string;
}

/** What the worker learns about the model (run.json `modelInfo`, read by the KPI panel). */
export const ModelInfoSchema = z.object({
  architecture: z.string(),
  modelType: z.string(),
  generation: z.number(),
  layers: z.number(),
  hiddenSize: z.number(),
  vocabSize: z.number(),
  dtype: z.string(),
  parameters: z.number(),
  trainableParameters: z.number(),
  memoryEstimateMb: z.number(),
  sizeBytes: z.number(),
}).partial().passthrough();
export type ModelInfo = z.infer<typeof ModelInfoSchema>;

/** What the worker learns about the dataset (run.json `datasetInfo`). */
export interface DatasetInfo {
  format: string;
  chosenBecause: string;
  train: number;
  validation: number;
  invalid: number;
  invalidRows: unknown[];
  truncated: number;
  trainTokens: number;
}

/** run.json: the validated config plus what the worker learns about the model. */
export interface RunJson {
  id: string;
  createdAt: string;
  config: RunConfig;
  modelInfo?: ModelInfo;
  datasetInfo?: DatasetInfo;
}

/** True for the states a run does not leave on its own. */
export function isFinalState(state: RunState): boolean {
  return state === "completed" || state === "failed" || state === "aborted";
}

/** Writes `text` to `path` through a temp file in the same directory and a rename. */
export function writeFileAtomic(path: string, text: string | Uint8Array): void {
  const tmp = `${path}.tmp-${Deno.pid}-${Math.random().toString(36).slice(2, 8)}`;
  if (typeof text === "string") Deno.writeTextFileSync(tmp, text);
  else Deno.writeFileSync(tmp, text);
  Deno.renameSync(tmp, path);
}

/** modelInfo as written, or undefined when absent or not of the expected shape (never fatal: it is display only). */
function modelInfoOf(raw: unknown): ModelInfo | undefined {
  const r = ModelInfoSchema.safeParse(raw);
  return r.success ? r.data : undefined;
}

/**
 * Reads run.json in either shape: {"config": RunConfig, …} (what `createRun` writes) or a bare
 * RunConfig with extra info keys beside it.
 */
export function readRunJson(runDir: string): RunJson {
  const file = runFile(runDir, "run");
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(Deno.readTextFileSync(file));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new RangeError(`Cannot start the run in "${runDir}": run.json is missing (create runs with "train --config FILE.json" or the web UI)`);
    }
    throw new SyntaxError(`Cannot read "${file}": ${(e as Error).message}`);
  }
  const id = String(raw.id ?? raw.runId ?? runDir.split(/[\\/]/).filter(Boolean).at(-1));
  if (raw.config && typeof raw.config === "object") {
    return { ...raw, id, createdAt: String(raw.createdAt ?? ""), config: parseRunConfig(raw.config, file), modelInfo: modelInfoOf(raw.modelInfo) } as RunJson;
  }
  const { id: _i, runId: _r, createdAt, modelInfo, datasetInfo: _d, modelDir: _m, ...cfg } = raw;
  return { id, createdAt: String(createdAt ?? ""), config: parseRunConfig(cfg, file), modelInfo: modelInfoOf(modelInfo) };
}

/** Merges `patch` into run.json (the worker's one write after createRun). */
export function updateRunJson(runDir: string, patch: { modelDir?: string; modelInfo?: ModelInfo; datasetInfo?: DatasetInfo }): void {
  const file = runFile(runDir, "run");
  const raw = JSON.parse(Deno.readTextFileSync(file));
  writeFileAtomic(file, JSON.stringify({ ...raw, ...patch }, null, 2) + "\n");
}

function slug(s: string): string {
  return s.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 40) || "run";
}

/** `<name>-<yyyymmdd-hhmmss>-<4 hex>`: sorts by time, unique enough for one data dir. */
export function newRunId(name: string, now = new Date()): string {
  const t = now.toISOString().replace(/[-:]/g, "").replace("T", "-").slice(0, 15);
  const rand = Math.floor(Math.random() * 0x10000).toString(16).padStart(4, "0");
  return `${slug(name)}-${t}-${rand}`;
}

/** Creates <data>/runs/<runId>/ with run.json for a config; returns the run directory. */
export function createRun(config: RunConfig, dataDir: string): string {
  const cfg: RunConfig = structuredClone(config);
  // Paths are fixed now, so `train --run` works from any working directory later.
  if (cfg.model !== "demo") cfg.model = resolve(cfg.model);
  if (cfg.dataset.path !== "sample") cfg.dataset.path = resolve(cfg.dataset.path);
  if (cfg.dataset.validationPath) cfg.dataset.validationPath = resolve(cfg.dataset.validationPath);
  const id = newRunId(cfg.name);
  const runDir = join(dataDir, "runs", id);
  fs.mkdirSync(runDir, { recursive: true });
  const run: RunJson = { id, createdAt: new Date().toISOString(), config: cfg };
  writeFileAtomic(runFile(runDir, "run"), JSON.stringify(run, null, 2) + "\n");
  writeStatus(runDir, { state: "queued", message: "Created", step: 0, totalSteps: cfg.maxSteps ?? 0, epoch: 0, pid: Deno.pid });
  return runDir;
}

/** The run's status, or null when it has none yet or the file cannot be parsed. */
export function readStatus(runDir: string): RunStatus | null {
  let text: string;
  try {
    text = Deno.readTextFileSync(runFile(runDir, "status"));
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
  try {
    const s = JSON.parse(text);
    if (!s || typeof s !== "object" || !RUN_STATES.includes(s.state)) return null;
    return s as RunStatus;
  } catch {
    return null;
  }
}

/** Appends one line `<ISO time> [state] message` to status.log. */
export function appendStatusLog(runDir: string, line: string, state?: RunState): void {
  Deno.writeTextFileSync(runFile(runDir, "statusLog"), statusLogLine(line, state), { append: true });
}

function statusLogLine(line: string, state?: RunState): string {
  return `${new Date().toISOString()}${state ? ` [${state}]` : ""} ${line}\n`;
}

/** The fields a status change sets, merged into what is on disk; `error: undefined` clears the error. */
export type StatusPatch = Partial<Omit<RunStatus, "updatedAt">> & { updatedAt?: string };

const REQUIRED_STATUS_FIELDS = ["state", "message", "step", "totalSteps", "epoch", "pid"] as const;

/**
 * The one writer of status.json. Under an exclusive lock on status.log (the worker and the server may
 * write at once), it reads the status on disk, asks `change` what to set given it (null: leave the file
 * as it is), merges the patch, writes the result atomically and, when the state, message or error
 * changed, appends one line to status.log. A transition that only holds from some states (the server's
 * queue-side ones: queued → initializing, training → failed, …) checks `prev` in `change`, so it cannot
 * undo what the other side wrote between a read and this write. Returns the status written, or null
 * when `change` declined.
 */
export function updateStatus(runDir: string, change: (prev: RunStatus | null) => StatusPatch | null): RunStatus | null {
  using log = Deno.openSync(runFile(runDir, "statusLog"), { append: true, create: true });
  log.lockSync(true);
  const prev = readStatus(runDir);
  const patch = change(prev);
  if (!patch) return null;
  const next: Record<string, unknown> = { ...prev, ...patch, updatedAt: patch.updatedAt ?? new Date().toISOString() };
  for (const k of Object.keys(next)) if (next[k] === undefined) delete next[k];
  const missing = REQUIRED_STATUS_FIELDS.filter((k) => next[k] === undefined);
  if (missing.length) throw new TypeError(`Cannot write "${runFile(runDir, "status")}": the first status needs ${missing.join(", ")}`);
  const full = next as unknown as RunStatus;
  writeFileAtomic(runFile(runDir, "status"), JSON.stringify(full, null, 2) + "\n");
  if (!prev || prev.state !== full.state || prev.message !== full.message || prev.error !== full.error) {
    log.writeSync(new TextEncoder().encode(statusLogLine(full.error ? `${full.message}: ${full.error}` : full.message, full.state)));
  }
  return full;
}

/** Replaces status.json with `status` (an absent `error` clears it) through `updateStatus`. Returns what was written. */
export function writeStatus(runDir: string, status: Omit<RunStatus, "updatedAt"> & { updatedAt?: string }): RunStatus {
  return updateStatus(runDir, () => ({ error: undefined, ...status }))!;
}
