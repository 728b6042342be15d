/**
 * `.training.lock` in the data dir: one training process per data directory. The lock is created
 * exclusively (O_EXCL), names its holder, and carries a heartbeat the holder refreshes every
 * LOCK_HEARTBEAT_MS from a worker thread (a training step blocks the main thread: docs/ORT.md).
 *
 * A lock is stale, and the next trainer replaces it with a note in its status.log, when
 * - its owner is dead on this host (or the pid now belongs to a program that is no trainer), or
 * - its heartbeat is older than LOCK_STALE_MS, on any host: a container restarted under a new
 *   hostname, or a machine that went away, cannot keep a shared data dir's queue blocked.
 * A lock from another host with a fresh heartbeat is live: its pid cannot be checked from here.
 */
import { hostname } from "node:os";
import { join } from "node:path";

export interface LockInfo {
  pid: number;
  runId: string;
  startedAt: string;
  hostname: string;
  /** ISO 8601 time of the holder's last heartbeat ("" in a lock written before heartbeats). */
  heartbeatAt: string;
}

export const LOCK_FILE = ".training.lock";

/** How often the holder refreshes `heartbeatAt` (default; GEMMA_TUNER_LOCK_HEARTBEAT_MS overrides it). */
export const LOCK_HEARTBEAT_MS = 10_000;

/** The documented limit: a heartbeat older than this makes the lock stale wherever it was written. */
export const LOCK_STALE_MS = 120_000;

export function lockPath(dataDir: string): string {
  return join(dataDir, LOCK_FILE);
}

/** The refresh interval: the default, or the environment's (for tests), never above a quarter of the limit. */
export function heartbeatIntervalMs(): number {
  const raw = Number(Deno.env.get("GEMMA_TUNER_LOCK_HEARTBEAT_MS") ?? "");
  const ms = Number.isFinite(raw) && raw >= 50 ? raw : LOCK_HEARTBEAT_MS;
  return Math.min(ms, LOCK_STALE_MS / 4);
}

function parseLock(text: string): LockInfo {
  try {
    const j = JSON.parse(text);
    return {
      pid: Number(j.pid) || 0,
      runId: String(j.runId ?? ""),
      startedAt: String(j.startedAt ?? ""),
      hostname: String(j.hostname ?? ""),
      heartbeatAt: String(j.heartbeatAt ?? ""),
    };
  } catch {
    return { pid: 0, runId: "", startedAt: "", hostname: "", heartbeatAt: "" };
  }
}

/** The lock's contents, or null when there is no lock. An unreadable lock reads as pid 0 (stale). */
export function readLock(dataDir: string): LockInfo | null {
  try {
    return parseLock(Deno.readTextFileSync(lockPath(dataDir)));
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
}

/** Whether process `pid` exists on this machine and is not a zombie. */
export function isPidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  if (Deno.build.os === "linux") {
    try {
      const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
      // state is the field after the parenthesised command name
      const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
      return state !== "Z" && state !== "X";
    } catch {
      return false;
    }
  }
  try {
    const cmd = Deno.build.os === "windows"
      ? new Deno.Command("tasklist", { args: ["/FI", `PID eq ${pid}`, "/NH"], stdout: "piped", stderr: "null" })
      : new Deno.Command("kill", { args: ["-0", String(pid)], stdout: "null", stderr: "null" });
    const out = cmd.outputSync();
    if (Deno.build.os === "windows") return new TextDecoder().decode(out.stdout).includes(String(pid));
    return out.success;
  } catch {
    return false;
  }
}

/**
 * Whether `pid` is a gemma-tuner trainer (`… train …` on its command line). A lock can outlive its
 * process and the pid be reused by something else; that process must never be shown as a run or
 * signalled. Where the command line cannot be read (not Linux), a live pid is taken as the trainer.
 */
export function isTrainerPid(pid: number): boolean {
  if (!isPidAlive(pid)) return false;
  if (Deno.build.os !== "linux") return true;
  try {
    const cmdline = Deno.readTextFileSync(`/proc/${pid}/cmdline`);
    // Empty while the process is between fork and exec (just spawned): a live pid, so take it as ours.
    if (cmdline === "") return true;
    return cmdline.split("\0").includes("train");
  } catch {
    return false;
  }
}

