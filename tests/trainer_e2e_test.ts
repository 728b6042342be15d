/**
 * The trainer end to end, on the real engine with the built-in demo model and the sample dataset:
 * a run through `main.ts train` (loss falls, valid event file, PEFT adapter, final/ with a card),
 * resume after SIGKILL reaching the same losses as a run that never stopped, SIGTERM abort with a
 * checkpoint, the lock (heartbeat, refusal, a stale lock from another host), resume past damaged
 * checkpoints, and full fine-tuning's HF-layout checkpoint.
 */
import { deepStrictEqual as eq, ok } from "node:assert/strict";
import { join } from "node:path";
import { listEventFiles, readEventFile, type ScalarEvent } from "../trainer/tfevents.ts";
import { createRun, readStatus } from "../trainer/run_dir.ts";
import { hostname } from "node:os";
import { LOCK_STALE_MS, readLock } from "../trainer/lock.ts";
import { runWorker } from "../trainer/worker.ts";
import { checkpointProblem, listCheckpoints, readTrainerState } from "../trainer/checkpoint.ts";
import { readHeader } from "../engine/safetensors.ts";
import { estimateRunMemory } from "../engine/mod.ts";
import { readConfig } from "../engine/model_dir.ts";
import { timeout } from "./_timeouts.ts";
import { parseRunConfig } from "../config/training.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const DATA = Deno.makeTempDirSync({ prefix: "gt-e2e-" });
const quiet = () => {};

function config(extra: Record<string, unknown> = {}) {
  return {
    name: "e2e",
    model: "demo",
    dataset: { path: "sample", validation: 0.1 },
    maxSteps: 12,
    batchSize: 4,
    learningRate: 0.01,
    warmupSteps: 2,
    maxLength: 64,
    evalEvery: 6,
    saveEvery: 4,
    keepCheckpoints: 10,
    threads: 1,
    lora: { r: 4, alpha: 8, dropout: 0.1 },
    ...extra,
  };
}

function spawnTrain(args: string[], env: Record<string, string> = {}): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(ROOT, "main.ts"), "train", ...args],
    cwd: ROOT,
    env,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

async function finish(p: Deno.ChildProcess): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await p.output();
  return { code: out.code, stdout: new TextDecoder().decode(out.stdout), stderr: new TextDecoder().decode(out.stderr) };
}

Deno.test({
  name: "GEMMA_TUNER_HEAP=lean keeps the trainer's heap lean and says so; another value fails the run naming the variable",
  ignore: Deno.build.os !== "linux",
  sanitizeResources: false,
  async fn() {
    const cfgFile = join(DATA, "cfg-heap.json");
    Deno.writeTextFileSync(cfgFile, JSON.stringify(config({ maxSteps: 1, evalEvery: 0, saveEvery: 0 })));
    const lean = await finish(spawnTrain(["--config", cfgFile, "--data", DATA], { GEMMA_TUNER_HEAP: "lean" }));
    eq(lean.code, 0, lean.stderr);
    ok(lean.stdout.includes("Heap: lean, freed buffers go back to the system at once (GEMMA_TUNER_HEAP=lean)"), lean.stdout);
    eq(JSON.parse(lean.stdout.trim().split("\n").at(-1)!).state, "completed");
    const bad = await finish(spawnTrain(["--config", cfgFile, "--data", DATA], { GEMMA_TUNER_HEAP: "small" }));
    ok(bad.code !== 0, bad.stdout);
    ok(`${bad.stdout}\n${bad.stderr}`.includes('GEMMA_TUNER_HEAP=small: use "lean"'), `${bad.stdout}\n${bad.stderr}`);
  },
});

/** The last value written for each step of `tag` over every event file of the run (a resumed run rewrites steps). */
function series(runDir: string, tag: string): Map<number, number> {
  const m = new Map<number, number>();
  for (const f of listEventFiles(runDir)) {
    for (const s of readEventFile(f).scalars as ScalarEvent[]) if (s.tag === tag) m.set(s.step, s.value);
  }
  return m;
}

async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + timeout(ms);
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

