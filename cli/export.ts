/**
 * `gemma-tuner export`: a run's model, or any local Hugging Face Gemma directory with an optional PEFT
 * adapter, as the adapter, a merged checkpoint, a GGUF (+ Ollama Modelfile), a GGUF LoRA or the
 * browser-ready ONNX folder (engine/export.ts, engine/export/run.ts). GGUF and ONNX are then verified
 * in their runtime; the one JSON line on stdout carries the verification. With --progress, JSON
 * progress lines go to stderr (the app's export jobs read them).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { defineVerb, type Verb } from "./verb.ts";
import { resolveDataDir } from "../config/app.ts";
import { exportAdapter, exportMerged, exportOnnx, type ExportSource } from "../engine/export.ts";
import { exportGguf, exportLoraGguf, type ExportProgress, parseQuant } from "../engine/export/run.ts";
import { UsageError } from "./flags.ts";

const KINDS = ["adapter", "merged", "gguf", "lora-gguf", "onnx"] as const;

const verb = defineVerb({
  name: "export",
  usage: "gemma-tuner export (--run DIR [--checkpoint NAME] | --model DIR [--adapter DIR]) " +
    "(--adapter | --merged | --gguf [--quant f32|f16|bf16|q8_0|q4_0|q4_k_m] | --lora-gguf | --onnx) --out DIR [--skip-verify]\n" +
    "  With --model, `--adapter DIR` names the PEFT adapter to merge; a bare --adapter is the adapter export.",
  flags: {
    run: { kind: "string", help: "run directory", metavar: "DIR" },
    checkpoint: { kind: "string", help: "with --run: final (default) or checkpoint-<step>", metavar: "NAME" },
    model: { kind: "string", help: "a Hugging Face Gemma model directory (or demo)", metavar: "DIR" },
    "adapter-dir": { kind: "string", help: "with --model: a PEFT adapter folder to merge (also written --adapter DIR)", metavar: "DIR" },
    adapter: { kind: "boolean", help: "the PEFT adapter files" },
    merged: { kind: "boolean", help: "a full Hugging Face checkpoint with the adapter merged in" },
    gguf: { kind: "boolean", help: "one GGUF file (adapter merged) + an Ollama Modelfile, verified in llama.cpp" },
    quant: { kind: "string", help: "with --gguf: f32, f16, bf16, q8_0, q4_0 or q4_k_m", default: "f32" },
    "lora-gguf": { kind: "boolean", help: "the adapter as a GGUF LoRA file, verified applied to the base in llama.cpp" },
    onnx: { kind: "boolean", help: "the browser-ready ONNX folder (transformers.js layout), verified in transformers.js" },
    "skip-verify": { kind: "boolean", help: "do not load the export in its runtime to compare a probe" },
    progress: { kind: "boolean", help: "JSON progress lines on stderr" },
    out: { kind: "string", help: "output directory (new or empty)", metavar: "DIR" },
    data: { kind: "string", help: "data directory (for the demo base model)", metavar: "DIR" },
  },
  required: ["out"],
  exactlyOne: [["run", "model"], [...KINDS]],
  async run(f, argv) {
    if (f.model && f.checkpoint) throw new UsageError("export: --checkpoint goes with --run; with --model give the folder itself");
    if (f.run && f["adapter-dir"]) throw new UsageError("export: --adapter DIR goes with --model; a run's adapter is its own (use --checkpoint to pick one)");
    const kind = KINDS.find((k) => f[k])!;
    if (argv.some((a) => a === "--quant" || a.startsWith("--quant=")) && kind !== "gguf") throw new UsageError("export: --quant goes with --gguf");
    let quant;
    try {
      quant = kind === "gguf" ? parseQuant(f.quant) : undefined;
    } catch (e) {
      throw new UsageError(`export: ${(e as Error).message}`);
    }
    let src: ExportSource;
    if (f.run) {
      const runDir = path.resolve(f.run);
      // A run lives in <data>/runs/<id>, so its data dir (where the demo model is) is two levels up.
      src = { runDir, checkpoint: f.checkpoint, dataDir: f.data ? resolveDataDir(f.data) : path.dirname(path.dirname(runDir)) };
    } else {
      src = { model: f.model!, adapter: f["adapter-dir"], dataDir: resolveDataDir(f.data) };
    }
    const out = path.resolve(f.out);
    const verify = !f["skip-verify"];
    const enc = new TextEncoder();
    const onProgress = f.progress ? (p: ExportProgress) => Deno.stderr.writeSync(enc.encode(`${JSON.stringify({ progress: p })}\n`)) : undefined;
    const line: Record<string, unknown> = { out, kind };
    let failed: string | null = null;
    if (kind === "adapter") exportAdapter(src, out);
    else if (kind === "merged") {
      onProgress?.({ phase: "writing", message: "merging and writing model.safetensors" });
      await exportMerged(src, out);
    } else if (kind === "onnx") {
      onProgress?.({ phase: "writing", message: "merging and writing the ONNX graph" });
      const v = await exportOnnx(src, out, { verify });
      if (v) line.verification = v;
      if (v && !v.pass) failed = `the ONNX export does not match our engine in transformers.js (max |ΔNLL| ${v.maxAbsNllDiff}, greedy ${v.greedyEqual ? "equal" : "different"})`;
    } else {
      const r = kind === "gguf" ? await exportGguf(src, out, { quant, verify, onProgress }) : await exportLoraGguf(src, out, { verify, onProgress });
      Object.assign(line, { file: r.file, bytes: r.bytes, quant: r.quant, types: r.types, warnings: r.warnings, ...(r.modelfile ? { modelfile: r.modelfile } : {}) });
      line.verification = r.verification;
      for (const w of r.warnings) console.error(`export: warning: ${w}`);
      const v = r.verification;
      if (v && !v.pass) {
        failed = v.error ??
          `the GGUF does not match our engine in llama.cpp (max |ΔNLL| ${v.max_abs_dnll.toExponential(2)}, bound ${v.bound}; greedy ${v.greedy_equal ? "equal" : "different"})`;
      }
    }
    onProgress?.({ phase: "done", message: failed ? "verification failed" : "done" });
    line.files = listFiles(out);
    console.log(JSON.stringify(line));
    if (failed) {
      console.error(`export: ${failed}; the files are kept in ${out}`);
      return 1;
    }
    return 0;
  },
});

/** Every file under `dir`, by its path inside it ("onnx/model.onnx"), with its size: what the export wrote. */
export function listFiles(dir: string, prefix = ""): { name: string; bytes: number }[] {
  const out: { name: string; bytes: number }[] = [];
  for (const e of fs.readdirSync(path.join(dir, prefix), { withFileTypes: true }).sort((a, b) => a.name < b.name ? -1 : 1)) {
    const name = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...listFiles(dir, name));
    else if (e.isFile()) out.push({ name, bytes: fs.statSync(path.join(dir, name)).size });
  }
  return out;
}

/**
 * `--adapter` is both the adapter export (a boolean) and, with --model, the adapter to merge
 * (`--adapter DIR`): a value after it, or `--adapter=DIR`, is rewritten to --adapter-dir.
 */
export function splitAdapterFlag(args: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--adapter" && i + 1 < args.length && !args[i + 1].startsWith("--")) out.push("--adapter-dir", args[++i]);
    else if (a.startsWith("--adapter=") && !["true", "false", "1", "0"].includes(a.slice(10))) out.push(`--adapter-dir=${a.slice(10)}`);
    else out.push(a);
  }
  return out;
}

export const exportVerb: Verb = { name: verb.name, run: (args) => verb.run(splitAdapterFlag(args)) };
