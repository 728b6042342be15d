/**
 * The training loop, run by `gemma-tuner train` (cli/train.ts) in its own process. It talks to the server only through the
 * run directory: status.json/status.log, events.out.tfevents.*, checkpoints/, final/ and run.json
 * (DESIGN.md "The run directory"). `runWorker` starts or resumes the run in a directory from its newest
 * complete checkpoint, in four phases over one explicit `Training` state: prepare (model, data, engine;
 * trainer/prepare.ts, shared with the estimate probe), resume (checkpoint → engine, optimizer,
 * progress), step (one optimizer step, its metrics, evaluations and checkpoints), finish (final/).
 *
 * Determinism on resume: the micro-batch order is a function of (seed, epoch), LoRA dropout of
 * micro-batch k is seeded by (seed, k), the schedule by the step, and the trainable tensors and AdamW
 * state are saved as float32, so a resumed run takes the same steps as one that never stopped.
 */
import * as fs from "node:fs";
import { join } from "node:path";
import type { RunConfig } from "../config/training.ts";
import { collate, type PreparedDataset, type TokenizedExample } from "../engine/data/mod.ts";
import type { LoadedModel } from "../engine/model_dir.ts";
import type { AdamW } from "../engine/optim.ts";
import type { TrainEngine } from "../engine/train_engine.ts";
import type { Device } from "../engine/device.ts";
import { countParams as countModelParams } from "../engine/gemma/params.ts";
import { estimateRunMemory } from "../engine/quant/policy.ts";
import { availableMemoryBytes, HEAP_ENV, heapModeFor, limitHeapRetention } from "../engine/malloc.ts";
import { gpuMemoryMb } from "../engine/gpu_memory.ts";
import {
  cleanPartialCheckpoints,
  latestCheckpoint,
  type LogEntry,
  newestIntactCheckpoint,
  pruneCheckpoints,
  readCheckpoint,
  TRAINER_STATE_FORMAT,
  TRAINER_STATE_VERSION,
  type TrainerState,
  writeCheckpoint,
  writeFinal,
} from "./checkpoint.ts";
import { acquireLock, describeHolder, heartbeatAgeSeconds, LOCK_STALE_MS, lockPath, releaseLock, startHeartbeat } from "./lock.ts";
import { modelCard } from "./model_card.ts";
import { createTrainer, type PreparedRun, prepareRun, trainStep } from "./prepare.ts";
import { appendStatusLog, readRunJson, type RunJson, type RunState, updateRunJson, writeStatus } from "./run_dir.ts";
import { EventWriter } from "./tfevents.ts";

/** The one JSON line `train` ends with. */
export interface TrainResult {
  runId: string;
  runDir: string;
  /** "not_started": another trainer holds the lock (`error` and `lock` say which); nothing was trained. */
  state: RunState | "not_started";
  step: number;
  trainLoss: number | null;
  evalLoss: number | null;
  error?: string;
  lock?: { runId: string; pid: number; hostname: string; heartbeatAgeS: number | null };
}

export interface WorkerOptions {
  saveOnAbort?: boolean;
  /** Print progress lines (default true). */
  log?: (line: string) => void;
}

/** Takes the data dir's lock and trains the run; never throws for a training failure (it is in the result). */
export async function runWorker(runDir: string, dataDir: string, opts: WorkerOptions = {}): Promise<TrainResult> {
  const log = opts.log ?? ((l: string) => console.log(l));
  const run = readRunJson(runDir);
  fs.mkdirSync(dataDir, { recursive: true });
  const lock = acquireLock(dataDir, run.id);
  if (!lock.ok) {
    const msg = `Another training process holds the lock ${lockPath(dataDir)} (${describeHolder(lock.holder)}). ` +
      `It is stale once that process ends or its heartbeat is over ${LOCK_STALE_MS / 1000} s old; wait for it to finish or abort it`;
    console.error(`train: ${msg}`);
    appendStatusLog(runDir, `Not started: ${msg}`);
    const heartbeatAgeS = heartbeatAgeSeconds(lock.holder);
    return {
      runId: run.id,
      runDir,
      state: "not_started",
      step: 0,
      trainLoss: null,
      evalLoss: null,
      error: msg,
      lock: { runId: lock.holder.runId, pid: lock.holder.pid, hostname: lock.holder.hostname, heartbeatAgeS },
    };
  }
  if (lock.replacedStale) {
    const h = lock.replacedStale;
    appendStatusLog(runDir, `Replaced a stale lock (${describeHolder(h)}): ${lock.staleReason}`);
  }
  const heartbeat = startHeartbeat(dataDir, lock.info, (why) => {
    console.error(`train: lost the training lock (${why}); another trainer may start in this data directory`);
    appendStatusLog(runDir, `Lost the training lock: ${why}`);
  });
  try {
    return await train(runDir, dataDir, run, { saveOnAbort: opts.saveOnAbort ?? true, log });
  } finally {
    await heartbeat.stop();
    releaseLock(dataDir);
  }
}