Deno.test({
  name: "train --config on the demo model and sample data: falling loss, valid events, PEFT adapter, final card",
  sanitizeResources: false,
  async fn() {
    const cfgFile = join(DATA, "cfg.json");
    Deno.writeTextFileSync(cfgFile, JSON.stringify(config({ maxSteps: 40, batchSize: 8, evalEvery: 20, saveEvery: 20, keepCheckpoints: 1 })));
    const r = await finish(spawnTrain(["--config", cfgFile, "--data", DATA]));
    eq(r.code, 0, r.stderr);
    const last = JSON.parse(r.stdout.trim().split("\n").at(-1)!);
    eq(Object.keys(last), ["runId", "runDir", "state", "step", "trainLoss", "evalLoss"]);
    eq([last.state, last.step], ["completed", 40]);
    ok(r.stdout.includes("step 40/40 | loss "), "progress lines on stdout");
    // The demo's estimate is far below any machine's free memory: glibc's default heap (engine/malloc.ts).
    ok(/Heap: glibc's default \(the estimate \d+ MB × 2 fits 80 % of the \d+ MB available\)/.test(r.stdout), r.stdout);
    const runDir: string = last.runDir;
    const loss = [...series(runDir, "train/loss").entries()].sort((a, b) => a[0] - b[0]).map(([, v]) => v);
    eq(loss.length, 40);
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    ok(mean(loss.slice(-8)) < 0.6 * mean(loss.slice(0, 4)), `loss should fall: first ${loss.slice(0, 4)} last ${loss.slice(-8)}`);
    for (const tag of ["train/learning_rate", "train/grad_norm", "train/tokens_per_second", "train/step_time_ms", "train/epoch", "system/rss_mb"]) {
      eq(series(runDir, tag).size, 40, tag);
    }
    eq([...series(runDir, "eval/loss").keys()], [20, 40]);
    ok(Math.abs(series(runDir, "eval/loss").get(40)! - last.evalLoss) < 1e-4);
    const st = readStatus(runDir)!;
    eq([st.state, st.step, st.totalSteps], ["completed", 40, 40]);
    eq(readLock(DATA), null);
    const run = JSON.parse(Deno.readTextFileSync(join(runDir, "run.json")));
    eq(run.modelInfo.layers, 2);
    ok(run.modelInfo.parameters > run.modelInfo.trainableParameters && run.modelInfo.trainableParameters > 0);
    // The KPI's memory estimate is the create page's: one formula.
    const estimate = estimateRunMemory(readConfig(run.modelDir), parseRunConfig(run.config));
    eq(run.modelInfo.memoryEstimateMb, Math.round(estimate.totalBytes / 2 ** 20));
    // PEFT adapter
    const final = join(runDir, "final");
    const ac = JSON.parse(Deno.readTextFileSync(join(final, "adapter_config.json")));
    eq([ac.peft_type, ac.task_type, ac.r, ac.lora_alpha], ["LORA", "CAUSAL_LM", 4, 8]);
    const { entries, metadata } = readHeader(join(final, "adapter_model.safetensors"));
    eq(metadata.format, "pt");
    eq(entries.length, 2 * 7 * 2);
    const q = entries.find((e) => e.name === "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight")!;
    eq([q.dtype, q.shape], ["F32", [4, 64]]);
    ok(Deno.readTextFileSync(join(final, "README.md")).includes("library_name: peft"));
    eq(listCheckpoints(runDir).map((c) => c.step), [40]); // keepCheckpoints 1
    const ts = readTrainerState(join(runDir, "checkpoints", "checkpoint-40"));
    eq([ts.step, ts.microBatches, ts.schedule.totalSteps], [40, 40, 40]);
    ok(Deno.statSync(join(runDir, "checkpoints", "checkpoint-40", "optimizer.safetensors")).size > 0);
  },
});

Deno.test({
  name: "resume after SIGKILL reaches the same losses as a run that never stopped",
  sanitizeResources: false,
  async fn() {
    const cfg = parseRunConfig(config({ maxSteps: 16, saveEvery: 4, batchSize: 2, gradAccum: 2 }));
    const reference = createRun(cfg, DATA);
    eq((await runWorker(reference, DATA, { log: quiet })).state, "completed");
    const ref = series(reference, "train/loss");

    const killed = createRun(cfg, DATA);
    const p = spawnTrain(["--run", killed]);
    await waitFor(() => listCheckpoints(killed).length > 0, 120_000, "the first checkpoint");
    p.kill("SIGKILL");
    const r = await finish(p);
    ok(r.code !== 0);
    const before = readStatus(killed)!;
    ok(before.state === "training" && before.step < 16, `killed mid-run, status ${JSON.stringify(before)}`);
    eq(readLock(DATA)?.runId, killed.split("/").at(-1)); // the dead process's lock is left behind

    const resumed = await finish(spawnTrain(["--run", killed]));
    eq(resumed.code, 0, resumed.stderr);
    ok(resumed.stdout.includes("Resumed from step"), resumed.stdout);
    ok(Deno.readTextFileSync(join(killed, "status.log")).includes("Replaced a stale lock"));
    const got = series(killed, "train/loss");
    eq([...got.keys()].sort((a, b) => a - b), [...ref.keys()].sort((a, b) => a - b));
    for (const [step, v] of ref) ok(Math.abs(got.get(step)! - v) <= 1e-5 * Math.max(1, Math.abs(v)), `step ${step}: ${got.get(step)} vs ${v}`);
    const evalRef = series(reference, "eval/loss"), evalGot = series(killed, "eval/loss");
    ok(Math.abs(evalRef.get(16)! - evalGot.get(16)!) < 1e-5);
    eq(readStatus(killed)!.state, "completed");
  },
});

Deno.test({
  name: "SIGTERM finishes the step, saves a checkpoint, writes aborted and exits 0",
  sanitizeResources: false,
  async fn() {
    const runDir = createRun(parseRunConfig(config({ maxSteps: 100000, saveEvery: 0, evalEvery: 0 })), DATA);
    const p = spawnTrain(["--run", runDir]);
    await waitFor(() => (readStatus(runDir)?.step ?? 0) >= 2, 120_000, "two steps");
    const t0 = Date.now();
    p.kill("SIGTERM");
    const r = await finish(p);
    ok(Date.now() - t0 < timeout(10_000), "exits within seconds");
    eq(r.code, 0, r.stderr);
    const last = JSON.parse(r.stdout.trim().split("\n").at(-1)!);
    const st = readStatus(runDir)!;
    eq([last.state, st.state], ["aborted", "aborted"]);
    eq(listCheckpoints(runDir).map((c) => c.step), [st.step]);
    eq(readLock(DATA), null);
  },
});

Deno.test({
  name: "a live trainer's lock carries a refreshed heartbeat; a second trainer refuses naming host, pid and age, and does not say queued",
  sanitizeResources: false,
  async fn() {
    const first = createRun(parseRunConfig(config({ maxSteps: 100000, saveEvery: 0, evalEvery: 0 })), DATA);
    const p = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", join(ROOT, "main.ts"), "train", "--run", first],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
      env: { GEMMA_TUNER_LOCK_HEARTBEAT_MS: "200" },
    }).spawn();
    try {
      await waitFor(() => (readStatus(first)?.step ?? 0) >= 1, 120_000, "the first trainer's first step");
      const started = readLock(DATA)!;
      eq([started.pid, started.runId, started.hostname], [p.pid, first.split("/").at(-1), hostname()]);
      // The heartbeat advances while steps run (they block the trainer's main thread).
      await waitFor(() => Date.parse(readLock(DATA)?.heartbeatAt ?? "") > Date.parse(started.heartbeatAt), 30_000, "a heartbeat");
      const second = createRun(parseRunConfig(config({ maxSteps: 1 })), DATA);
      const r = await finish(spawnTrain(["--run", second]));
      eq(r.code, 1);
      ok(r.stderr.includes(`(run ${started.runId}, pid ${p.pid} on this host, heartbeat `) && r.stderr.includes("s ago)"), r.stderr);
      const line = JSON.parse(r.stdout.trim().split("\n").at(-1)!);
      eq([line.state, line.step, line.lock.pid, line.lock.runId, line.lock.hostname], ["not_started", 0, p.pid, started.runId, hostname()]);
      ok(typeof line.lock.heartbeatAgeS === "number" && line.lock.heartbeatAgeS < 120 && line.error.includes("Another training process holds the lock"), JSON.stringify(line));
      ok(Deno.readTextFileSync(join(second, "status.log")).includes("Not started: Another training process holds the lock"));
    } finally {
      p.kill("SIGTERM");
      await finish(p);
    }
    eq(readStatus(first)!.state, "aborted");
    eq(readLock(DATA), null, "the heartbeat re-created the lock after the trainer released it");
  },
});

