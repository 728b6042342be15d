import { deepStrictEqual as eq, ok } from "node:assert/strict";
import { join } from "node:path";
import { readStatus, updateStatus, writeStatus } from "./run_dir.ts";
import { TIMEOUTS } from "../tests/_timeouts.ts";
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

// Two processes bump different fields of one status.json at once, each by read-modify-write through
// updateStatus; without its lock one side's write would carry the other's old value back.
const BUMPER = `
import { updateStatus } from "${new URL("./run_dir.ts", import.meta.url).href}";
const [dir, field, n] = Deno.args;
for (let i = 0; i < Number(n); i++) updateStatus(dir, (prev) => ({ [field]: prev[field] + 1 }));
`;

Deno.test({
  name: "updateStatus: concurrent writers in two processes lose no field",
  sanitizeResources: false,
  fn: async () => {
    const dir = Deno.makeTempDirSync();
    try {
      writeStatus(dir, { state: "training", message: "Training", step: 0, totalSteps: 0, epoch: 0, pid: Deno.pid });
      const script = join(dir, "bump.ts");
      Deno.writeTextFileSync(script, BUMPER);
      const n = 150;
      const config = new URL("../deno.json", import.meta.url).pathname;
      const children = ["step", "totalSteps"].map((field) =>
        new Deno.Command(Deno.execPath(), { args: ["run", "-A", "--config", config, script, dir, field, String(n)], stdout: "inherit", stderr: "inherit" }).spawn()
      );
      const timer = setTimeout(() => children.forEach((c) => c.kill("SIGKILL")), TIMEOUTS.process);
      const codes = await Promise.all(children.map((c) => c.status.then((s) => s.code)));
      clearTimeout(timer);
      eq(codes, [0, 0]);
      const s = readStatus(dir)!;
      eq([s.step, s.totalSteps, s.state, s.message], [n, n, "training", "Training"]);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test("updateStatus: a transition that no longer holds leaves the file alone", () => {
  const dir = Deno.makeTempDirSync();
  try {
    writeStatus(dir, { state: "completed", message: "Completed 3 steps", step: 3, totalSteps: 3, epoch: 1, pid: 42 });
    const before = Deno.readTextFileSync(join(dir, "status.json"));
    // The server saw "training" with a dead pid, but the worker finished first.
    const out = updateStatus(dir, (prev) => prev?.state === "training" ? { state: "failed", message: "Trainer process ended unexpectedly" } : null);
    eq(out, null);
    eq(Deno.readTextFileSync(join(dir, "status.json")), before);
    const patched = updateStatus(dir, () => ({ message: "Completed", error: undefined }))!;
    eq([patched.state, patched.step, patched.message, "error" in patched], ["completed", 3, "Completed", false]);
    let threw = "";
    const empty = Deno.makeTempDirSync();
    try {
      updateStatus(empty, () => ({ state: "queued" }));
    } catch (e) {
      threw = (e as Error).message;
    } finally {
      Deno.removeSync(empty, { recursive: true });
    }
    ok(threw.includes("the first status needs message, step, totalSteps, epoch, pid"), threw);
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