/** Turns an engine error into the line a person reads, with a hint for out-of-memory. */
export function describeFailure(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  if (/out of memory|bad_alloc|failed to allocate|allocation failed|OOM|Cannot allocate memory/i.test(msg)) {
    return `Out of memory: ${msg.split("\n")[0]}. Try a smaller batchSize (with more gradAccum) or a smaller maxLength`;
  }
  return msg.split("\n").slice(0, 3).join(" ").slice(0, 2000);
}

interface Ctx {
  saveOnAbort: boolean;
  log: (line: string) => void;
}

function rssMb(): number {
  return Deno.memoryUsage().rss / 2 ** 20;
}

/** `system/gpu_mem_mb` where the driver reports it (engine/gpu_memory.ts), else nothing. */
function gpuScalar(device: Device): Record<string, number> {
  const mb = gpuMemoryMb(device);
  return mb === null ? {} : { "system/gpu_mem_mb": mb };
}

/** Where the run stands: what status.json, trainer_state.json and the result report. */
interface Progress {
  step: number;
  totalSteps: number;
  epoch: number;
  trainLoss: number | null;
  evalLoss: number | null;
  logHistory: LogEntry[];
  /** The step of the newest checkpoint on disk (−1: none this process knows of). */
  lastSaved: number;
  /** The step of the last evaluation (−1: none). */
  lastEval: number;
}

/** A run being trained: its settings, prepared inputs, engine, event file and progress. */
interface Training {
  runDir: string;
  run: RunJson;
  cfg: RunConfig;
  prep: PreparedRun;
  engine: TrainEngine;
  optimizer: AdamW;
  events: EventWriter;
  progress: Progress;
  ctx: Ctx;
  status: (state: RunState, message: string, error?: string) => void;
}

/** The checkpoint a run continues from. */
interface Resumed {
  dir: string;
  checkpoint: ReturnType<typeof readCheckpoint>;
}

/** Stops the loop after the current step on SIGTERM/SIGINT (SIGBREAK on Windows); `remove` detaches. */
function stopSignals(log: (line: string) => void): { signal: () => string | null; remove: () => void } {
  let stopSignal: string | null = null;
  const listeners: [Deno.Signal, () => void][] = [];
  for (const sig of (Deno.build.os === "windows" ? ["SIGINT", "SIGBREAK"] : ["SIGTERM", "SIGINT"]) as Deno.Signal[]) {
    const h = () => {
      if (!stopSignal) log(`Received ${sig}: stopping after the current step`);
      stopSignal = sig;
    };
    try {
      Deno.addSignalListener(sig, h);
      listeners.push([sig, h]);
    } catch { /* signal not supported here */ }
  }
  return { signal: () => stopSignal, remove: () => listeners.forEach(([sig, h]) => Deno.removeSignalListener(sig, h)) };
}

