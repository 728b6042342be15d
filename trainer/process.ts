/**
 * ProcessManager: starts `gemma-tuner train --run DIR` as a detached process that outlives the
 * server, with stdout/stderr appended to the run's log files by the shell (so a native crash's
 * output lands there too); stops processes by pid (SIGTERM, then SIGKILL); and runs a managed
 * TensorBoard for the data dir's runs when `tensorboard` is on PATH.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { findOnPath, selfCommand } from "../config/app.ts";

export { findOnPath };
import { isPidAlive } from "./lock.ts";
import { RUN_FILES } from "./run_dir.ts";

export const STDOUT_LOG = RUN_FILES.stdout;
export const STDERR_LOG = RUN_FILES.stderr;

/**
 * Spawns the trainer for `runDir` detached (its own session) and returns its pid. `command` defaults
 * to this program's `train --run DIR`; tests pass a small script that speaks the same file protocol.
 */
export function spawnWorker(runDir: string, command = selfCommand(["train", "--run", runDir])): number {
  const { cmd, args } = command;
  const isWindows = Deno.build.os === "windows";
  const child = isWindows ? new Deno.Command(cmd, { args, stdin: "null", stdout: "null", stderr: "null", detached: true }).spawn() : new Deno.Command("/bin/sh", {
    // exec keeps the pid: the pid returned here is the trainer's own, the one in its lock file.
    args: ["-c", 'exec "$@" >>"$GT_STDOUT" 2>>"$GT_STDERR" </dev/null', "sh", cmd, ...args],
    env: { GT_STDOUT: path.join(runDir, STDOUT_LOG), GT_STDERR: path.join(runDir, STDERR_LOG) },
    stdin: "null",
    stdout: "null",
    stderr: "null",
    detached: true,
  }).spawn();
  child.unref();
  // Reap the child when it ends so it never lingers as a zombie while this server lives.
  child.status.catch(() => {});
  return child.pid;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** SIGTERM now; SIGKILL after `graceMs` if the process is still there. Resolves when it is gone. */
export async function stopProcess(pid: number, graceMs: number): Promise<"terminated" | "killed" | "gone"> {
  if (!isPidAlive(pid)) return "gone";
  try {
    Deno.kill(pid, "SIGTERM");
  } catch {
    return "gone";
  }
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline) {
    await sleep(Math.min(100, graceMs));
    if (!isPidAlive(pid)) return "terminated";
  }
  try {
    Deno.kill(pid, "SIGKILL");
  } catch {
    return "gone";
  }
  for (let i = 0; i < 50 && isPidAlive(pid); i++) await sleep(100);
  return "killed";
}

/** A free TCP port on loopback (bound, read, released). */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

export type TensorBoardInfo =
  | { running: true; url: string; pid: number; logdir: string }
  | { running: false; command: string; reason: string };

/**
 * One TensorBoard over `<data>/runs` (each run directory shows as a run in it), started on demand on
 * a free loopback port and stopped with the server. Without `tensorboard` on PATH it only says the
 * command to run by hand.
 */
export class TensorBoard {
  private child: Deno.ChildProcess | null = null;
  private info: TensorBoardInfo | null = null;

  constructor(readonly logdir: string, readonly opts: { pathEnv?: string } = {}) {}

  command(port = 6006): string {
    return `tensorboard --logdir "${this.logdir}" --host 127.0.0.1 --port ${port}`;
  }

  /** Starts it if needed; says where it is or what to run instead. */
  ensure(): TensorBoardInfo {
    if (this.info?.running && this.child && isPidAlive(this.child.pid)) return this.info;
    const exe = findOnPath("tensorboard", this.opts.pathEnv);
    if (!exe) return { running: false, command: this.command(), reason: "tensorboard is not on PATH (pip install tensorboard)" };
    const port = freePort();
    fs.mkdirSync(this.logdir, { recursive: true });
    const logFile = path.join(this.logdir, "..", "tensorboard.log");
    const child = new Deno.Command("/bin/sh", {
      args: ["-c", 'exec "$@" >>"$GT_LOG" 2>&1 </dev/null', "sh", exe, "--logdir", this.logdir, "--host", "127.0.0.1", "--port", String(port)],
      env: { GT_LOG: logFile },
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    child.unref();
    child.status.catch(() => {});
    this.child = child;
    this.info = { running: true, url: `http://127.0.0.1:${port}/`, pid: child.pid, logdir: this.logdir };
    return this.info;
  }

  /** Stops the managed TensorBoard (with the server). */
  async stop(): Promise<void> {
    const c = this.child;
    this.child = null;
    this.info = null;
    if (c) await stopProcess(c.pid, 3000);
  }
}
