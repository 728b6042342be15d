/**
 * The training loop, run by `gemma-tuner train` (cli/train.ts) in its own process. It talks to the server only through the
 * run directory: status.json/status.log, events.out.tfevents.*, checkpoints/, final/ and run.json
 * (DESIGN.md "The run directory"). `runWorker` starts or resumes the run in a directory from its newest
 * complete checkpoint; `createRun` makes a new run directory.
 *
 * Determinism on resume: the micro-batch order is a function of (seed, epoch), LoRA dropout of
 * micro-batch k is seeded by (seed, k), the schedule by the step, and the trainable tensors and AdamW
 * state are saved as float32, so a resumed run takes the same steps as one that never stopped.
 */
import * as fs from "node:fs";
import { join } from "node:path";
import type { RunConfig } from "../config/training.ts";
import { BatchPlan, collate, type PreparedDataset, prepareDataset, type TokenizedExample } from "../engine/data/mod.ts";
import { type LoadedModel, resolveModelPath } from "../engine/model_dir.ts";
import { loadForTraining } from "../engine/quant/base.ts";
import { countParams as countModelParams } from "../engine/gemma/params.ts";
import { AdamW, clipFactor, globalNorm, lrAt, type Schedule } from "../engine/optim.ts";
import { loadTokenizer } from "../engine/tokenizer.ts";
import { TrainEngine } from "../engine/train_engine.ts";
import type { Device } from "../engine/device.ts";
import { gpuMemoryMb } from "../engine/gpu_memory.ts";
import { cleanPartialCheckpoints, latestCheckpoint, type LogEntry, pruneCheckpoints, readCheckpoint, TRAINER_STATE_FORMAT, TRAINER_STATE_VERSION, type TrainerState, writeCheckpoint, writeFinal } from "./checkpoint.ts";
import { acquireLock, releaseLock } from "./lock.ts";
import { modelCard } from "./model_card.ts";
import { appendStatusLog, createRun, readRunJson, type RunJson, type RunState, updateRunJson, writeStatus } from "./run_dir.ts";

// Re-exported for code written before run_dir.ts owned them.
export { createRun, readRunJson };
import { EventWriter } from "./tfevents.ts";

