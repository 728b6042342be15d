/**
 * TrainingService with real trainer processes on the demo model: queue, abort, resume, completion,
 * and the orphan cases (server restarted mid-run re-attaches; a killed worker shows failed and resumes).
 */
import * as fs from "node:fs";
import { TrainingService } from "../trainer/service.ts";
import { parseRunConfig } from "../config/training.ts";
import { readLock } from "../trainer/lock.ts";
import { assert } from "./_assert.ts";
import { timeout } from "./_timeouts.ts";

const cfg = (name: string, steps: number) =>
  parseRunConfig({
    name,
    model: "demo",
    dataset: { path: "sample" },
    maxSteps: steps,
    batchSize: 4,
    learningRate: 0.005,
    warmupSteps: 1,
    evalEvery: 0,
    saveEvery: 5,
    maxLength: 64,
  });

async function until(svc: TrainingService, id: string, pred: (s: ReturnType<TrainingService["get"]>) => boolean, what: string, ms = 180_000) {
  const deadline = Date.now() + timeout(ms);
  while (Date.now() < deadline) {
    svc.reconcile();
    const v = svc.get(id);
    if (pred(v)) return v;
    await new Promise((r) => setTimeout(r, 200));
  }
  const v = svc.get(id);
  throw new Error(`timed out waiting for ${what}; run ${id} is ${v.status.state} at step ${v.status.step}: ${v.status.message} ${v.status.error ?? ""}`);
}

Deno.test({
  name: "service: a second run queues; abort keeps a checkpoint; the queued run then trains; resume completes",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dataDir = fs.mkdtempSync("/tmp/gt-svc-");
    const svc = new TrainingService(dataDir, { intervalMs: 0, graceMs: 30_000 });
    try {
      const a = svc.create(cfg("first", 400));
      const b = svc.create(cfg("second", 8));
      assert(svc.get(b.id).status.state === "queued" && svc.get(b.id).queuePosition === 1, "second run is not queued");
      await until(svc, a.id, (v) => v.status.state === "training" && v.checkpoints.length > 0, "the first run to train and save");
      assert(svc.get(b.id).status.state === "queued", "two trainers at once");
      const aborted = await svc.abort(a.id);
      assert(aborted.state === "aborted", `abort ended in ${aborted.state}: ${aborted.message}`);
      const kept = svc.get(a.id).checkpoints;
      assert(kept.length > 0, "abort lost the checkpoints");
      await until(svc, b.id, (v) => v.status.state === "completed", "the queued run to complete");
      const resumed = svc.resume(a.id);
      assert(resumed.state === "queued" || resumed.state === "initializing", `resume gave ${resumed.state}`);
      const v = await until(svc, a.id, (x) => x.status.step > kept.at(-1)!.step && x.status.state === "training", "the resumed run to continue");
      assert(v.status.step > kept.at(-1)!.step, "resume did not continue past the checkpoint");
      await svc.abort(a.id);
      assert(readLock(dataDir) === null, "the lock was not released");
    } finally {
      svc.stop();
    }
  },
});

Deno.test({
  name: "service: a server restarted mid-run re-attaches to the trainer (orphan) and sees it complete",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dataDir = fs.mkdtempSync("/tmp/gt-svc-");
    const first = new TrainingService(dataDir, { intervalMs: 0 });
    const { id } = first.create(cfg("orphan", 60));
    await until(first, id, (v) => v.status.state === "training", "training to start");
    first.stop(); // the server goes away; the detached trainer keeps going
    const second = new TrainingService(dataDir, { intervalMs: 0 });
    try {
      second.reconcile();
      const v = second.get(id);
      assert(v.orphan || v.status.state === "completed", `the new server did not see the run as an orphan (${v.status.state})`);
      await until(second, id, (x) => x.status.state === "completed", "the orphaned run to complete");
      assert(!second.get(id).orphan, "a completed run is still an orphan");
    } finally {
      second.stop();
    }
  },
});

