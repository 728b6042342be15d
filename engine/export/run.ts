/**
 * The GGUF exports of any source (a run's checkpoint, or a model directory with an optional adapter;
 * engine/export.ts `locate`): the merged model as one GGUF with an Ollama Modelfile beside it, or the
 * adapter alone as a GGUF LoRA. Each is then loaded in llama.cpp and probed against our engine
 * (verify.ts), and the result goes into the returned record, the folder's model card (README.md) and
 * the CLI's JSON line. Progress is reported as it goes, for the app's export jobs. docs/EXPORTS.md.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { baseDirOf, type ExportSource, locate, type Located, mergedWeights } from "../export.ts";
import type { GemmaConfig } from "../gemma/config.ts";
import { readAdapter } from "../peft.ts";
import { ARCHS, GgufUnsupportedError } from "./gguf_arch.ts";
import { type Quant, QUANTS, writeLoraGguf, writeModelGguf } from "./gguf.ts";
import { paramSpecs } from "../gemma/params.ts";
import { ourProbe, probeIds, type Verification, verifyGguf } from "./verify.ts";
import { EMPTY_THOUGHT } from "../chat_format.ts";

/** Where an export is; the CLI prints these as JSON lines on stderr with --progress. */
export interface ExportProgress {
  phase: "loading" | "writing" | "verifying" | "done";
  message: string;
  file?: string;
  bytes?: number;
  totalBytes?: number;
  tensors?: number;
  totalTensors?: number;
}

export type OnProgress = (p: ExportProgress) => void;

/** A verification as the CLI line and the UI show it: `pass` is the verdict. */
export type GgufVerification = Verification & {
  pass: boolean;
  /** --lora-gguf: how far the adapter moves our engine's NLLs (base vs merged): what the check can see. */
  adapter_effect_max_abs_dnll?: number;
};

export interface GgufExport {
  kind: "gguf" | "lora-gguf";
  file: string;
  bytes: number;
  quant: Quant;
  types: Record<string, number>;
  warnings: string[];
  modelfile?: string;
  verification: GgufVerification | null;
}

export function parseQuant(q: string | undefined): Quant {
  const v = (q ?? "f32").toLowerCase();
  if (!(QUANTS as readonly string[]).includes(v)) throw new RangeError(`--quant must be one of ${QUANTS.join(", ")}, got "${q}"`);
  return v as Quant;
}

/** Refuses, before anything is written, what llama.cpp would compute differently (gguf_arch.ts names why). */
function checkArch(c: GemmaConfig, what: string): void {
  const row = ARCHS[c.modelType];
  try {
    if (!row) throw new GgufUnsupportedError(`no GGUF architecture for model_type "${c.modelType}" (llama.cpp's gemma, gemma2 and gemma3 are written)`);
    row.check(c);
    row.meta(c);
  } catch (e) {
    if (e instanceof GgufUnsupportedError) throw new GgufUnsupportedError(`Cannot export ${what} as GGUF: ${e.message}`);
    throw e;
  }
}

function freshDir(out: string) {
  if (fs.existsSync(out) && fs.readdirSync(out).length) throw new RangeError(`Output directory "${out}" is not empty; choose another --out`);
  fs.mkdirSync(out, { recursive: true });
}

/** Progress of a GGUF being written, at most a few reports a second (and always the last). */
function writing(onProgress: OnProgress | undefined, file: string, totalTensors: number, label: string) {
  let tensors = 0, last = 0;
  return (done: number, total: number) => {
    tensors++;
    const now = Date.now();
    if (!onProgress || (now - last < 250 && tensors < totalTensors)) return;
    last = now;
    onProgress({ phase: "writing", message: `writing ${label}`, file: path.basename(file), bytes: done, totalBytes: total, tensors, totalTensors });
  };
}

const withPass = (v: Verification): GgufVerification => ({ ...v, pass: v.ok });

/**
 * The merged model as `<out>/<name>-<quant>.gguf`, an Ollama Modelfile and a model card, then (unless
 * verify is false) the probe through llama.cpp. A failed verification is returned, not thrown: the
 * files stay for inspection.
 */