function onThisHost(info: LockInfo): boolean {
  return !info.hostname || info.hostname === hostname();
}

/** Seconds since the lock's heartbeat (its start time for a lock without one), or null when it names no time. */
export function heartbeatAgeSeconds(info: LockInfo, now = Date.now()): number | null {
  const t = Date.parse(info.heartbeatAt || info.startedAt);
  return Number.isFinite(t) ? Math.max(0, Math.round((now - t) / 1000)) : null;
}

/**
 * Why a lock is stale, in words for status.log, or null when its holder is live. `ownerAlive` decides
 * for a pid on this host (default: a live trainer process).
 */
export function lockStaleness(info: LockInfo, opts: { ownerAlive?: (pid: number) => boolean; now?: number } = {}): string | null {
  const now = opts.now ?? Date.now();
  const here = onThisHost(info);
  if (here && !(opts.ownerAlive ?? isTrainerPid)(info.pid)) {
    return info.pid > 0 ? `its process (pid ${info.pid} on this host) is gone` : "it cannot be read";
  }
  const beat = Date.parse(info.heartbeatAt);
  if (Number.isFinite(beat)) {
    if (now - beat > LOCK_STALE_MS) return `its heartbeat is ${Math.round((now - beat) / 1000)} s old (the limit is ${LOCK_STALE_MS / 1000} s)`;
    return null;
  }
  // Written before heartbeats: on this host the live pid decides; from another host the start time.
  if (here) return null;
  const started = Date.parse(info.startedAt);
  if (!Number.isFinite(started)) return `it comes from host "${info.hostname}" and carries no heartbeat`;
  if (now - started > LOCK_STALE_MS) return `it comes from host "${info.hostname}", carries no heartbeat and is ${Math.round((now - started) / 1000)} s old`;
  return null;
}

/** A lock held by a live holder (see lockStaleness). */
export function isLockLive(info: LockInfo): boolean {
  return lockStaleness(info) === null;
}

/** What a refusal says about the holder: run, pid, host, heartbeat age and when it goes stale. */
export function describeHolder(info: LockInfo, now = Date.now()): string {
  const age = heartbeatAgeSeconds(info, now);
  const host = onThisHost(info) ? "this host" : `host "${info.hostname}"`;
  const beat = info.heartbeatAt ? `heartbeat ${age} s ago` : age === null ? "no heartbeat" : `no heartbeat, started ${age} s ago`;
  return `run ${info.runId || "unknown"}, pid ${info.pid} on ${host}, ${beat}`;
}

export type AcquireResult =
  | { ok: true; info: LockInfo; replacedStale?: LockInfo; staleReason?: string }
  | { ok: false; holder: LockInfo };

function sameLock(a: LockInfo, b: LockInfo): boolean {
  return a.pid === b.pid && a.runId === b.runId && a.hostname === b.hostname && a.startedAt === b.startedAt && a.heartbeatAt === b.heartbeatAt;
}

/**
 * Takes the lock for `runId` (this process), replacing a stale one. Returns the live holder when
 * another training process has it.
 */
export function acquireLock(dataDir: string, runId: string, pid = Deno.pid): AcquireResult {
  const now = new Date().toISOString();
  const info: LockInfo = { pid, runId, startedAt: now, hostname: hostname(), heartbeatAt: now };
  let replaced: { holder: LockInfo; reason: string } | undefined;
  const file = lockPath(dataDir);
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const f = Deno.openSync(file, { write: true, createNew: true });
      f.writeSync(new TextEncoder().encode(JSON.stringify(info) + "\n"));
      f.close();
      return replaced ? { ok: true, info, replacedStale: replaced.holder, staleReason: replaced.reason } : { ok: true, info };
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
    }
    const holder = readLock(dataDir);
    if (!holder) continue; // released between our attempt and the read
    if (holder.pid === pid && holder.hostname === info.hostname) {
      // our own lock (a re-entrant acquire by the same process): refresh it
      Deno.writeTextFileSync(file, JSON.stringify(info) + "\n");
      return { ok: true, info };
    }
    const reason = lockStaleness(holder);
    if (reason === null) return { ok: false, holder };
    if (removeStaleLock(dataDir, holder, `${pid}-${attempt}`)) replaced = { holder, reason };
  }
  const holder = readLock(dataDir);
  return { ok: false, holder: holder ?? info };
}