async function train(runDir: string, dataDir: string, run: RunJson, ctx: Ctx): Promise<TrainResult> {
  const cfg = run.config;
  const signals = stopSignals(ctx.log);
  const progress: Progress = { step: 0, totalSteps: cfg.maxSteps ?? 0, epoch: 0, trainLoss: null, evalLoss: null, logHistory: [], lastSaved: -1, lastEval: -1 };
  const status = (state: RunState, message: string, error?: string) =>
    writeStatus(runDir, { state, message, step: progress.step, totalSteps: progress.totalSteps, epoch: progress.epoch, pid: Deno.pid, ...(error ? { error } : {}) });
  const result = (state: RunState): TrainResult => ({ runId: run.id, runDir, state, step: progress.step, trainLoss: progress.trainLoss, evalLoss: progress.evalLoss });
  let t: Training | null = null;
  try {
    t = await prepare(runDir, dataDir, run, ctx, progress, status);
    while (progress.step < progress.totalSteps) {
      // session.run blocks the thread; a real event-loop turn lets a pending SIGTERM/SIGINT be seen.
      await new Promise((r) => setTimeout(r, 0));
      if (signals.signal()) break;
      await step(t);
    }
    const stopped = signals.signal();
    if (stopped) {
      if (ctx.saveOnAbort && progress.step > 0) {
        status("training", `Saving a checkpoint before stopping (${stopped})`);
        save(t);
      }
      status("aborted", `Stopped by ${stopped} at step ${progress.step}`);
      return result("aborted");
    }
    await finish(t);
    return result("completed");
  } catch (e) {
    const error = describeFailure(e);
    console.error(`train: ${error}`);
    // A stack helps with a bug, not with a bad input file or setting (those messages say what to fix).
    if (e instanceof Error && e.stack && !(e instanceof RangeError || e instanceof SyntaxError)) console.error(e.stack);
    try {
      status("failed", "Training failed", error);
    } catch { /* the run dir itself may be gone */ }
    return result("failed");
  } finally {
    t?.events.close();
    t?.engine.release();
    t?.optimizer.close();
    signals.remove();
  }
}

/**
 * Prepare: the model, tokenizer and dataset (shared with the estimate probe), the checkpoint to resume
 * from, the engine and optimizer, run.json's modelInfo and the event file.
 */
async function prepare(
  runDir: string,
  dataDir: string,
  run: RunJson,
  ctx: Ctx,
  progress: Progress,
  status: Training["status"],
): Promise<Training> {
  const cfg = run.config;
  cleanPartialCheckpoints(runDir);
  const prep = await prepareRun(cfg, dataDir, (phase) => status("initializing", phase));
  reportDataset(prep.data, ctx.log);
  chooseHeap(prep, ctx.log);
  progress.totalSteps = prep.totalSteps;
  const resumed = findResume(runDir, prep, status);
  status("initializing", "Building the training graphs");
  const { engine, optimizer } = await createTrainer(prep, resumed?.checkpoint.trainable);
  try {
    if (resumed) resume(resumed, optimizer, progress, ctx.log);
    writeModelInfo(runDir, prep, engine);
    const events = new EventWriter(runDir);
    if (progress.step > 0) events.restart(progress.step + 1);
    status("training", progress.step > 0 ? `Training (resumed at step ${progress.step})` : "Training");
    return { runDir, run, cfg, prep, engine, optimizer, events, progress, ctx, status };
  } catch (e) {
    engine.release();
    optimizer.close();
    throw e;
  }
}

/**
 * Resume, part 1: the newest intact checkpoint (checksums verified; a damaged one is named in
 * status.log and skipped), read and checked against run.json; for full
 * fine-tuning its weights replace the base model's. Null when the run starts fresh.
 */
function findResume(runDir: string, prep: PreparedRun, status: Training["status"]): Resumed | null {
  const latest = newestIntactCheckpoint(runDir, (note) => appendStatusLog(runDir, note));
  if (!latest) return null;
  status("initializing", `Resuming from ${latest.dir.split(/[\\/]/).at(-1)}`);
  const checkpoint = readCheckpoint(latest.dir);
  const { cfg, model } = prep;
  if (checkpoint.state.method !== cfg.method) {
    throw new RangeError(`Cannot resume "${latest.dir}": it was trained with method ${checkpoint.state.method}, run.json says ${cfg.method}`);
  }
  if (cfg.method === "full") {
    for (const [name, w] of checkpoint.trainable) {
      const base = model.weights.get(name);
      if (base && base.length === w.length) base.set(w);
    }
  }
  return { dir: latest.dir, checkpoint };
}

/** Resume, part 2: the optimizer state and the progress the checkpoint recorded. */
function resume(r: Resumed, optimizer: AdamW, progress: Progress, log: (line: string) => void): void {
  const { state } = r.checkpoint;
  optimizer.loadState(r.checkpoint.optimizer, state.step, join(r.dir, "optimizer.safetensors"));
  Object.assign(progress, {
    step: state.step,
    epoch: state.epoch,
    trainLoss: state.trainLoss,
    evalLoss: state.evalLoss,
    logHistory: state.logHistory ?? [],
    lastSaved: state.step,
  });
  log(`Resumed from step ${progress.step} (${r.dir})`);
}

