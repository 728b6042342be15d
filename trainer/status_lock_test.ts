import { deepStrictEqual as eq, ok } from "node:assert/strict";
import { join } from "node:path";
import { readStatus, writeStatus } from "./run_dir.ts";
import { acquireLock, isPidAlive, readLock, releaseLock } from "./lock.ts";

Deno.test("writeStatus is atomic, readable and logs one line per change", () => {
  const dir = Deno.makeTempDirSync();
  try {
    eq(readStatus(dir), null);
    const base = { step: 0, totalSteps: 10, epoch: 0, pid: Deno.pid };
    writeStatus(dir, { ...base, state: "initializing", message: "Loading model" });
    writeStatus(dir, { ...base, state: "training", message: "Training", step: 1 });
    writeStatus(dir, { ...base, state: "training", message: "Training", step: 2 });
    writeStatus(dir, { ...base, state: "failed", message: "Training failed", step: 2, error: "boom" });
    const s = readStatus(dir)!;
    eq([s.state, s.step, s.error], ["failed", 2, "boom"]);
    ok(!Number.isNaN(Date.parse(s.updatedAt)));
    const log = Deno.readTextFileSync(join(dir, "status.log")).trim().split("\n");
    eq(log.length, 3);
    ok(log[2].includes("[failed] Training failed: boom"), log[2]);
    eq([...Deno.readDirSync(dir)].map((e) => e.name).sort(), ["status.json", "status.log"]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("lock: exclusive, live holder refused, stale replaced, release only by owner", async () => {
  const dir = Deno.makeTempDirSync();
  try {
    eq(isPidAlive(Deno.pid), true);
    const child = new Deno.Command("sleep", { args: ["30"] }).spawn();
    try {
      const first = acquireLock(dir, "run-a", child.pid);
      ok(first.ok);
      const second = acquireLock(dir, "run-b");
      ok(!second.ok && second.holder.runId === "run-a" && second.holder.pid === child.pid);
      eq(releaseLock(dir), false); // not ours
    } finally {
      child.kill("SIGKILL");
      await child.status;
    }
    eq(isPidAlive(child.pid), false);
    const third = acquireLock(dir, "run-c");
    ok(third.ok && third.replacedStale?.runId === "run-a");
    eq(readLock(dir)?.runId, "run-c");
    eq(releaseLock(dir), true);
    eq(readLock(dir), null);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
