/**
 * `.training.lock` in the data dir: one training process per data directory. The lock is created
 * exclusively (O_EXCL) and names its holder; a lock whose process is gone is stale and may be replaced.
 */
import { hostname } from "node:os";
import { join } from "node:path";

export interface LockInfo {
  pid: number;
  runId: string;
  startedAt: string;
  hostname: string;
}

export const LOCK_FILE = ".training.lock";

export function lockPath(dataDir: string): string {
  return join(dataDir, LOCK_FILE);
}

/** The lock's contents, or null when there is no lock. An unreadable lock reads as pid 0 (stale). */
export function readLock(dataDir: string): LockInfo | null {
  let text: string;
  try {
    text = Deno.readTextFileSync(lockPath(dataDir));
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
  try {
    const j = JSON.parse(text);
    return { pid: Number(j.pid) || 0, runId: String(j.runId ?? ""), startedAt: String(j.startedAt ?? ""), hostname: String(j.hostname ?? "") };
  } catch {
    return { pid: 0, runId: "", startedAt: "", hostname: "" };
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

/** A lock held by a live process on this host (a lock from another host is taken as live). */
export function isLockLive(info: LockInfo): boolean {
  if (info.hostname && info.hostname !== hostname()) return true;
  return isPidAlive(info.pid);
}

export type AcquireResult =
  | { ok: true; info: LockInfo; replacedStale?: LockInfo }
  | { ok: false; holder: LockInfo };

/**
 * Takes the lock for `runId` (this process), replacing a stale one. Returns the live holder when
 * another training process has it.
 */
export function acquireLock(dataDir: string, runId: string, pid = Deno.pid): AcquireResult {
  const info: LockInfo = { pid, runId, startedAt: new Date().toISOString(), hostname: hostname() };
  let replacedStale: LockInfo | undefined;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const f = Deno.openSync(lockPath(dataDir), { write: true, createNew: true });
      f.writeSync(new TextEncoder().encode(JSON.stringify(info) + "\n"));
      f.close();
      return replacedStale ? { ok: true, info, replacedStale } : { ok: true, info };
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
    }
    const holder = readLock(dataDir);
    if (!holder) continue; // released between our attempt and the read
    if (holder.pid === pid && holder.hostname === info.hostname) {
      // our own lock (a re-entrant acquire by the same process): refresh it
      Deno.writeTextFileSync(lockPath(dataDir), JSON.stringify(info) + "\n");
      return { ok: true, info };
    }
    if (isLockLive(holder)) return { ok: false, holder };
    replacedStale = holder;
    try {
      Deno.removeSync(lockPath(dataDir));
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
  }
  const holder = readLock(dataDir);
  return { ok: false, holder: holder ?? info };
}

/** Removes the lock if `pid` holds it; returns whether it did. */
export function releaseLock(dataDir: string, pid = Deno.pid): boolean {
  const holder = readLock(dataDir);
  if (!holder || holder.pid !== pid) return false;
  try {
    Deno.removeSync(lockPath(dataDir));
    return true;
  } catch {
    return false;
  }
}