/** Step: one optimizer step over the batch plan, its scalars and log line, and the evaluations and checkpoints due. */
async function step(t: Training): Promise<void> {
  const { cfg, prep, progress: p } = t;
  const t0 = performance.now();
  const s = await trainStep({ engine: t.engine, optimizer: t.optimizer, cfg, schedule: prep.schedule }, p.step, (k) => {
    const { indices } = prep.plan.micro(k);
    return collate(indices.map((i) => prep.data.train[i]), prep.padId, cfg.maxLength);
  });
  p.step++;
  p.epoch = prep.plan.epochAt(p.step * cfg.gradAccum);
  p.trainLoss = s.loss;
  const ms = performance.now() - t0;
  const tps = s.tokens / (ms / 1000);
  t.events.scalars(p.step, {
    "train/loss": s.loss,
    "train/learning_rate": s.lr,
    "train/grad_norm": s.gradNorm,
    "train/tokens_per_second": tps,
    "train/step_time_ms": ms,
    "train/epoch": p.epoch,
    "system/rss_mb": rssMb(),
    ...gpuScalar(cfg.device),
  });
  p.logHistory.push({ step: p.step, loss: s.loss, learningRate: s.lr, gradNorm: s.gradNorm, epoch: p.epoch });
  t.ctx.log(
    `step ${p.step}/${p.totalSteps} | loss ${s.loss.toFixed(4)} | lr ${s.lr.toExponential(2)} | grad_norm ${s.gradNorm.toFixed(3)} | ` +
      `${tps.toFixed(0)} tok/s | ${ms.toFixed(0)} ms | epoch ${p.epoch.toFixed(2)}`,
  );
  t.status("training", "Training");
  if (cfg.evalEvery > 0 && p.step % cfg.evalEvery === 0 && p.step < p.totalSteps) await runEval(t);
  if (cfg.saveEvery > 0 && p.step % cfg.saveEvery === 0 && p.step < p.totalSteps) save(t);
}

/** Finish: the last evaluation, the final checkpoint, final/ with its model card, and `completed`. */
async function finish(t: Training): Promise<void> {
  const { cfg, prep, progress: p, run } = t;
  await runEval(t);
  t.status("training", "Saving the final checkpoint");
  const last = save(t);
  const { data } = prep;
  writeFinal(
    t.runDir,
    last,
    modelCard({
      runId: run.id,
      config: cfg,
      baseModel: cfg.model === "demo" ? "demo (gemma-tuner built-in tiny Gemma 3)" : prep.modelDir,
      dataset: { format: data.format, train: data.train.length, validation: data.validation.length, invalid: data.invalid.length, truncated: data.truncated },
      step: p.step,
      totalSteps: p.totalSteps,
      epoch: p.epoch,
      trainLoss: p.trainLoss,
      evalLoss: p.evalLoss,
      parameters: { total: countParams(prep.model), trainable: countTrainable(t.engine) },
      finishedAt: new Date().toISOString(),
      state: "completed",
    }),
  );
  t.status("completed", `Completed ${p.step} steps`);
}

function trainerState(t: Training): TrainerState {
  const { cfg, progress: p } = t;
  return {
    format: TRAINER_STATE_FORMAT,
    version: TRAINER_STATE_VERSION,
    step: p.step,
    totalSteps: p.totalSteps,
    epoch: p.epoch,
    microBatches: p.step * cfg.gradAccum,
    rng: { seed: cfg.seed, dropoutStream: "seed,microBatch", nextMicroBatch: p.step * cfg.gradAccum },
    schedule: t.prep.schedule,
    method: cfg.method,
    baseModel: t.prep.modelDir,
    trainLoss: p.trainLoss,
    evalLoss: p.evalLoss,
    logHistory: p.logHistory,
  };
}

/** Writes a checkpoint of the current step (once per step) and prunes old ones; returns its directory. */
function save(t: Training): string {
  const { cfg, progress: p } = t;
  if (p.lastSaved === p.step) return latestCheckpoint(t.runDir)!.dir;
  const dir = writeCheckpoint(t.runDir, {
    step: p.step,
    method: cfg.method,
    trainable: t.engine.trainable,
    optimizer: t.optimizer.stateTensors(),
    state: trainerState(t),
    lora: cfg.lora,
    baseModel: t.prep.modelDir,
    modelDir: t.prep.modelDir,
  });
  pruneCheckpoints(t.runDir, cfg.keepCheckpoints);
  p.lastSaved = p.step;
  t.ctx.log(`Saved ${dir}`);
  return dir;
}

