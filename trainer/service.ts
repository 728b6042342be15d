/**
 * TrainingService: create, queue, start, abort, resume, cancel and delete runs, and reconcile what
 * the server believes with the files (the run directories and the lock are the truth).
 *
 * Reconcile runs on start and on every poll: a lock held by a live process this server did not start
 * is an orphan run (shown, abortable); a lock or a training status whose pid is dead becomes
 * `failed` with the tail of stderr; when nothing trains, the oldest queued run starts.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { RunConfig } from "../config/training.ts";
import { describeHolder, isPidAlive, isTrainerPid, type LockInfo, lockPath, lockStaleness, readLock, removeStaleLock } from "./lock.ts";
import { appendStatusLog, createRun, isFinalState, readRunJson, readStatus, type RunJson, type RunState, type RunStatus, type StatusPatch, updateStatus } from "./run_dir.ts";
import { type CheckpointInfo, type DamagedCheckpoint, damagedCheckpoints, listCheckpoints } from "./checkpoint.ts";
import { spawnWorker, STDERR_LOG, stopProcess, TensorBoard } from "./process.ts";
import { MetricsReader, RunMetrics } from "./metrics.ts";
import { RunStore } from "./runs.ts";
import { tailLines } from "./logs.ts";

export const RUN_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

export class ServiceError extends Error {
  constructor(readonly status: 400 | 404 | 409 | 413, message: string) {
    super(message);
  }
}

export interface RunView {
  id: string;
  dir: string;
  run: RunJson;
  status: RunStatus;
  /** Held by a live trainer that this server did not start. */
  orphan: boolean;
  queuePosition?: number;
  /** Intact checkpoints, oldest first: the ones offered for resume and chat. */
  checkpoints: CheckpointInfo[];
  /** Checkpoints found damaged (truncated files, or a failed checksum at resume), with what is wrong. */
  damagedCheckpoints: DamagedCheckpoint[];
  hasFinal: boolean;
  trainLoss?: number;
  evalLoss?: number;
}

export interface ServiceOptions {
  /** SIGTERM → SIGKILL grace when aborting. */
  graceMs?: number;
  /** Reconcile interval (ms); 0 = only on demand. */
  intervalMs?: number;
  /** The trainer command for a run directory (default: this program's `train --run DIR`). */
  workerCommand?: (runDir: string) => { cmd: string; args: string[] };
}

/** A lock is held while lock.ts does not find it stale (dead owner on this host, or an old heartbeat). */
function lockHeld(lock: LockInfo): boolean {
  return lockStaleness(lock) === null;
}

/**
 * Every status change the server makes (the queue side of status.json): `patch` is applied only while
 * the run is still in one of `from` (and, given `pid`, still names that process), checked under
 * status.json's lock, so a state the worker wrote meanwhile is never overwritten. Returns the new
 * status, or null when the run had moved on.
 */
function transition(dir: string, from: RunState[], patch: StatusPatch, pid?: number): RunStatus | null {
  return updateStatus(dir, (prev) => prev && from.includes(prev.state) && (pid === undefined || prev.pid === pid) ? patch : null);
}

export class TrainingService {
  // Internal: routes use the methods below (metricsOf, setting, ensureTensorBoard), not these.
  readonly metrics = new MetricsReader();
  readonly store: RunStore;
  readonly tensorboard: TensorBoard;
  private started = new Map<string, number>();
  private aborting = new Set<string>();
  private timer = 0;
  private reconciling = false;
  private lastReconcile = 0;
  private lastSync = 0;
  private stopped = false;

  constructor(readonly dataDir: string, readonly opts: ServiceOptions = {}) {
    try {
      fs.mkdirSync(path.join(dataDir, "runs"), { recursive: true });
      fs.accessSync(path.join(dataDir, "runs"), fs.constants.W_OK);
      this.store = new RunStore(dataDir);
      this.tensorboard = new TensorBoard(path.join(dataDir, "runs"));
    } catch (e) {
      throw new Error(`Cannot use the data directory "${dataDir}": ${(e as Error).message}. It must be writable: choose another with --data DIR or $GEMMA_TUNER_HOME`);
    }
  }