Deno.test({
  name: "a lock written on another host: refused while its heartbeat is fresh, replaced with a note once it is older than the limit",
  sanitizeResources: false,
  async fn() {
    const lockFile = join(DATA, ".training.lock");
    const ago = (s: number) => new Date(Date.now() - s * 1000).toISOString();
    const foreign = (beat: number) =>
      JSON.stringify({ pid: 31337, runId: "run-on-old-container", startedAt: ago(7200), hostname: "container-before-restart", heartbeatAt: ago(beat) });
    const runDir = createRun(parseRunConfig(config({ maxSteps: 1, evalEvery: 0 })), DATA);
    Deno.writeTextFileSync(lockFile, foreign(3));
    const refused = await runWorker(runDir, DATA, { log: quiet });
    eq([refused.state, refused.lock?.hostname, refused.lock?.pid], ["not_started", "container-before-restart", 31337]);
    ok(refused.error!.includes('pid 31337 on host "container-before-restart", heartbeat '), refused.error ?? "");
    eq(readLock(DATA)?.hostname, "container-before-restart");

    Deno.writeTextFileSync(lockFile, foreign(LOCK_STALE_MS / 1000 + 480));
    const ran = await runWorker(runDir, DATA, { log: quiet });
    eq(ran.state, "completed");
    const log = Deno.readTextFileSync(join(runDir, "status.log"));
    ok(
      /Replaced a stale lock \(run run-on-old-container, pid 31337 on host "container-before-restart", heartbeat 60\d s ago\): its heartbeat is 60\d s old \(the limit is 120 s\)/
        .test(log),
      log,
    );
    eq(readLock(DATA), null);
  },
});