/** Evaluates on the validation split (once per step; nothing without one). */
async function runEval(t: Training): Promise<void> {
  const { cfg, prep, progress: p } = t;
  if (!prep.data.validation.length || p.lastEval === p.step) return;
  t.status("training", "Evaluating");
  p.evalLoss = await evaluate(t.engine, prep.data.validation, cfg, prep.padId);
  p.lastEval = p.step;
  t.events.scalars(p.step, { "eval/loss": p.evalLoss });
  p.logHistory.push({ step: p.step, evalLoss: p.evalLoss, epoch: p.epoch });
  t.ctx.log(`eval step ${p.step} | eval_loss ${p.evalLoss.toFixed(4)}`);
}

async function evaluate(engine: TrainEngine, examples: TokenizedExample[], cfg: RunConfig, padId: number): Promise<number> {
  let lossSum = 0, tokens = 0;
  for (let i = 0; i < examples.length; i += cfg.batchSize) {
    const r = await engine.evaluate(collate(examples.slice(i, i + cfg.batchSize), padId, cfg.maxLength));
    lossSum += r.lossSum;
    tokens += r.tokens;
  }
  return tokens ? lossSum / tokens : NaN;
}

/**
 * glibc's heap for the steps (engine/malloc.ts): kept lean (freed buffers unmapped at once, slower steps)
 * only where the run's estimate at the default's retention would not fit the memory available, or where
 * GEMMA_TUNER_HEAP says so. Before the engine exists, so its buffers follow the choice.
 */
function chooseHeap(prep: PreparedRun, log: (l: string) => void): void {
  const estimate = estimateRunMemory(prep.model.config, prep.cfg).totalBytes;
  const d = heapModeFor(estimate, availableMemoryBytes(), Deno.env.get(HEAP_ENV));
  if (d.mode === "lean") {
    const r = limitHeapRetention();
    log(r.limited ? `Heap: lean, freed buffers go back to the system at once (${d.reason})` : `Heap: glibc's default; lean was asked (${d.reason}) but ${r.reason}`);
  } else {
    log(`Heap: glibc's default (${d.reason})`);
  }
}

function reportDataset(d: PreparedDataset, log: (l: string) => void): void {
  log(`Dataset: format ${d.format} (${d.chosenBecause}); ${d.train.length} train, ${d.validation.length} validation examples, ${d.trainTokens} trained tokens`);
  if (d.truncated) log(`Dataset: ${d.truncated} examples were cut at maxLength (the start is kept)`);
  if (d.invalid.length) {
    log(`Dataset: ${d.invalid.length} rows skipped:`);
    for (const i of d.invalid.slice(0, 50)) log(`  line ${i.line}, ${i.field}: ${i.reason}`);
    if (d.invalid.length > 50) log(`  … and ${d.invalid.length - 50} more`);
  }
}

function countParams(m: LoadedModel): number {
  // From the config: a low-precision base holds only the norms in `weights` (engine/quant/base.ts).
  return countModelParams(m.config);
}

function countTrainable(e: TrainEngine): number {
  let n = 0;
  for (const t of e.trainable.values()) n += t.data.length;
  return n;
}

/** Parameters, memory estimate and architecture into run.json (read by the KPI panel). */
function writeModelInfo(runDir: string, prep: PreparedRun, engine: TrainEngine): void {
  const { model, data, cfg } = prep;
  const c = model.config;
  const archs = (c.raw as { architectures?: string[] }).architectures;
  updateRunJson(runDir, {
    modelDir: model.dir,
    modelInfo: {
      architecture: archs?.[0] ?? c.modelType,
      modelType: c.modelType,
      generation: c.generation,
      layers: c.numLayers,
      hiddenSize: c.hiddenSize,
      vocabSize: c.vocabSize,
      dtype: model.storedDtype,
      parameters: countParams(model),
      trainableParameters: countTrainable(engine),
      memoryEstimateMb: Math.round(estimateRunMemory(c, cfg).totalBytes / 2 ** 20),
      sizeBytes: model.sizeBytes,
    },
    datasetInfo: {
      format: data.format,
      chosenBecause: data.chosenBecause,
      train: data.train.length,
      validation: data.validation.length,
      invalid: data.invalid.length,
      invalidRows: data.invalid.slice(0, 100),
      truncated: data.truncated,
      trainTokens: data.trainTokens,
    },
  });
}
