/**
 * Export jobs of the app: one at a time, each a subprocess of this program's `export` verb
 * (cli/export.ts with --progress), so a GGUF of gigabytes or a llama.cpp verification never holds
 * the server's event loop. The job reads the child's JSON progress lines (stderr) and its result line
 * (stdout); files land in `<data>/exports/<id>/files`, with the child's log beside them.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { ExportProgress } from "./run.ts";

export const EXPORT_KINDS = ["adapter", "merged", "gguf", "lora-gguf", "onnx"] as const;
export type ExportKind = typeof EXPORT_KINDS[number];
/** gguf.ts QUANTS, repeated so the server lists them without loading the model code (a test keeps them equal). */
export const EXPORT_QUANTS = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_k_m"] as const;

export interface ExportJobSpec {
  /** A run's checkpoint (`--run DIR --checkpoint NAME`) or a model directory / "demo" (`--model`). */
  source: { run: string; checkpoint: string } | { model: string };
  kind: ExportKind;
  quant?: string;
  /** What the UI calls the model ("my-run: final"). */
  label: string;
}

export interface ExportJob {
  id: string;
  label: string;
  kind: ExportKind;
  quant?: string;
  state: "running" | "done" | "failed";
  startedAt: number;
  finishedAt?: number;
  progress: ExportProgress | null;
  /** The CLI's result line (files, verification) once the child has printed it. */
  result?: Record<string, unknown>;
  /** Why it failed, in the child's words. */
  error?: string;
  dir: string;
  filesDir: string;
}

/** Refused: another export is running (the app runs one at a time). */
export class ExportBusyError extends Error {
  override name = "ExportBusyError";
}

export type ExportCommand = (args: string[]) => { cmd: string; args: string[] };

export class ExportJobs {
  private jobs = new Map<string, ExportJob>();
  private seq = 0;

  constructor(readonly dataDir: string, private readonly command: ExportCommand) {}

  get root(): string {
    return path.join(this.dataDir, "exports");
  }

  list(): ExportJob[] {
    return [...this.jobs.values()].sort((a, b) => b.startedAt - a.startedAt);
  }

  get(id: string): ExportJob | undefined {
    return this.jobs.get(id);
  }

  running(): ExportJob | undefined {
    return this.list().find((j) => j.state === "running");
  }

  /** Starts the export in a child process and returns at once. */
  start(spec: ExportJobSpec): ExportJob {
    const busy = this.running();
    if (busy) throw new ExportBusyError(`An export is running (${busy.label}, ${busy.kind}); wait for it to finish, then start this one`);
    const stamp = new Date().toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
    const id = `${stamp}-${++this.seq}-${spec.kind}`;
    const dir = path.join(this.root, id);
    const filesDir = path.join(dir, "files");
    fs.mkdirSync(dir, { recursive: true });
    const job: ExportJob = {
      id,
      label: spec.label,
      kind: spec.kind,
      quant: spec.kind === "gguf" ? spec.quant ?? "f32" : undefined,
      state: "running",
      startedAt: Date.now(),
      progress: { phase: "loading", message: "starting" },
      dir,
      filesDir,
    };
    this.jobs.set(id, job);
    const src = "run" in spec.source ? ["--run", spec.source.run, "--checkpoint", spec.source.checkpoint] : ["--model", spec.source.model];
    const args = ["export", ...src, `--${spec.kind}`, ...(job.quant ? ["--quant", job.quant] : []), "--out", filesDir, "--data", this.dataDir, "--progress"];
    const { cmd, args: full } = this.command(args);
    fs.writeFileSync(path.join(dir, "command.json"), JSON.stringify({ cmd, args: full }) + "\n");
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command(cmd, { args: full, stdin: "null", stdout: "piped", stderr: "piped" }).spawn();
    } catch (e) {
      Object.assign(job, { state: "failed", error: `Cannot start the export: ${(e as Error).message}`, finishedAt: Date.now() });
      return job;
    }
    void this.follow(job, child);
    return job;
  }

  private async follow(job: ExportJob, child: Deno.ChildProcess): Promise<void> {
    const log = fs.openSync(path.join(job.dir, "export.log"), "a");
    const errors: string[] = [];
    const stderr = lines(child.stderr, (line) => {
      fs.writeSync(log, line + "\n");
      if (line.startsWith('{"progress":')) {
        try {
          job.progress = JSON.parse(line).progress;
          return;
        } catch { /* not ours: keep it as text */ }
      }
      if (line.trim()) errors.push(line), errors.length > 20 && errors.shift();
    });
    let last = "";
    const stdout = lines(child.stdout, (line) => {
      fs.writeSync(log, line + "\n");
      if (line.trim()) last = line;
    });
    const [status] = await Promise.all([child.status, stderr, stdout]);
    fs.closeSync(log);
    try {
      job.result = JSON.parse(last);
    } catch { /* no result line: the child failed before it */ }
    job.finishedAt = Date.now();
    job.state = status.success ? "done" : "failed";
    if (!status.success) {
      const msg = errors.filter((l) => !l.includes("warning:")).at(-1) ?? errors.at(-1);
      job.error = msg ? msg.replace(/^gemma-tuner export: /, "") : `The export process exited with code ${status.code}`;
    }
  }

  /**
   * The job's files (paths relative to its folder, e.g. "onnx/model.onnx") with their sizes: what has
   * been written so far while it runs, partial files included.
   */
  files(job: ExportJob): { name: string; bytes: number }[] {
    const out: { name: string; bytes: number }[] = [];
    const walk = (rel: string) => {
      let names: string[];
      try {
        names = fs.readdirSync(path.join(job.filesDir, rel)).sort();
      } catch {
        return;
      }
      for (const n of names) {
        const r = rel ? `${rel}/${n}` : n;
        const st = fs.statSync(path.join(job.filesDir, r), { throwIfNoEntry: false });
        if (st?.isDirectory()) walk(r);
        else if (st?.isFile()) out.push({ name: r, bytes: st.size });
      }
    };
    walk("");
    return out;
  }

  /** A finished file of the job by its relative name (one of `files`), or null. */
  file(job: ExportJob, name: string): { path: string; bytes: number } | null {
    if (job.state !== "done" && job.state !== "failed") return null;
    const f = this.files(job).find((x) => x.name === name && !/\.(partial|tmp-\d+)$/.test(x.name));
    return f ? { path: path.join(job.filesDir, f.name), bytes: f.bytes } : null;
  }
}

/** Calls `each` for every line of a byte stream. */
async function lines(stream: ReadableStream<Uint8Array>, each: (line: string) => void): Promise<void> {
  let buf = "";
  const dec = new TextDecoder();
  for await (const chunk of stream) {
    buf += dec.decode(chunk, { stream: true });
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) (each(buf.slice(0, nl)), buf = buf.slice(nl + 1));
  }
  if (buf) each(buf);
}