export async function exportGguf(src: ExportSource, out: string, o: { quant?: Quant; verify?: boolean; onProgress?: OnProgress } = {}): Promise<GgufExport> {
  const quant = o.quant ?? "f32";
  const l = locate(src);
  o.onProgress?.({ phase: "loading", message: l.method === "lora" ? "loading the base model and merging the adapter" : "loading the model" });
  const baseDir = await baseDirOf(l, src.dataDir);
  const m = await mergedWeights(l, baseDir);
  checkArch(m.config, `"${l.name}"`);
  freshDir(out);
  const stored = quant === "f32" ? undefined : new Map<string, Float32Array>();
  const total = paramSpecs(m.config).length;
  const file = path.join(out, `${l.name}-${quant}.gguf`);
  const r = writeModelGguf({ dir: baseDir, config: m.config, weights: m.weights, name: l.name, hubId: l.hubId ?? undefined }, out, quant, {
    stored,
    onProgress: writing(o.onProgress, file, total, `${quant} GGUF`),
  });
  const modelfile = path.join(out, "Modelfile");
  fs.writeFileSync(modelfile, ollamaModelfile(path.basename(r.file), m.config, baseDir));
  let verification: GgufVerification | null = null;
  if (o.verify !== false) {
    o.onProgress?.({ phase: "verifying", message: "verifying in llama.cpp" });
    verification = withPass(await verifyGguf({ gguf: r.file, model: { config: m.config, weights: m.weights }, stored, modelDir: baseDir, quant }));
  }
  fs.writeFileSync(path.join(out, "README.md"), ggufModelCard(l, { ...r, kind: "gguf", modelfile, verification }));
  o.onProgress?.({ phase: "done", message: verification ? (verification.pass ? "verified in llama.cpp" : "verification failed") : "written (not verified)" });
  return { kind: "gguf", file: r.file, bytes: r.bytes, quant, types: r.types, warnings: r.warnings, modelfile, verification };
}

/**
 * The adapter alone as `<out>/<name>-lora.gguf` (f32). To verify it, the base model is written as an
 * f32 GGUF in a scratch folder beside `out` (removed after) and llama.cpp applies the LoRA to it at
 * scale 1; that must score as our engine does on the merged weights.
 */
export async function exportLoraGguf(src: ExportSource, out: string, o: { verify?: boolean; onProgress?: OnProgress } = {}): Promise<GgufExport> {
  const l = locate(src);
  if (l.method !== "lora") {
    throw new RangeError(
      "model" in src ? "--lora-gguf needs an adapter: give --adapter DIR with --model" : "This run fine-tuned every weight; it has no adapter. Use --gguf (the whole model)",
    );
  }
  o.onProgress?.({ phase: "loading", message: "loading the adapter" });
  const baseDir = await baseDirOf(l, src.dataDir);
  const adapter = readAdapter(l.dir);
  const { readConfig } = await import("../model_dir.ts");
  const config = readConfig(baseDir);
  checkArch(config, `the adapter "${l.name}"`);
  freshDir(out);
  const file = path.join(out, `${l.name}-lora.gguf`);
  const r = writeLoraGguf(config, adapter, file, l.name);
  o.onProgress?.({
    phase: "writing",
    message: "writing the LoRA GGUF",
    file: path.basename(file),
    bytes: r.bytes,
    totalBytes: r.bytes,
    tensors: adapter.tensors.size,
    totalTensors: adapter.tensors.size,
  });
  let verification: GgufVerification | null = null;
  if (o.verify !== false) {
    const m = await mergedWeights(l, baseDir);
    const scratch = fs.mkdtempSync(path.join(path.dirname(path.resolve(out)), ".lora-base-"));
    try {
      const baseFile = path.join(scratch, `base-f32.gguf`);
      const base = writeModelGguf({ dir: baseDir, config, weights: m.base!, name: "base" }, scratch, "f32", {
        onProgress: writing(o.onProgress, baseFile, paramSpecs(config).length, "the base model as GGUF for the check"),
      });
      o.onProgress?.({ phase: "verifying", message: "verifying in llama.cpp (the LoRA applied to the base GGUF)" });
      const v = withPass(await verifyGguf({ gguf: base.file, lora: r.file, model: { config, weights: m.weights }, modelDir: baseDir, quant: "f32" }));
      // What the adapter changes at all: a check of an adapter that changes nothing would pass on the base alone.
      const p = await probeIds(baseDir, config.generation);
      const [withIt, without] = [await ourProbe({ config, weights: m.weights }, p), await ourProbe({ config, weights: m.base! }, p)];
      v.adapter_effect_max_abs_dnll = Math.max(...withIt.nll.map((x, i) => Math.abs(x - without.nll[i])));
      verification = v;
    } finally {
      fs.rmSync(scratch, { recursive: true, force: true });
    }
  }
  const result: GgufExport = { kind: "lora-gguf", file: r.file, bytes: r.bytes, quant: "f32", types: { f32: adapter.tensors.size }, warnings: [], verification };
  fs.writeFileSync(path.join(out, "README.md"), ggufModelCard(l, result));
  o.onProgress?.({ phase: "done", message: verification ? (verification.pass ? "verified in llama.cpp" : "verification failed") : "written (not verified)" });
  return result;
}