Deno.test({
  name: "service: a SIGKILLed worker shows failed with the reason, the lock is cleared, and resume completes",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dataDir = fs.mkdtempSync("/tmp/gt-svc-");
    const svc = new TrainingService(dataDir, { intervalMs: 0 });
    try {
      const { id } = svc.create(cfg("killed", 300));
      const v = await until(svc, id, (x) => x.status.state === "training" && x.checkpoints.length > 0, "a checkpoint");
      Deno.kill(v.status.pid, "SIGKILL");
      const failed = await until(svc, id, (x) => x.status.state === "failed", "the run to show failed");
      assert(/ended unexpectedly/.test(failed.status.message), failed.status.message);
      assert(readLock(dataDir) === null, "the stale lock was not cleared");
      svc.resume(id);
      const done = await until(svc, id, (x) => x.status.state === "training" && x.status.step > v.checkpoints.at(-1)!.step, "the resumed run to continue");
      assert(done.status.step > 0, "no progress");
      await svc.abort(id);
    } finally {
      svc.stop();
    }
  },
});

// ---- Fast cases with a stand-in trainer: a small script that speaks the run-directory protocol
// (lock, status.json, events, logs, SIGTERM → aborted) in a few hundred milliseconds. It runs with the
// repo's deno.json, as the real trainer does, so the modules it imports resolve their npm packages.

const DENO_JSON = new URL("../deno.json", import.meta.url).pathname;
const here = (p: string) => new URL(p, import.meta.url).href;
const FAKE_TRAINER = `
import { acquireLock, releaseLock } from "${here("../trainer/lock.ts")}";
import { writeStatus } from "${here("../trainer/run_dir.ts")}";
import { EventWriter } from "${here("../trainer/tfevents.ts")}";
import * as path from "node:path";
const runDir = Deno.args[Deno.args.indexOf("--run") + 1];
const steps = Number(Deno.env.get("FAKE_STEPS") ?? 5), stepMs = Number(Deno.env.get("FAKE_STEP_MS") ?? 100);
const id = path.basename(runDir), dataDir = path.dirname(path.dirname(runDir));
const lock = acquireLock(dataDir, id);
if (!lock.ok) { console.error("Error: lock held by " + lock.holder.runId); Deno.exit(1); }
const st = (state, step, message) => writeStatus(runDir, { state, message, step, totalSteps: steps, epoch: 0, pid: Deno.pid });
let step = 0;
Deno.addSignalListener("SIGTERM", () => { st("aborted", step, "Aborted"); releaseLock(dataDir); Deno.exit(0); });
st("training", 0, "Training");
const ev = new EventWriter(runDir);
for (step = 1; step <= steps; step++) {
  await new Promise((r) => setTimeout(r, stepMs));
  ev.scalars(step, { "train/loss": 3 / step, "train/tokens_per_second": 100 });
  console.log("step " + step + " | loss " + (3 / step).toFixed(4));
}
step = steps;
st("completed", steps, "Completed");
releaseLock(dataDir);
`;

function fakeService(dataDir: string, env: Record<string, string> = {}) {
  const script = `${dataDir}/fake_trainer.ts`;
  fs.writeFileSync(script, FAKE_TRAINER);
  const svc = new TrainingService(dataDir, {
    intervalMs: 0,
    graceMs: 5000,
    workerCommand: (runDir) => ({
      cmd: "/usr/bin/env",
      args: [...Object.entries(env).map(([k, v]) => `${k}=${v}`), Deno.execPath(), "run", "-A", "--no-check", "--config", DENO_JSON, script, "train", "--run", runDir],
    }),
  });
  return svc;
}

const fast = (name: string, fn: () => Promise<void>) => Deno.test({ name, ignore: Deno.build.os !== "linux", sanitizeOps: false, sanitizeResources: false, fn });

