/**
 * TrainingService with real trainer processes on the demo model: queue, abort, resume, completion,
 * and the orphan cases (server restarted mid-run re-attaches; a killed worker shows failed and resumes).
 */
import * as fs from "node:fs";
import { TrainingService } from "../trainer/service.ts";
import { parseRunConfig } from "../config/training.ts";
import { readLock } from "../trainer/lock.ts";

function assert(cond: unknown, msg: string) {
  if (!cond) throw new Error(msg);
}

const cfg = (name: string, steps: number) =>
  parseRunConfig({ name, model: "demo", dataset: { path: "sample" }, maxSteps: steps, batchSize: 4, learningRate: 0.005, warmupSteps: 1, evalEvery: 0, saveEvery: 5, maxLength: 64 });

async function until(svc: TrainingService, id: string, pred: (s: ReturnType<TrainingService["get"]>) => boolean, what: string, ms = 180_000) {
  const deadline = Date.now() + ms;
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