  /** Starts the periodic reconcile (queue + orphan detection). */
  start(): void {
    this.reconcile(0);
    const ms = this.opts.intervalMs ?? 1000;
    if (ms > 0) {
      this.timer = setInterval(() => this.reconcile(0), ms) as unknown as number;
      Deno.unrefTimer(this.timer);
    }
  }

  /** Stops the timer and the managed TensorBoard; trainers keep running (they outlive the server). */
  stop(): Promise<void> {
    clearInterval(this.timer);
    if (this.stopped) return Promise.resolve();
    this.stopped = true;
    this.store.close();
    return this.tensorboard.stop();
  }

  runDir(id: string): string {
    if (!RUN_ID.test(id)) throw new ServiceError(404, `No run "${id}"`);
    const dir = path.join(this.dataDir, "runs", id);
    if (!fs.existsSync(path.join(dir, "run.json"))) throw new ServiceError(404, `No run "${id}"`);
    return dir;
  }

  private ids(): string[] {
    try {
      return fs.readdirSync(path.join(this.dataDir, "runs")).filter((d) => RUN_ID.test(d) && fs.existsSync(path.join(this.dataDir, "runs", d, "run.json")));
    } catch {
      return [];
    }
  }

  /** A new run from a validated RunConfig: queued, and started at once when nothing trains. */
  create(config: RunConfig): { id: string; state: string } {
    const dir = createRun(config, this.dataDir);
    const id = path.basename(dir);
    this.reconcile(0);
    return { id, state: readStatus(dir)?.state ?? "queued" };
  }

  private busy(): string | null {
    const lock = readLock(this.dataDir);
    if (lock && lockHeld(lock)) return lock.runId;
    for (const [id, pid] of this.started) if (isPidAlive(pid)) return id;
    return null;
  }

  private fail(dir: string, status: RunStatus, message: string) {
    const tail = tailLines(path.join(dir, STDERR_LOG), 8).join("\n");
    transition(dir, [status.state], { state: "failed", message, error: tail || status.error || message }, status.pid);
  }

  /**
   * Brings status files in line with reality, then starts the next queued run if nothing trains.
   * Polls call this often: within `minIntervalMs` of the last pass it does nothing, so twenty
   * dashboards polling every second cost one pass, not twenty (they share the 2 cores with training).
   */
  reconcile(minIntervalMs = 250): void {
    if (this.reconciling || Date.now() - this.lastReconcile < minIntervalMs) return;
    this.lastReconcile = Date.now();
    this.reconciling = true;
    try {
      const lock = readLock(this.dataDir);
      const why = lock && lockStaleness(lock);
      if (lock && why) {
        const dir = path.join(this.dataDir, "runs", lock.runId);
        const st = RUN_ID.test(lock.runId) ? readStatus(dir) : null;
        if (st && !isFinalState(st.state)) this.finishDead(lock.runId, dir, st);
        try {
          if (removeStaleLock(this.dataDir, lock) && st) appendStatusLog(dir, `The server cleared a stale training lock (${describeHolder(lock)}): ${why}`);
        } catch (e) {
          console.error(`Cannot clear the stale lock ${lockPath(this.dataDir)}: ${(e as Error).message}`);
        }
      }
      for (const id of this.ids()) {
        const dir = path.join(this.dataDir, "runs", id);
        const st = readStatus(dir);
        if (!st) continue;
        if ((st.state === "training" || st.state === "initializing") && !isTrainerPid(st.pid)) this.finishDead(id, dir, st);
      }
      for (const [id, pid] of this.started) if (!isPidAlive(pid)) this.started.delete(id);
      if (!this.busy()) {
        const next = this.queue()[0];
        if (next) this.launch(next);
      }
      // The SQLite copy is for history pages; refreshing it every few seconds is enough.
      if (Date.now() - this.lastSync > 5000) {
        this.lastSync = Date.now();
        this.syncStore();
      }
    } finally {
      this.reconciling = false;
    }
  }