fast("service (stand-in trainer): queue, queue position, cancel, completion starts the next, delete only when finished", async () => {
  const dataDir = fs.mkdtempSync("/tmp/gt-svcf-");
  const svc = fakeService(dataDir, { FAKE_STEPS: "6", FAKE_STEP_MS: "150" });
  try {
    const a = svc.create(cfg("a", 6));
    const b = svc.create(cfg("b", 6));
    const c = svc.create(cfg("c", 6));
    assert(a.state === "initializing" && b.state === "queued" && c.state === "queued", `${a.state} ${b.state} ${c.state}`);
    assert(svc.get(c.id).queuePosition === 2, `position ${svc.get(c.id).queuePosition}`);
    let refused = "";
    try {
      svc.delete(a.id);
    } catch (e) {
      refused = (e as Error).message;
    }
    assert(/abort it before deleting/.test(refused), `a live run could be deleted (${refused})`);
    assert(svc.cancel(b.id).state === "aborted", "cancel");
    assert(svc.get(c.id).queuePosition === 1, "the queue did not move up");
    await until(svc, a.id, (v) => v.status.state === "completed", "a to complete", 60_000);
    assert(svc.get(a.id).trainLoss === 0.5, `last loss ${svc.get(a.id).trainLoss}`);
    const vc = await until(svc, c.id, (v) => v.status.state !== "queued", "c to start after a", 10_000);
    assert(vc.status.state === "initializing" || vc.status.state === "training", vc.status.state);
    assert(svc.get(b.id).status.state === "aborted", "the cancelled run started anyway");
    await until(svc, c.id, (v) => v.status.state === "completed", "c to complete", 60_000);
    svc.delete(a.id);
    assert(!fs.existsSync(`${dataDir}/runs/${a.id}`), "not deleted");
    let status = 0;
    try {
      svc.get(a.id);
    } catch (e) {
      status = (e as { status: number }).status;
    }
    assert(status === 404, `deleted run gives ${status}`);
  } finally {
    await svc.stop();
  }
});

fast("service (stand-in trainer): a trainer this server did not start is an orphan, monitored and abortable; restart re-attaches", async () => {
  const dataDir = fs.mkdtempSync("/tmp/gt-svcf-");
  const svc = fakeService(dataDir);
  const { createRun } = await import("../trainer/run_dir.ts");
  const { spawnWorker } = await import("../trainer/process.ts");
  const runDir = createRun(cfg("outside", 1000), dataDir);
  const id = runDir.split("/").at(-1)!;
  // Started by "someone else" (another server, or the CLI), with a long run.
  const pid = spawnWorker(runDir, {
    cmd: "/usr/bin/env",
    args: ["FAKE_STEPS=1000", "FAKE_STEP_MS=50", Deno.execPath(), "run", "-A", "--no-check", "--config", DENO_JSON, `${dataDir}/fake_trainer.ts`, "train", "--run", runDir],
  });
  // What the real trainer writes first; from here on the run is not queued, so this server must not start it.
  (await import("../trainer/run_dir.ts")).writeStatus(runDir, { state: "initializing", message: "Loading", step: 0, totalSteps: 1000, epoch: 0, pid });
  try {
    const v = await until(svc, id, (x) => x.status.state === "training" && x.trainLoss !== undefined, "the outside trainer to train", 30_000);
    assert(v.orphan, "not shown as an orphan");
    const second = new TrainingService(dataDir, { intervalMs: 0 });
    second.reconcile(0);
    assert(second.get(id).orphan && second.get(id).status.state === "training", "a restarted server did not re-attach");
    await second.stop();
    const st = await svc.abort(id);
    assert(st.state === "aborted", `abort by pid ended ${st.state}`);
    assert(readLock(dataDir) === null, "the lock is still there");
    assert(!svc.get(id).orphan, "an aborted run is still an orphan");
  } finally {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch { /* already gone */ }
    await svc.stop();
  }
});