/** Sampling defaults: the model's generation_config.json where it has them, else Gemma's published ones. */
function samplingDefaults(modelDir: string): { temperature: number; top_k: number; top_p: number } {
  let g: Record<string, unknown> = {};
  try {
    g = JSON.parse(fs.readFileSync(path.join(modelDir, "generation_config.json"), "utf8"));
  } catch { /* none: Gemma's defaults */ }
  const num = (v: unknown, d: number) => (typeof v === "number" && Number.isFinite(v) ? v : d);
  return { temperature: num(g.temperature, 1.0), top_k: num(g.top_k, 64), top_p: num(g.top_p, 0.95) };
}

/**
 * The chat format as an Ollama (Go text/template) TEMPLATE, rendering what engine/chat_format.ts
 * renders minus the leading <bos>, which llama.cpp adds itself (tokenizer.ggml.add_bos_token).
 * Gemma 1-3: a system message goes, with "\n\n", in front of the first user turn; Gemma 4 has a
 * system turn and, on the models that expect it, an empty thought block after the generation prompt.
 */
export function ollamaTemplate(generation: 1 | 2 | 3 | 4, emptyThought = false): string {
  if (generation === 4) {
    return [
      `{{- range $i, $_ := .Messages }}`,
      `{{- $last := eq (len (slice $.Messages $i)) 1 }}`,
      `{{- if eq .Role "system" }}<|turn>system`,
      `{{ .Content }}<turn|>`,
      `{{ else if eq .Role "user" }}<|turn>user`,
      `{{ .Content }}<turn|>`,
      `{{ if $last }}<|turn>model`,
      `${emptyThought ? EMPTY_THOUGHT : ""}{{ end }}`,
      `{{- else if eq .Role "assistant" }}<|turn>model`,
      `{{ .Content }}{{ if not $last }}<turn|>`,
      `{{ end }}`,
      `{{- end }}`,
      `{{- end }}`,
    ].join("\n");
  }
  return [
    `{{- $system := "" }}`,
    `{{- range .Messages }}{{ if eq .Role "system" }}{{ $system = .Content }}{{ end }}{{ end }}`,
    `{{- $first := true }}`,
    `{{- range $i, $_ := .Messages }}`,
    `{{- $last := eq (len (slice $.Messages $i)) 1 }}`,
    `{{- if eq .Role "user" }}<start_of_turn>user`,
    `{{ if and $first $system }}{{ $system }}`,
    ``,
    `{{ end }}{{ .Content }}<end_of_turn>`,
    `{{ $first = false }}{{ if $last }}<start_of_turn>model`,
    `{{ end }}`,
    `{{- else if eq .Role "assistant" }}<start_of_turn>model`,
    `{{ .Content }}{{ if not $last }}<end_of_turn>`,
    `{{ end }}`,
    `{{- end }}`,
    `{{- end }}`,
  ].join("\n");
}

/** An Ollama Modelfile for a GGUF beside it: `ollama create NAME -f Modelfile`. */
export function ollamaModelfile(ggufName: string, c: GemmaConfig, modelDir: string): string {
  let template: string | undefined;
  try {
    template = JSON.parse(fs.readFileSync(path.join(modelDir, "tokenizer_config.json"), "utf8")).chat_template;
  } catch { /* no template: the generation's default */ }
  const emptyThought = c.generation === 4 && typeof template === "string" && /<\|channel>thought(\\n|\n)<channel\|>/.test(template);
  const s = samplingDefaults(modelDir);
  const stop = c.generation === 4 ? ["<turn|>"] : ["<end_of_turn>"];
  return [
    `# Ollama: ollama create <name> -f Modelfile   (written by gemma-tuner; docs/EXPORTS.md)`,
    `FROM ./${ggufName}`,
    `TEMPLATE """${ollamaTemplate(c.generation, emptyThought)}"""`,
    ...stop.map((t) => `PARAMETER stop "${t}"`),
    `PARAMETER temperature ${s.temperature}`,
    `PARAMETER top_k ${s.top_k}`,
    `PARAMETER top_p ${s.top_p}`,
    `PARAMETER num_ctx ${Math.min(c.maxPositionEmbeddings, 8192)}`,
    "",
  ].join("\n");
}