  private finishDead(id: string, dir: string, st: RunStatus) {
    const lock = readLock(this.dataDir);
    if (!this.aborting.has(id) && lock && lockHeld(lock)) {
      if (lock.runId === id) {
        // The run trains in another process (started from the command line while we spawned ours).
        transition(dir, [st.state], { pid: lock.pid }, st.pid);
        return;
      }
      if (st.state === "initializing") {
        // Another trainer took the lock before ours could: wait for it.
        transition(dir, ["initializing"], { state: "queued", message: `Waiting: run ${lock.runId} holds the training lock` }, st.pid);
        return;
      }
    }
    if (this.aborting.has(id)) {
      transition(dir, [st.state], { state: "aborted", message: "Aborted (the trainer was stopped before it could save)" }, st.pid);
      this.aborting.delete(id);
    } else {
      this.fail(dir, st, "Trainer process ended unexpectedly");
    }
  }

  /** Queued run ids, oldest first. */
  queue(): string[] {
    return this.ids()
      .map((id) => ({ id, st: readStatus(path.join(this.dataDir, "runs", id)) }))
      .filter((r) => r.st?.state === "queued")
      .sort((a, b) => (a.id < b.id ? -1 : 1))
      .map((r) => r.id);
  }

  private launch(id: string) {
    const dir = path.join(this.dataDir, "runs", id);
    const pid = spawnWorker(dir, this.opts.workerCommand?.(dir));
    this.started.set(id, pid);
    // The worker may already have written its own "initializing" line: that one stands.
    transition(dir, ["queued"], { state: "initializing", message: "Starting the trainer process", pid, error: undefined });
  }

  /** One run as the pages show it; `queue` lets `list` read the queue once for all runs. */
  get(id: string, queue: string[] = this.queue()): RunView {
    const dir = this.runDir(id);
    const run = readRunJson(dir);
    const status = readStatus(dir) ?? { state: "queued", message: "", step: 0, totalSteps: 0, epoch: 0, updatedAt: "", pid: 0 } as RunStatus;
    const lock = readLock(this.dataDir);
    const orphan = !!lock && lock.runId === id && lockHeld(lock) && !this.started.has(id) && !isFinalState(status.state);
    return {
      id,
      dir,
      run,
      status,
      orphan,
      queuePosition: status.state === "queued" ? queue.indexOf(id) + 1 : undefined,
      checkpoints: listCheckpoints(dir),
      damagedCheckpoints: damagedCheckpoints(dir),
      hasFinal: fs.existsSync(path.join(dir, "final")),
      trainLoss: this.metrics.last(dir, "train/loss")?.[1],
      evalLoss: this.metrics.last(dir, "eval/loss")?.[1],
    };
  }

  list(): RunView[] {
    const queue = this.queue();
    return this.ids().map((id) => {
      try {
        return this.get(id, queue);
      } catch {
        return null;
      }
    }).filter((r): r is RunView => !!r).sort((a, b) => (a.run.createdAt < b.run.createdAt ? 1 : -1));
  }

  private syncStore() {
    const ids = new Set<string>();
    for (const v of this.list()) {
      ids.add(v.id);
      const c = v.run.config;
      this.store.upsert({
        id: v.id,
        name: c.name,
        state: v.status.state,
        model: c.model,
        method: c.method,
        dataset: c.dataset.path,
        createdAt: v.run.createdAt,
        updatedAt: v.status.updatedAt,
        step: v.status.step,
        totalSteps: v.status.totalSteps,
        trainLoss: v.trainLoss ?? null,
        evalLoss: v.evalLoss ?? null,
        message: v.status.message,
        error: v.status.error ?? null,
      });
    }
    this.store.retain(ids);
  }

  /** SIGTERM, then SIGKILL after the grace period; the worker saves a checkpoint and ends `aborted`. */
  async abort(id: string): Promise<RunStatus> {
    const dir = this.runDir(id);
    const st = readStatus(dir);
    if (!st || isFinalState(st.state)) throw new ServiceError(409, `Run "${id}" is not running (state ${st?.state ?? "unknown"})`);
    if (st.state === "queued") return this.cancel(id);
    const lock = readLock(this.dataDir);
    const pid = lock?.runId === id && lockHeld(lock) ? lock.pid : st.pid;
    this.aborting.add(id);
    // Only ever signal a trainer: a dead run's pid may belong to another program by now.
    if (isTrainerPid(pid)) await stopProcess(pid, this.opts.graceMs ?? 30_000);
    this.reconcile(0);
    return readStatus(dir)!;
  }

