import { deepStrictEqual as eq, ok } from "node:assert/strict";
import { join } from "node:path";
import { readStatus, updateStatus, writeStatus } from "./run_dir.ts";
import { hostname } from "node:os";
import { acquireLock, describeHolder, isPidAlive, isTrainerPid, LOCK_FILE, LOCK_STALE_MS, lockStaleness, readLock, releaseLock, startHeartbeat } from "./lock.ts";
import { TIMEOUTS, waitFor } from "../tests/_timeouts.ts";

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

/** A live process whose command line says "train", as a trainer's does (lock.ts isTrainerPid). */
function fakeTrainer(): Deno.ChildProcess {
  return new Deno.Command("sh", { args: ["-c", "sleep 30; :", "train"], stdout: "null", stderr: "null" }).spawn();
}

function writeLock(dir: string, info: Record<string, unknown>) {
  Deno.writeTextFileSync(join(dir, LOCK_FILE), JSON.stringify(info) + "\n");
}

Deno.test("lock: exclusive, live holder refused, stale replaced, release only by owner", async () => {
  const dir = Deno.makeTempDirSync();
  try {
    eq(isPidAlive(Deno.pid), true);
    const child = fakeTrainer();
    try {
      await waitFor("the stand-in trainer to start", () => isTrainerPid(child.pid));
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
    ok(third.ok && third.replacedStale?.runId === "run-a", JSON.stringify(third));
    ok(third.ok && third.staleReason === `its process (pid ${child.pid} on this host) is gone`, JSON.stringify(third));
    eq(readLock(dir)?.runId, "run-c");
    eq(releaseLock(dir), true);
    eq(readLock(dir), null);
    // A live pid that is no trainer (reused after a crash) does not hold the lock either.
    const other = new Deno.Command("sleep", { args: ["30"] }).spawn();
    try {
      ok(acquireLock(dir, "run-d", other.pid).ok);
      const next = acquireLock(dir, "run-e");
      ok(next.ok && next.replacedStale?.pid === other.pid, JSON.stringify(next));
    } finally {
      other.kill("SIGKILL");
      await other.status;
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("lock from another host: a fresh heartbeat is refused naming host, pid and age; an old one is replaced", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const ago = (s: number) => new Date(Date.now() - s * 1000).toISOString();
    writeLock(dir, { pid: 4242, runId: "remote-run", startedAt: ago(3600), hostname: "box-before-restart", heartbeatAt: ago(5) });
    const refused = acquireLock(dir, "run-a");
    ok(!refused.ok, "a fresh heartbeat from another host must be taken as live");
    const words = describeHolder(refused.holder);
    ok(/^run remote-run, pid 4242 on host "box-before-restart", heartbeat [5-9] s ago$/.test(words), words);
    eq(readLock(dir)?.runId, "remote-run");

    writeLock(dir, { pid: 4242, runId: "remote-run", startedAt: ago(3600), hostname: "box-before-restart", heartbeatAt: ago(LOCK_STALE_MS / 1000 + 60) });
    const took = acquireLock(dir, "run-a");
    ok(took.ok && took.replacedStale?.hostname === "box-before-restart", JSON.stringify(took));
    ok(took.ok && /^its heartbeat is 18\d s old \(the limit is 120 s\)$/.test(took.staleReason ?? ""), JSON.stringify(took));
    eq([readLock(dir)?.runId, readLock(dir)?.hostname], ["run-a", hostname()]);
    eq(releaseLock(dir), true);

    // Written before heartbeats, from another host: its start time stands in for the heartbeat.
    writeLock(dir, { pid: 7, runId: "old", startedAt: ago(600), hostname: "elsewhere" });
    eq(lockStaleness(readLock(dir)!), 'it comes from host "elsewhere", carries no heartbeat and is 600 s old');
    writeLock(dir, { pid: 7, runId: "old", startedAt: ago(10), hostname: "elsewhere" });
    eq(lockStaleness(readLock(dir)!), null);
    // On this host a live trainer whose heartbeat stopped (a frozen process) is stale too.
    writeLock(dir, { pid: Deno.pid, runId: "frozen", startedAt: ago(900), hostname: hostname(), heartbeatAt: ago(900) });
    eq(lockStaleness(readLock(dir)!, { ownerAlive: () => true }), "its heartbeat is 900 s old (the limit is 120 s)");
    // An unreadable lock is stale.
    Deno.writeTextFileSync(join(dir, LOCK_FILE), "{half");
    eq(lockStaleness(readLock(dir)!), "it cannot be read");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("heartbeat: refreshed from a worker thread while held, stopped before release, lost when replaced", async () => {
  const dir = Deno.makeTempDirSync();
  Deno.env.set("GEMMA_TUNER_LOCK_HEARTBEAT_MS", "100");
  try {
    const got = acquireLock(dir, "run-a");
    ok(got.ok);
    const first = readLock(dir)!.heartbeatAt;
    const lost: string[] = [];
    const hb = startHeartbeat(dir, got.info, (why) => lost.push(why));
    // The main thread is blocked here, as during a training step; the heartbeat must still advance.
    const until = Date.now() + 1500;
    while (Date.now() < until) { /* busy */ }
    await waitFor("a heartbeat", () => Date.parse(readLock(dir)!.heartbeatAt) > Date.parse(first));
    await hb.stop();
    const after = readLock(dir)!.heartbeatAt;
    eq(releaseLock(dir), true);
    eq(readLock(dir), null, "a heartbeat re-created the released lock");
    ok(Date.parse(after) >= Date.parse(first));
    eq(lost.length, 0);
    // Another holder replaces the lock: the heartbeat notices and stops writing.
    const again = acquireLock(dir, "run-b");
    ok(again.ok);
    const hb2 = startHeartbeat(dir, again.info, (why) => lost.push(why));
    writeLock(dir, { pid: 999999, runId: "thief", startedAt: new Date().toISOString(), hostname: "other", heartbeatAt: new Date().toISOString() });
    await waitFor("the heartbeat to notice", () => lost.length > 0);
    ok(lost[0].includes('run thief, pid 999999 on host "other"'), lost[0]);
    eq(readLock(dir)?.runId, "thief");
    await hb2.stop();
  } finally {
    Deno.env.delete("GEMMA_TUNER_LOCK_HEARTBEAT_MS");
    Deno.removeSync(dir, { recursive: true });
  }
});