const fmt = (x: number | undefined, d = 5) => (x === undefined || !Number.isFinite(x) ? "–" : x.toFixed(d));

/** The model card: what the files are, where they came from, and the verification in llama.cpp. */
export function ggufModelCard(l: Located, r: GgufExport): string {
  const v = r.verification;
  const lines = [
    "---",
    ...(l.hubId ? [`base_model: ${JSON.stringify(l.hubId)}`] : []),
    "library_name: gguf",
    "tags: [gguf, gemma, gemma-tuner]",
    "---",
    `# ${l.name} (${r.kind === "gguf" ? `GGUF ${r.quant}` : "GGUF LoRA adapter"})`,
    "",
    `Exported by gemma-tuner from \`${l.dir}\`${l.method === "lora" ? ` (LoRA on ${l.hubId ?? l.baseModel}${r.kind === "gguf" ? ", merged" : ""})` : ""}.`,
    "",
    `- \`${path.basename(r.file)}\`: ${r.bytes.toLocaleString("en")} bytes; tensors ${Object.entries(r.types).map(([t, n]) => `${n} ${t}`).join(", ")}`,
    ...(r.modelfile ? ["- `Modelfile`: `ollama create <name> -f Modelfile`"] : []),
    ...r.warnings.map((w) => `- Warning: ${w}`),
    "",
    "## Verification",
    "",
  ];
  if (!v) lines.push("Not verified (--skip-verify).");
  else {
    lines.push(
      `Loaded in ${v.runtime}${
        r.kind === "lora-gguf" ? ", applied at scale 1 to the base model written as an f32 GGUF" : ""
      }; a fixed probe (token NLLs of a short text, ${v.greedy_ours.length} greedy tokens after a chat prompt) compared with gemma-tuner's own engine on the fp32 weights.`,
      "",
      "| check | value | bound |",
      "|---|---|---|",
      `| max \\|ΔNLL\\| (nats) | ${fmt(v.max_abs_dnll)} | ${v.bound} |`,
      ...(v.max_abs_dnll_same_weights !== undefined
        ? [`| max \\|ΔNLL\\| on the stored (dequantized) weights | ${fmt(v.max_abs_dnll_same_weights)} | ${v.same_weights_bound} |`]
        : []),
      `| mean NLL ours / llama.cpp | ${fmt(v.mean_nll_ours, 4)} / ${fmt(v.mean_nll_runtime, 4)} | |`,
      `| greedy tokens equal | ${v.greedy_equal ? "yes" : "no"} | ${["f32", "f16", "bf16"].includes(r.quant) ? "must" : "may differ at near ties"} |`,
      ...(v.tokenizer_equal !== undefined ? [`| tokenizer equal | ${v.tokenizer_equal ? "yes" : "no"} | |`] : []),
      ...(v.adapter_effect_max_abs_dnll !== undefined ? [`| adapter effect (max \\|ΔNLL\\| base vs merged) | ${fmt(v.adapter_effect_max_abs_dnll)} | |`] : []),
      "",
      `Result: **${v.pass ? "pass" : "FAIL"}**${v.error ? ` (${v.error})` : ""} in ${v.seconds.toFixed(1)} s.`,
    );
  }
  lines.push(
    "",
    "## Run it",
    "",
    "```sh",
    r.kind === "gguf"
      ? `llama-cli -m ${path.basename(r.file)} -cnv\nollama create ${l.name.toLowerCase()} -f Modelfile && ollama run ${l.name.toLowerCase()}`
      : `llama-cli -m BASE.gguf --lora ${path.basename(r.file)} -cnv   # BASE.gguf: gemma-tuner export --model ${l.hubId ?? l.baseModel} --gguf --out DIR`,
    "```",
    "",
  );
  return lines.join("\n");
}