/** The one JSON line `train` ends with. */
export interface TrainResult {
  runId: string;
  runDir: string;
  state: RunState;
  step: number;
  trainLoss: number | null;
  evalLoss: number | null;
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
    const h = lock.holder;
    const msg = `Another training process holds the lock (pid ${h.pid}, run ${h.runId}, since ${h.startedAt}); wait for it to finish or abort it`;
    console.error(`train: ${msg}`);
    appendStatusLog(runDir, `Not started: ${msg}`);
    return { runId: run.id, runDir, state: "queued", step: 0, trainLoss: null, evalLoss: null };
  }
  if (lock.replacedStale) {
    appendStatusLog(runDir, `Replaced a stale lock from pid ${lock.replacedStale.pid} (run ${lock.replacedStale.runId || "unknown"}), whose process is gone`);
  }
  try {
    return await train(runDir, dataDir, run, { saveOnAbort: opts.saveOnAbort ?? true, log });
  } finally {
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

async function train(runDir: string, dataDir: string, run: RunJson, ctx: Ctx): Promise<TrainResult> {
  const cfg = run.config;
  let stopSignal: string | null = null;
  const onSignal = (sig: string) => () => {
    if (!stopSignal) ctx.log(`Received ${sig}: stopping after the current step`);
    stopSignal = sig;
  };
  const listeners: [Deno.Signal, () => void][] = [];
  for (const sig of (Deno.build.os === "windows" ? ["SIGINT", "SIGBREAK"] : ["SIGTERM", "SIGINT"]) as Deno.Signal[]) {
    const h = onSignal(sig);
    try {
      Deno.addSignalListener(sig, h);
      listeners.push([sig, h]);
    } catch { /* signal not supported here */ }
  }
  let step = 0, totalSteps = cfg.maxSteps ?? 0, epoch = 0;
  let trainLoss: number | null = null, evalLoss: number | null = null;
  const status = (state: RunState, message: string, error?: string) =>
    writeStatus(runDir, { state, message, step, totalSteps, epoch, pid: Deno.pid, ...(error ? { error } : {}) });
  let engine: TrainEngine | null = null;
  let events: EventWriter | null = null;
  try {
    cleanPartialCheckpoints(runDir);
    status("initializing", "Loading model");
    const modelDir = await resolveModelPath(cfg.model, dataDir);
    // LoRA keeps the frozen base in its precision (engine/quant: configured, else the size policy).
    const model = await loadForTraining(modelDir, cfg);
    if (cfg.method === "lora") ctx.log(`Base weights: ${model.precision.reason}`);
    const tokenizer = await loadTokenizer(modelDir);
    status("initializing", "Reading dataset");
    const data = await prepareDataset(cfg.dataset, tokenizer, { maxLength: cfg.maxLength, seed: cfg.seed, chat: tokenizer.chat });
    reportDataset(data, ctx.log);
    const plan = new BatchPlan(data.train.length, cfg.batchSize, cfg.seed);
    totalSteps = cfg.maxSteps ?? Math.max(1, Math.ceil((cfg.epochs ?? 1) * plan.perEpoch / cfg.gradAccum));
    const schedule: Schedule = { kind: cfg.schedule, peakLr: cfg.learningRate, warmupSteps: cfg.warmupSteps, totalSteps };

    const resumeFrom = latestCheckpoint(runDir);
    let resumed: ReturnType<typeof readCheckpoint> | null = null;
    if (resumeFrom) {
      status("initializing", `Resuming from ${resumeFrom.dir.split(/[\\/]/).at(-1)}`);
      resumed = readCheckpoint(resumeFrom.dir);
      if (resumed.state.method !== cfg.method) throw new RangeError(`Cannot resume "${resumeFrom.dir}": it was trained with method ${resumed.state.method}, run.json says ${cfg.method}`);
      if (cfg.method === "full") {
        for (const [name, w] of resumed.trainable) {
          const base = model.weights.get(name);
          if (base && base.length === w.length) base.set(w);
        }
      }
    }
    status("initializing", "Building the training graphs");
    engine = await TrainEngine.create({
      model,
      method: cfg.method,
      lora: cfg.method === "lora" ? cfg.lora : undefined,
      adapter: resumed && cfg.method === "lora"
        ? new Map([...resumed.trainable].map(([n, d]) => [n, { shape: [], data: d }]))
        : undefined,
      device: cfg.device,
      threads: cfg.threads,
      seed: cfg.seed,
    });
    const optimizer = new AdamW(engine.trainable, { beta1: cfg.adamBeta1, beta2: cfg.adamBeta2, eps: cfg.adamEps, weightDecay: cfg.weightDecay });
    let logHistory: LogEntry[] = [];
    if (resumed) {
      optimizer.loadState(resumed.optimizer, resumed.state.step, join(resumeFrom!.dir, "optimizer.safetensors"));
      step = resumed.state.step;
      epoch = resumed.state.epoch;
      trainLoss = resumed.state.trainLoss;
      evalLoss = resumed.state.evalLoss;
      logHistory = resumed.state.logHistory ?? [];
      ctx.log(`Resumed from step ${step} (${resumeFrom!.dir})`);
    }
    writeModelInfo(runDir, model, engine, cfg, data);

    events = new EventWriter(runDir);
    if (step > 0) events.restart(step + 1);
    const state = (): TrainerState => ({
      format: TRAINER_STATE_FORMAT,
      version: TRAINER_STATE_VERSION,
      step,
      totalSteps,
      epoch,
      microBatches: step * cfg.gradAccum,
      rng: { seed: cfg.seed, dropoutStream: "seed,microBatch", nextMicroBatch: step * cfg.gradAccum },
      schedule,
      method: cfg.method,
      baseModel: modelDir,
      trainLoss,
      evalLoss,
      logHistory,
    });
    let lastSaved = resumed ? step : -1;
    const save = () => {
      if (lastSaved === step) return latestCheckpoint(runDir)!.dir;
      const dir = writeCheckpoint(runDir, {
        step,
        method: cfg.method,
        trainable: engine!.trainable,
        optimizer: optimizer.stateTensors(),
        state: state(),
        lora: cfg.lora,
        baseModel: modelDir,
        modelDir,
      });
      pruneCheckpoints(runDir, cfg.keepCheckpoints);
      lastSaved = step;
      ctx.log(`Saved ${dir}`);
      return dir;
    };
    let lastEval = -1;
    const runEval = async () => {
      if (!data.validation.length || lastEval === step) return;
      status("training", "Evaluating");
      evalLoss = await evaluate(engine!, data.validation, cfg, tokenizer.padId);
      lastEval = step;
      events!.scalars(step, { "eval/loss": evalLoss });
      logHistory.push({ step, evalLoss, epoch });
      ctx.log(`eval step ${step} | eval_loss ${evalLoss.toFixed(4)}`);
    };

    status("training", step > 0 ? `Training (resumed at step ${step})` : "Training");
    while (step < totalSteps) {
      // session.run blocks the thread; a real event-loop turn lets a pending SIGTERM/SIGINT be seen.
      await new Promise((r) => setTimeout(r, 0));
      if (stopSignal) break;
      const t0 = performance.now();
      engine.zeroGrads();
      let lossSum = 0, tokens = 0;
      for (let a = 0; a < cfg.gradAccum; a++) {
        const k = step * cfg.gradAccum + a;
        const { indices } = plan.micro(k);
        const batch = collate(indices.map((i) => data.train[i]), tokenizer.padId, cfg.maxLength);
        const r = await engine.forwardBackward(batch, { dropoutSeed: k });
        lossSum += r.lossSum;
        tokens += r.tokens;
      }
      if (tokens === 0) throw new RangeError(`Step ${step + 1}: the batch has no trained tokens`);
      const loss = lossSum / tokens;
      if (!Number.isFinite(loss)) {
        throw new RangeError(`Step ${step + 1}: the loss is ${loss}; lower learningRate or maxGradNorm`);
      }
      const scale = 1 / tokens; // token-count normalisation across micro-batches
      const gradNorm = globalNorm(engine.grads.values(), scale);
      const lr = lrAt(step, schedule);
      optimizer.update(engine.grads, lr, scale * clipFactor(gradNorm, cfg.maxGradNorm));
      step++;
      epoch = plan.epochAt(step * cfg.gradAccum);
      trainLoss = loss;
      const ms = performance.now() - t0;
      const tps = tokens / (ms / 1000);
      events.scalars(step, {
        "train/loss": loss,
        "train/learning_rate": lr,
        "train/grad_norm": gradNorm,
        "train/tokens_per_second": tps,
        "train/step_time_ms": ms,
        "train/epoch": epoch,
        "system/rss_mb": rssMb(),
        ...gpuScalar(cfg.device),
      });
      logHistory.push({ step, loss, learningRate: lr, gradNorm, epoch });
      ctx.log(
        `step ${step}/${totalSteps} | loss ${loss.toFixed(4)} | lr ${lr.toExponential(2)} | grad_norm ${gradNorm.toFixed(3)} | ` +
          `${tps.toFixed(0)} tok/s | ${ms.toFixed(0)} ms | epoch ${epoch.toFixed(2)}`,
      );
      status("training", "Training");
      if (cfg.evalEvery > 0 && step % cfg.evalEvery === 0 && step < totalSteps) await runEval();
      if (cfg.saveEvery > 0 && step % cfg.saveEvery === 0 && step < totalSteps) save();
    }

    if (stopSignal) {
      if (ctx.saveOnAbort && step > 0) {
        status("training", `Saving a checkpoint before stopping (${stopSignal})`);
        save();
      }
      status("aborted", `Stopped by ${stopSignal} at step ${step}`);
      return { runId: run.id, runDir, state: "aborted", step, trainLoss, evalLoss };
    }
    await runEval();
    status("training", "Saving the final checkpoint");
    const last = save();
    writeFinal(runDir, last, modelCard({
      runId: run.id,
      config: cfg,
      baseModel: cfg.model === "demo" ? "demo (gemma-tuner built-in tiny Gemma 3)" : modelDir,
      dataset: { format: data.format, train: data.train.length, validation: data.validation.length, invalid: data.invalid.length, truncated: data.truncated },
      step,
      totalSteps,
      epoch,
      trainLoss,
      evalLoss,
      parameters: { total: countParams(model), trainable: countTrainable(engine) },
      finishedAt: new Date().toISOString(),
      state: "completed",
    }));
    status("completed", `Completed ${step} steps`);
    return { runId: run.id, runDir, state: "completed", step, trainLoss, evalLoss };
  } catch (e) {
    const error = describeFailure(e);
    console.error(`train: ${error}`);
    // A stack helps with a bug, not with a bad input file or setting (those messages say what to fix).
    if (e instanceof Error && e.stack && !(e instanceof RangeError || e instanceof SyntaxError)) console.error(e.stack);
    try {
      status("failed", "Training failed", error);
    } catch { /* the run dir itself may be gone */ }
    return { runId: run.id, runDir, state: "failed", step, trainLoss, evalLoss };
  } finally {
    events?.close();
    engine?.release();
    for (const [sig, h] of listeners) Deno.removeSignalListener(sig, h);
  }
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
function writeModelInfo(runDir: string, model: LoadedModel, engine: TrainEngine, cfg: RunConfig, data: PreparedDataset): void {
  const c = model.config;
  const total = countParams(model), trainable = countTrainable(engine);
  // f32 weights + (param, grad, m, v) for trained tensors + activations of one micro-batch (rough).
  const activations = cfg.batchSize * cfg.maxLength * c.hiddenSize * c.numLayers * 24 * 4;
  const memoryEstimateMb = Math.round((total * 4 + trainable * 4 * (cfg.method === "full" ? 3 : 4) + activations) / 2 ** 20);
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
      parameters: total,
      trainableParameters: trainable,
      memoryEstimateMb,
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