Deno.test({
  name: "resume skips a truncated newest checkpoint, then a same-size corrupted one, with a note, and reaches the same losses",
  sanitizeResources: false,
  async fn() {
    const cfg = parseRunConfig(config({ maxSteps: 8, saveEvery: 4, evalEvery: 0 }));
    const runDir = createRun(cfg, DATA);
    eq((await runWorker(runDir, DATA, { log: quiet })).state, "completed");
    const ref = series(runDir, "train/loss");
    eq(listCheckpoints(runDir).map((c) => c.step), [4, 8]);
    const ck8 = join(runDir, "checkpoints", "checkpoint-8");
    for (const damage of ["truncated", "bytes flipped"] as const) {
      if (damage === "truncated") {
        const f = join(ck8, "optimizer.safetensors");
        Deno.truncateSync(f, Deno.statSync(f).size - 100);
      } else {
        const f = join(ck8, "adapter_model.safetensors");
        const bytes = Deno.readFileSync(f);
        for (let i = bytes.length - 64; i < bytes.length; i += 8) bytes[i] ^= 0x5a;
        Deno.writeFileSync(f, bytes);
      }
      const lines: string[] = [];
      const res = await runWorker(runDir, DATA, { log: (l) => lines.push(l) });
      eq([res.state, res.step], ["completed", 8], damage);
      ok(lines.some((l) => l.startsWith("Resumed from step 4 ")), `${damage}: ${lines.join("\n")}`);
      const log = Deno.readTextFileSync(join(runDir, "status.log"));
      const want = damage === "truncated"
        ? /Checkpoint checkpoint-8 is damaged: optimizer\.safetensors is \d+ bytes; \d+ were written \(truncated\)/
        : /Checkpoint checkpoint-8 is damaged: adapter_model\.safetensors does not match its checksum/;
      ok(want.test(log), `${damage}: ${log}`);
      ok(log.includes("Resuming from checkpoint-4 instead of the damaged checkpoint-8"), log);
      // Steps 5-8 were trained again from checkpoint-4 and land where they did; checkpoint-8 is whole again.
      const got = series(runDir, "train/loss");
      for (const step of [5, 6, 7, 8]) {
        ok(Math.abs(got.get(step)! - ref.get(step)!) <= 1e-5 * Math.max(1, ref.get(step)!), `${damage} step ${step}: ${got.get(step)} vs ${ref.get(step)}`);
      }
      eq(checkpointProblem(ck8, { full: true }), null);
      Deno.writeTextFileSync(join(runDir, "status.log"), "");
    }
  },
});