  cancel(id: string): RunStatus {
    const dir = this.runDir(id);
    const out = transition(dir, ["queued"], { state: "aborted", message: "Cancelled before it started" });
    if (!out) throw new ServiceError(409, `Only queued runs can be cancelled; "${id}" is ${readStatus(dir)?.state ?? "unknown"}`);
    return out;
  }

  /** Puts an aborted or failed run with a checkpoint back in the queue; the worker resumes from it. */
  resume(id: string): RunStatus {
    const dir = this.runDir(id);
    const st = readStatus(dir);
    if (!st || (st.state !== "aborted" && st.state !== "failed")) {
      throw new ServiceError(409, `Only aborted or failed runs can be resumed; "${id}" is ${st?.state ?? "unknown"}`);
    }
    if (listCheckpoints(dir).length === 0) {
      const damaged = damagedCheckpoints(dir).map((d) => `${path.basename(d.dir)}: ${d.damaged}`);
      if (damaged.length) throw new ServiceError(409, `Run "${id}" has no intact checkpoint to resume from (${damaged.join("; ")}); start it again from the beginning`);
      throw new ServiceError(409, `Run "${id}" has no checkpoint to resume from; start a new run instead`);
    }
    const out = transition(dir, [st.state], { state: "queued", message: "Queued to resume from its latest checkpoint", error: undefined });
    if (!out) throw new ServiceError(409, `Run "${id}" changed state while being resumed; it is ${readStatus(dir)?.state ?? "unknown"}`);
    this.reconcile(0);
    return readStatus(dir) ?? out;
  }

  /**
   * Starts a failed or aborted run that has no checkpoint again from step 0 (the "reset" of the
   * original app); with a checkpoint, resume is the way.
   */
  restart(id: string): RunStatus {
    const dir = this.runDir(id);
    const st = readStatus(dir);
    if (!st || (st.state !== "aborted" && st.state !== "failed")) {
      throw new ServiceError(409, `Only aborted or failed runs can be restarted; "${id}" is ${st?.state ?? "unknown"}`);
    }
    if (listCheckpoints(dir).length > 0) throw new ServiceError(409, `Run "${id}" has a checkpoint; resume it instead of restarting`);
    const out = transition(dir, [st.state], { state: "queued", step: 0, message: "Queued to start again from the beginning", error: undefined });
    if (!out) throw new ServiceError(409, `Run "${id}" changed state while being restarted; it is ${readStatus(dir)?.state ?? "unknown"}`);
    this.reconcile(0);
    return readStatus(dir) ?? out;
  }

  /** A run's metrics (TensorBoard events), read incrementally; 404 for an unknown run. */
  metricsOf(id: string): RunMetrics {
    return new RunMetrics(this.metrics, this.runDir(id));
  }

  /** A remembered UI setting (e.g. the last create form), or undefined. */
  setting(key: string): string | undefined {
    return this.store.getSetting(key);
  }

  saveSetting(key: string, value: string): void {
    this.store.setSetting(key, value);
  }

  /** Starts the managed TensorBoard over this data dir's runs, or says why not and the command to run. */
  ensureTensorBoard(): ReturnType<TensorBoard["ensure"]> {
    return this.tensorboard.ensure();
  }

  /** Deletes a finished run's directory (never one that is queued or running). */
  delete(id: string): void {
    const dir = this.runDir(id);
    const st = readStatus(dir);
    if (st && !isFinalState(st.state)) throw new ServiceError(409, `Run "${id}" is ${st.state}; abort it before deleting`);
    fs.rmSync(dir, { recursive: true, force: true });
    this.metrics.forget(dir);
    this.store.remove(id);
  }
}
