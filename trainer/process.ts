/**
 * ProcessManager: starts `gemma-tuner train --run DIR` as a detached process that outlives the
 * server, with stdout/stderr appended to the run's log files by the shell (so a native crash's
 * output lands there too).
 */
import * as path from "node:path";
import { selfCommand } from "../config/app.ts";
import { isPidAlive } from "./lock.ts";

export const STDOUT_LOG = "trainer_stdout.log";
export const STDERR_LOG = "trainer_stderr.log";

export function spawnWorker(runDir: string): number {
  const { cmd, args } = selfCommand(["train", "--run", runDir]);
  const isWindows = Deno.build.os === "windows";
  const command = isWindows
    ? new Deno.Command(cmd, { args, stdin: "null", stdout: "null", stderr: "null", detached: true })
    : new Deno.Command("/bin/sh", {
      args: ["-c", 'exec "$@" >>"$GT_STDOUT" 2>>"$GT_STDERR" </dev/null', "sh", cmd, ...args],
      env: { GT_STDOUT: path.join(runDir, STDOUT_LOG), GT_STDERR: path.join(runDir, STDERR_LOG) },
      stdin: "null",
      stdout: "null",
      stderr: "null",
      detached: true,
    });
  const child = command.spawn();
  child.unref();
  // Reap the child when it ends so it never lingers as a zombie while this server lives.
  child.status.catch(() => {});
  return child.pid;
}

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
    await new Promise((r) => setTimeout(r, 100));
    if (!isPidAlive(pid)) return "terminated";
  }
  try {
    Deno.kill(pid, "SIGKILL");
  } catch {
    return "gone";
  }
  for (let i = 0; i < 50 && isPidAlive(pid); i++) await new Promise((r) => setTimeout(r, 100));
  return "killed";
}
