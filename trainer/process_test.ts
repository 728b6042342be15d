import { deepStrictEqual as eq, ok } from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { findOnPath, spawnWorker, STDERR_LOG, STDOUT_LOG, stopProcess, TensorBoard } from "./process.ts";
import { isPidAlive, isTrainerPid } from "./lock.ts";
import { TIMEOUTS, waitFor as waitUntil } from "../tests/_timeouts.ts";

const tmp = () => fs.mkdtempSync(path.join(Deno.env.get("TMPDIR") ?? "/tmp", "gt-proc-"));
const waitFor = (pred: () => boolean, what: string) => waitUntil(what, pred, TIMEOUTS.request);

/** Field `n` (1-based, as in proc(5)) of /proc/<pid>/stat. */
function statField(pid: number, n: number): number {
  const s = Deno.readTextFileSync(`/proc/${pid}/stat`);
  return Number(s.slice(s.lastIndexOf(")") + 2).split(" ")[n - 3]);
}

const onLinux = Deno.build.os === "linux";

Deno.test({
  name: "process: the trainer runs detached in its own session with stdout/stderr in the run's log files",
  ignore: !onLinux,
  fn: async () => {
    const dir = tmp();
    // A stand-in trainer: prints to both streams, then dies the way a native crash would (no JS cleanup).
    const script = path.join(dir, "fake.sh");
    fs.writeFileSync(
      script,
      'echo "step 1 | loss 2.0"\necho "Error: boom" >&2\nsleep 0.3\nkill -SEGV $$\n',
    );
    const pid = spawnWorker(dir, {
      cmd: "/bin/sh",
      args: [script, "train", "--run", dir],
    });
    ok(pid > 0);
    ok(isTrainerPid(pid), "a live trainer is recognised by its command line");
    eq(
      statField(pid, 6),
      pid,
      "not the leader of its own session (it would die with the server's terminal)",
    );
    ok(statField(pid, 6) !== statField(Deno.pid, 6));
    await waitFor(() => !isPidAlive(pid), "the stand-in to crash");
    eq(
      fs.readFileSync(path.join(dir, STDOUT_LOG), "utf8"),
      "step 1 | loss 2.0\n",
    );
    eq(fs.readFileSync(path.join(dir, STDERR_LOG), "utf8"), "Error: boom\n");
    ok(!isTrainerPid(pid), "a dead pid is no trainer");
    fs.rmSync(dir, { recursive: true });
  },
});

Deno.test({
  name: "process: stopProcess sends SIGTERM and escalates to SIGKILL after the grace period",
  ignore: !onLinux,
  fn: async () => {
    const dir = tmp();
    const polite = spawnWorker(dir, {
      cmd: "/bin/sh",
      args: ["-c", "exec sleep 30", "sh"],
    });
    await waitFor(() => isPidAlive(polite), "start");
    eq(await stopProcess(polite, 5000), "terminated");
    // This one ignores SIGTERM (like a trainer stuck in a native call); it writes a ready file once the
    // trap is set, so the SIGTERM below cannot arrive before it.
    const ready = path.join(dir, "trap-set");
    const stubborn = spawnWorker(dir, {
      cmd: "/bin/sh",
      args: ["-c", `trap '' TERM; : > "${ready}"; while :; do sleep 0.1; done`, "sh"],
    });
    await waitFor(() => fs.existsSync(ready), "the TERM trap");
    const t = Date.now();
    eq(await stopProcess(stubborn, 600), "killed");
    ok(Date.now() - t >= 600, "killed before the grace period ended");
    ok(!isPidAlive(stubborn));
    eq(await stopProcess(stubborn, 100), "gone");
    ok(!isTrainerPid(Deno.pid), "the test runner is not a trainer");
    fs.rmSync(dir, { recursive: true });
  },
});

Deno.test({
  name: "process: TensorBoard starts managed on a free port when on PATH, else gives the command",
  ignore: !onLinux,
  fn: async () => {
    const dir = tmp();
    const runs = path.join(dir, "runs");
    const none = new TensorBoard(runs, {
      pathEnv: path.join(dir, "empty-bin"),
    });
    const info = none.ensure();
    ok(
      !info.running && info.command.includes(`--logdir "${runs}"`) &&
        /not on PATH/.test(info.reason),
    );

    // A stand-in `tensorboard` that records its arguments and stays up like the real one.
    const bin = path.join(dir, "bin");
    fs.mkdirSync(bin);
    const argsFile = path.join(dir, "args.txt");
    fs.writeFileSync(
      path.join(bin, "tensorboard"),
      `#!/bin/sh\necho "$@" > "${argsFile}"\nexec sleep 60\n`,
      { mode: 0o755 },
    );
    eq(
      findOnPath("tensorboard", `/nonexistent${path.delimiter}${bin}`),
      path.join(bin, "tensorboard"),
    );
    const tb = new TensorBoard(runs, { pathEnv: bin });
    const a = tb.ensure();
    ok(a.running, "not started");
    const port = Number(new URL(a.url).port);
    ok(port > 0 && a.url.startsWith("http://127.0.0.1:"));
    await waitFor(
      () =>
        fs.existsSync(argsFile) &&
        fs.readFileSync(argsFile, "utf8").includes("--port"),
      "tensorboard to start",
    );
    eq(
      fs.readFileSync(argsFile, "utf8").trim(),
      `--logdir ${runs} --host 127.0.0.1 --port ${port}`,
    );
    eq(tb.ensure(), a, "a second request starts a second TensorBoard");
    await tb.stop();
    ok(!isPidAlive(a.pid), "TensorBoard outlived the server");
    fs.rmSync(dir, { recursive: true });
  },
});