/**
 * Removes the lock if it is still exactly `stale` (the one judged stale): it is moved aside first and
 * checked, so a fresh lock a racing trainer wrote in between is put back, never deleted.
 */
export function removeStaleLock(dataDir: string, stale: LockInfo, tag = String(Deno.pid)): boolean {
  const file = lockPath(dataDir);
  const aside = `${file}.stale-${tag}`;
  try {
    Deno.renameSync(file, aside);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
  const moved = parseLock(Deno.readTextFileSync(aside));
  const same = sameLock(moved, stale);
  if (!same) {
    try {
      Deno.linkSync(aside, file);
    } catch { /* another lock is there already; it wins */ }
  }
  Deno.removeSync(aside);
  return same;
}

/** Removes the lock if `pid` holds it; returns whether it did. */
export function releaseLock(dataDir: string, pid = Deno.pid): boolean {
  const holder = readLock(dataDir);
  if (!holder || holder.pid !== pid || !onThisHost(holder)) return false;
  try {
    Deno.removeSync(lockPath(dataDir));
    return true;
  } catch {
    return false;
  }
}

// The heartbeat runs in a worker thread so a long, blocking training step cannot starve it. The code
// travels as a blob URL: nothing extra to include in the compiled binary.
const HEARTBEAT_WORKER = `
let timer = 0, file = "", mine = null;
const same = (a, b) => a.pid === b.pid && a.runId === b.runId && a.hostname === b.hostname && a.startedAt === b.startedAt;
function beat() {
  let cur;
  try {
    cur = JSON.parse(Deno.readTextFileSync(file));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) { clearInterval(timer); self.postMessage({ type: "lost", holder: null }); return; }
    self.postMessage({ type: "error", message: String(e && e.message || e) });
    return;
  }
  if (!same(cur, mine)) { clearInterval(timer); self.postMessage({ type: "lost", holder: cur }); return; }
  try {
    // temp file + rename: a reader never sees a half-written lock (which would read as stale)
    const tmp = file + ".beat-" + mine.pid;
    Deno.writeTextFileSync(tmp, JSON.stringify({ ...cur, heartbeatAt: new Date().toISOString() }) + "\\n");
    Deno.renameSync(tmp, file);
  } catch (e) {
    self.postMessage({ type: "error", message: String(e && e.message || e) });
  }
}
self.onmessage = (e) => {
  const m = e.data;
  if (m.type === "start") { file = m.file; mine = m.info; timer = setInterval(beat, m.everyMs); }
  else if (m.type === "stop") { clearInterval(timer); self.postMessage({ type: "stopped" }); }
};
`;

export interface Heartbeat {
  /** Stops refreshing; resolves once no write is in flight (so a release after it is final). */
  stop(): Promise<void>;
}

/**
 * Refreshes the lock's `heartbeatAt` every heartbeatIntervalMs() while this process holds it. If the
 * lock disappears or another holder replaces it, `onLost` is told and the heartbeat ends.
 */
export function startHeartbeat(dataDir: string, info: LockInfo, onLost: (why: string) => void = () => {}): Heartbeat {
  const url = URL.createObjectURL(new Blob([HEARTBEAT_WORKER], { type: "application/javascript" }));
  const worker = new Worker(url, { type: "module" });
  URL.revokeObjectURL(url);
  let stopped: (() => void) | null = null;
  let warned = false;
  worker.onmessage = (e: MessageEvent) => {
    const m = e.data as { type: string; holder?: LockInfo | null; message?: string };
    if (m.type === "stopped") stopped?.();
    else if (m.type === "lost") onLost(m.holder ? `the lock now names ${describeHolder(parseLock(JSON.stringify(m.holder)))}` : "the lock file was removed");
    else if (m.type === "error" && !warned) {
      warned = true;
      console.error(`train: cannot refresh the heartbeat of ${lockPath(dataDir)}: ${m.message}`);
    }
  };
  worker.postMessage({ type: "start", file: lockPath(dataDir), info, everyMs: heartbeatIntervalMs() });
  return {
    stop: () =>
      new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(guard);
          worker.terminate();
          resolve();
        };
        // A worker that cannot answer (it never started) must not hold the trainer's exit.
        const guard = setTimeout(done, 5000);
        stopped = done;
        worker.postMessage({ type: "stop" });
      }),
  };
}