Deno.test({
  name: "a bad dataset fails before training",
  sanitizeResources: false,
  async fn() {
    const bad = join(DATA, "bad.jsonl");
    Deno.writeTextFileSync(bad, '{"question":"a","answer":"b"}\n');
    const runDir = createRun(parseRunConfig(config({ dataset: { path: bad } })), DATA);
    const res = await runWorker(runDir, DATA, { log: quiet });
    eq(res.state, "failed");
    const st = readStatus(runDir)!;
    eq([st.state, st.step], ["failed", 0]);
    ok(st.error!.includes("Cannot tell the format") && st.error!.includes('"question"'), st.error ?? "");
  },
});

Deno.test({
  name: "full fine-tuning writes HF-layout checkpoints and lowers the loss",
  sanitizeResources: false,
  async fn() {
    // The sample's 50 rows less 5 held out = 45 training rows / batch 4 = 12 micro-batches per epoch; 0.4 epochs → 5 steps
    const runDir = createRun(parseRunConfig(config({ method: "full", maxSteps: undefined, epochs: 0.4, learningRate: 1e-3, saveEvery: 3, evalEvery: 0 })), DATA);
    const res = await runWorker(runDir, DATA, { log: quiet });
    eq([res.state, res.step], ["completed", 5]);
    const loss = series(runDir, "train/loss");
    ok(loss.get(5)! < loss.get(1)!, `loss ${[...loss.values()]}`);
    eq(listCheckpoints(runDir).map((c) => c.step), [3, 5]);
    const final = join(runDir, "final");
    for (const f of ["model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "trainer_state.json", "README.md"]) {
      ok(Deno.statSync(join(final, f)).isFile, f);
    }
    const names = readHeader(join(final, "model.safetensors")).entries.map((e) => e.name);
    ok(names.includes("model.embed_tokens.weight") && names.includes("model.layers.1.mlp.down_proj.weight"));
    eq(JSON.parse(Deno.readTextFileSync(join(final, "config.json"))).torch_dtype, "float32");
  },
});

Deno.test({
  name: "full fine-tuning with adamw-8bit: 8-bit moments in the checkpoint, and resume after SIGKILL reaches the same losses",
  sanitizeResources: false,
  async fn() {
    const cfg = parseRunConfig(config({ method: "full", optimizer: "adamw-8bit", maxSteps: 8, saveEvery: 4, evalEvery: 0, learningRate: 1e-3, batchSize: 2, gradAccum: 2 }));
    const reference = createRun(cfg, DATA);
    eq((await runWorker(reference, DATA, { log: quiet })).state, "completed");
    const ref = series(reference, "train/loss");
    const entries = readHeader(join(reference, "checkpoints", "checkpoint-4", "optimizer.safetensors")).entries;
    const e = entries.find((x) => x.name === "exp_avg.model.embed_tokens.weight")!;
    eq([e.dtype, e.shape], ["U8", [262144, 64]]);
    eq(entries.find((x) => x.name === "exp_avg_sq.model.embed_tokens.weight.absmax")!.shape, [262144 * 64 / 256]);
    eq(entries.find((x) => x.name === "exp_avg.model.norm.weight")!.dtype, "F32");
    ok(Deno.readTextFileSync(join(reference, "final", "README.md")).includes("AdamW (8-bit moments)"));

    const killed = createRun(cfg, DATA);
    const p = spawnTrain(["--run", killed]);
    await waitFor(() => listCheckpoints(killed).length > 0, 120_000, "the first checkpoint");
    p.kill("SIGKILL");
    await finish(p);
    ok(readStatus(killed)!.step < 8, "the run finished before it was killed");
    const resumed = await finish(spawnTrain(["--run", killed]));
    eq(resumed.code, 0, resumed.stderr);
    ok(resumed.stdout.includes("Resumed from step 4"), resumed.stdout);
    const got = series(killed, "train/loss");
    eq([...got.keys()].sort((a, b) => a - b), [...ref.keys()].sort((a, b) => a - b));
    for (const [step, v] of ref) ok(Math.abs(got.get(step)! - v) <= 1e-5 * Math.max(1, Math.abs(v)), `step ${step}: ${got.get(step)} vs ${v}`);
  },
});

globalThis.addEventListener("unload", () => {
  try {
    Deno.removeSync(DATA, { recursive: true });
  } catch { /* best effort */ }
});
