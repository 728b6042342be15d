/**
 * status.json and status.log in a run directory: the worker's voice to the server. status.json is
 * replaced atomically (temp file + rename) so a reader never sees half a file; status.log gets one
 * human line whenever the state or the message changes.
 */
import { join } from "node:path";

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

/** The run's status, or null when it has none yet or the file cannot be parsed. */
export function readStatus(runDir: string): RunStatus | null {
  let text: string;
  try {
    text = Deno.readTextFileSync(join(runDir, "status.json"));
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
  const stamp = new Date().toISOString();
  Deno.writeTextFileSync(join(runDir, "status.log"), `${stamp}${state ? ` [${state}]` : ""} ${line}\n`, { append: true });
}

/**
 * Writes status.json atomically (updatedAt is filled in) and, when the state, message or error differs
 * from what was there, one line to status.log. Returns what was written.
 */
export function writeStatus(runDir: string, status: Omit<RunStatus, "updatedAt"> & { updatedAt?: string }): RunStatus {
  const prev = readStatus(runDir);
  const full: RunStatus = { ...status, updatedAt: status.updatedAt ?? new Date().toISOString() };
  if (full.error === undefined) delete full.error;
  writeFileAtomic(join(runDir, "status.json"), JSON.stringify(full, null, 2) + "\n");
  if (!prev || prev.state !== full.state || prev.message !== full.message || prev.error !== full.error) {
    appendStatusLog(runDir, full.error ? `${full.message}: ${full.error}` : full.message, full.state);
  }
  return full;
}