fast("service: a lock whose pid is dead, or reused by another program, fails the run with stderr and is never signalled", async () => {
  const { createRun } = await import("../trainer/run_dir.ts");
  const { writeStatus, readStatus } = await import("../trainer/run_dir.ts");
  const { isPidAlive } = await import("../trainer/lock.ts");
  const dataDir = fs.mkdtempSync("/tmp/gt-svcf-");
  // Some unrelated program now has the pid the lock names.
  const other = new Deno.Command("sleep", { args: ["30"], stdout: "null", stderr: "null" }).spawn();
  const svc = fakeService(dataDir);
  try {
    const reused = createRun(cfg("reused", 10), dataDir);
    const dead = createRun(cfg("dead", 10), dataDir);
    for (const [dir, pid] of [[reused, other.pid], [dead, 999_999_999]] as const) {
      writeStatus(dir, { state: "training", message: "Training", step: 3, totalSteps: 10, epoch: 0, pid });
      fs.writeFileSync(`${dir}/trainer_stderr.log`, "loading model\nError: onnxruntime: out of memory\nSegmentation fault");
    }
    fs.writeFileSync(
      `${dataDir}/.training.lock`,
      JSON.stringify({ pid: other.pid, runId: reused.split("/").at(-1), startedAt: "", hostname: (await import("node:os")).hostname() }),
    );
    svc.reconcile(0);
    for (const dir of [reused, dead]) {
      const st = readStatus(dir)!;
      assert(st.state === "failed" && /ended unexpectedly/.test(st.message), `${dir}: ${st.state} ${st.message}`);
      assert(st.error?.includes("Error: onnxruntime: out of memory") && st.error.endsWith("Segmentation fault"), `stderr tail missing: ${st.error}`);
    }
    assert(readLock(dataDir) === null, "the stale lock was not cleared");
    assert(isPidAlive(other.pid), "an unrelated process was signalled");
    assert(!svc.get(reused.split("/").at(-1)!).orphan, "shown as an orphan");
  } finally {
    other.kill("SIGKILL");
    await other.status;
    await svc.stop();
  }
});

fast("service: restart a failed run without a checkpoint; resume refused without one; unsafe ids are 404", async () => {
  const { createRun } = await import("../trainer/run_dir.ts");
  const { writeStatus } = await import("../trainer/run_dir.ts");
  const dataDir = fs.mkdtempSync("/tmp/gt-svcf-");
  const svc = fakeService(dataDir, { FAKE_STEPS: "2", FAKE_STEP_MS: "10" });
  try {
    const dir = createRun(cfg("again", 2), dataDir);
    const id = dir.split("/").at(-1)!;
    writeStatus(dir, { state: "failed", message: "Trainer process ended unexpectedly", step: 1, totalSteps: 2, epoch: 0, pid: 0, error: "boom" });
    let msg = "";
    try {
      svc.resume(id);
    } catch (e) {
      msg = (e as Error).message;
    }
    assert(/no checkpoint/.test(msg), msg);
    svc.restart(id);
    await until(svc, id, (v) => v.status.state === "completed", "the restarted run to complete", 30_000);
    for (const bad of ["../etc", "..", "a/b", "%2e%2e", ".hidden", "x".repeat(200)]) {
      let status = 0;
      try {
        svc.runDir(bad);
      } catch (e) {
        status = (e as { status: number }).status;
      }
      assert(status === 404, `"${bad}" gave ${status}`);
    }
    // The SQLite copy is rebuilt from the run directories when it is lost.
    await svc.stop();
    fs.rmSync(`${dataDir}/gemma-tuner.db`);
    const fresh = new TrainingService(dataDir, { intervalMs: 0 });
    fresh.reconcile(0);
    const rows = fresh.store.list();
    assert(rows.length === 1 && rows[0].id === id && rows[0].state === "completed" && rows[0].trainLoss === 1.5, JSON.stringify(rows));
    await fresh.stop();
  } finally {
    await svc.stop().catch(() => {});
  }
});
