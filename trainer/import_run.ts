/**
 * Import: a PEFT LoRA adapter or a merged model trained elsewhere (a folder, a zip of one, or a Hub
 * download) becomes a completed run in <data>/runs/<id>/, in the run-directory protocol
 * (DESIGN.md "The run directory"): run.json, status.json "completed", final/ with the model, and the
 * TensorBoard events found beside it copied in. It then shows in the history and the playground and
 * exports like a local run.
 *
 * Everything is checked before the run exists: the adapter's tensor names (PEFT naming), ranks, the
 * base model (found on this machine) and every LoRA shape against the base's linears. The run is built
 * in a hidden folder and renamed into place, so a refused import leaves nothing behind.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { huggingFaceCacheDirs } from "../config/app.ts";
import { LORA_TARGETS, type LoraConfig, parseRunConfig, type RunConfig } from "../config/training.ts";
import { newRunId, type RunJson, writeFileAtomic, writeStatus } from "./run_dir.ts";
import { paramSpecs } from "../engine/gemma/params.ts";
import { describeModel, resolveCheckpoint, resolveModelPath } from "../engine/model_dir.ts";
import { readAdapter } from "../engine/peft.ts";
import { extractEntry, listZip } from "../engine/zip_read.ts";
import { HANDOFF_FORMAT } from "../engine/handoff/mapping.ts";

export interface ImportOptions {
  /** A folder or a .zip holding adapter_config.json + adapter_model.safetensors, or a merged model. */
  source: string;
  dataDir: string;
  /** The run's name (default: the handed-off config's name, else the folder's). */
  name?: string;
  /** The base model: "demo", a model folder, or a Hub id in the HF cache (default: the adapter's base_model_name_or_path). */
  base?: string;
  /** Where the source came from, for run.json (e.g. "hub:org/name"); default the source path. */
  origin?: string;
}

export interface ImportResult {
  runId: string;
  runDir: string;
  kind: "adapter" | "merged";
  baseModel: string;
  tensors: number;
  events: string[];
  step: number;
  fromHandoff: boolean;
}

const ADAPTER_FILES = ["adapter_config.json", "adapter_model.safetensors"];
const MERGED_EXTRA = [
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "tokenizer.model",
  "generation_config.json",
  "chat_template.jinja",
  "model.safetensors.index.json",
];

/** Folders under `root` (itself first), breadth first, to `depth` levels. */
function walkDirs(root: string, depth: number): string[] {
  const out = [root];
  for (let i = 0; i < out.length; i++) {
    const d = out[i];
    if (path.relative(root, d).split(path.sep).filter(Boolean).length >= depth) continue;
    for (const e of fs.readdirSync(d, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      if (e.isDirectory() && !e.name.startsWith(".")) out.push(path.join(d, e.name));
    }
  }
  return out;
}

/** The adapter or merged-model folder inside `root`: the shallowest one (a trainer's final output, not its checkpoint-N). */
export function findModelFolder(root: string): { dir: string; kind: "adapter" | "merged" } {
  for (const d of walkDirs(root, 4)) {
    if (fs.existsSync(path.join(d, "adapter_config.json"))) return { dir: d, kind: "adapter" };
    const names = fs.readdirSync(d);
    if (names.includes("config.json") && names.some((n) => n.endsWith(".safetensors"))) return { dir: d, kind: "merged" };
  }
  throw new RangeError(
    `Nothing to import in "${root}": no adapter_config.json (a PEFT adapter, with adapter_model.safetensors) and no config.json with *.safetensors (a merged model) in it or its subfolders`,
  );
}

/** A zip's entries into `dest`; names that would leave it are refused. */
async function unzip(zip: string, dest: string): Promise<void> {
  let entries;
  try {
    entries = listZip(zip);
  } catch (e) {
    throw new SyntaxError(`Cannot read "${zip}" as a zip archive: ${(e as Error).message}`);
  }
  for (const e of entries) {
    const name = e.name.replaceAll("\\", "/");
    if (name.endsWith("/")) continue;
    if (name.startsWith("/") || name.split("/").includes("..")) throw new RangeError(`Cannot import "${zip}": entry "${e.name}" points outside the archive`);
    const to = path.join(dest, ...name.split("/"));
    fs.mkdirSync(path.dirname(to), { recursive: true });
    await extractEntry(zip, e, to);
  }
}

interface HandoffRecord {
  config: Record<string, unknown>;
  target?: string;
}

/**
 * handoff.json of the bundle this output came from: in the model folder or up to three folders above
 * it (a bundle's outputs/<name>/ is two below it); inside `within` only, when given (an unpacked zip).
 */
function findHandoff(modelDir: string, within?: string): HandoffRecord | null {
  let d = modelDir;
  for (let i = 0; i < 4; i++) {
    const f = path.join(d, "handoff.json");
    if (fs.existsSync(f)) {
      try {
        const raw = JSON.parse(fs.readFileSync(f, "utf8"));
        if (raw?.format === HANDOFF_FORMAT && raw.config && typeof raw.config === "object") return raw;
      } catch (e) {
        throw new SyntaxError(`Cannot read "${f}": ${(e as Error).message}`);
      }
    }
    const up = path.dirname(d);
    if (up === d || (within && path.relative(within, up).startsWith(".."))) break;
    d = up;
  }
  return null;
}

/** TensorBoard event files anywhere under `root` (a trainer writes them to output_dir/runs/<stamp>/). */
function findEvents(root: string): string[] {
  const out: string[] = [];
  for (const d of walkDirs(root, 6)) {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) if (e.isFile() && e.name.startsWith("events.out.tfevents.")) out.push(path.join(d, e.name));
  }
  return out;
}

/** The HF Trainer's trainer_state.json (global_step) in the folder or its newest checkpoint-N. */
function trainerStep(modelDir: string): number {
  const candidates = [path.join(modelDir, "trainer_state.json")];
  const cks = fs.readdirSync(modelDir).filter((n) => /^checkpoint-\d+$/.test(n)).sort((a, b) => Number(b.split("-")[1]) - Number(a.split("-")[1]));
  if (cks.length) candidates.push(path.join(modelDir, cks[0], "trainer_state.json"));
  for (const f of candidates) {
    try {
      const s = JSON.parse(fs.readFileSync(f, "utf8"));
      if (Number.isInteger(s.global_step)) return s.global_step;
    } catch { /* not there */ }
  }
  return 0;
}

/**
 * The base model folder on this machine: "demo", a model folder, or a Hub id found in the Hugging
 * Face cache (the snapshot refs/main points at, else the newest).
 */
export async function findBaseModel(base: string, dataDir: string, cacheDirs = huggingFaceCacheDirs()): Promise<string> {
  if (base === "demo") return await resolveModelPath("demo", dataDir);
  if (fs.existsSync(path.join(base, "config.json"))) return path.resolve(base);
  if (/^[A-Za-z0-9][A-Za-z0-9._-]*\/[A-Za-z0-9][A-Za-z0-9._-]*$/.test(base)) {
    for (const c of cacheDirs) {
      const repo = path.join(c, `models--${base.replace("/", "--")}`);
      const snaps = path.join(repo, "snapshots");
      if (!fs.existsSync(snaps)) continue;
      let ref = "";
      try {
        ref = fs.readFileSync(path.join(repo, "refs", "main"), "utf8").trim();
      } catch { /* no main ref */ }
      const names = fs.readdirSync(snaps).filter((n) => fs.existsSync(path.join(snaps, n, "config.json")));
      const pick = names.includes(ref) ? ref : names.sort((a, b) => fs.statSync(path.join(snaps, b)).mtimeMs - fs.statSync(path.join(snaps, a)).mtimeMs)[0];
      if (pick) return path.join(snaps, pick);
    }
    throw new RangeError(
      `The base model "${base}" is not on this machine: download it first (gemma-tuner download --repo ${base}, or Download on the create page), or give its folder with --base DIR`,
    );
  }
  throw new RangeError(`The base model "${base || "(none named)"}" is not a model folder, "demo" or a Hub id (ORG/NAME): give it with --base`);
}

/** Checks every LoRA pair against the base's linear: A is [r, in], B is [out, r]. Returns the targets found. */
export function checkAdapterShapes(baseDir: string, tensors: Map<string, { shape: number[] }>, r: number, file: string): LoraConfig["targets"] {
  const { config } = resolveCheckpoint(baseDir);
  const shapes = new Map(paramSpecs(config).map((s) => [s.name, s.shape]));
  const targets = new Set<string>();
  const seen = new Set<string>();
  for (const [name, t] of tensors) {
    const m = /^base_model\.model\.(model\.layers\.\d+\.(?:self_attn|mlp)\.(\w+))\.lora_([AB])\.weight$/.exec(name);
    if (!m) throw new RangeError(`Cannot import "${file}": tensor "${name}" is not a LoRA weight of a Gemma text-decoder linear`);
    const [, module, linear, ab] = m;
    const base = shapes.get(`${module}.weight`);
    if (!base) {
      throw new RangeError(
        `Cannot import "${file}": ${name} adapts ${module}, which the base model (${config.architecture}, ${config.numLayers} layers) does not have: is it the right base model?`,
      );
    }
    const [out, inp] = base;
    const want = ab === "A" ? [r, inp] : [out, r];
    if (t.shape.join(",") !== want.join(",")) {
      throw new RangeError(
        `Cannot import "${file}": ${name} has shape [${t.shape}] but the base's ${module} is [${base}] with r ${r}, so it must be [${want}]: the adapter was trained on another base model`,
      );
    }
    if (!(LORA_TARGETS as readonly string[]).includes(linear)) {
      throw new RangeError(`Cannot import "${file}": ${name} targets ${linear}, which gemma-tuner does not train (${LORA_TARGETS.join(", ")})`);
    }
    targets.add(linear);
    seen.add(`${module}.${ab}`);
  }
  for (const k of seen) {
    const other = k.endsWith(".A") ? k.slice(0, -1) + "B" : k.slice(0, -1) + "A";
    if (!seen.has(other)) throw new RangeError(`Cannot import "${file}": ${k.slice(0, -2)} has lora_${k.at(-1)} but no lora_${other.at(-1)}`);
  }
  if (!targets.size) throw new RangeError(`Cannot import "${file}": it holds no LoRA tensors`);
  return LORA_TARGETS.filter((t) => targets.has(t));
}

function readJson(file: string): Record<string, unknown> {
  try {
    return JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e) {
    throw new SyntaxError(`Cannot read "${file}": ${(e as Error).message}`);
  }
}

/** A RunConfig for run.json that this build's schema accepts (a handed-off config keeps its fields). */
function runConfigFor(base: Record<string, unknown> | null, patch: Record<string, unknown>, source: string): RunConfig {
  const raw: Record<string, unknown> = base
    ? { ...base, ...patch, lora: { ...(base.lora as object ?? {}), ...(patch.lora as object ?? {}) } }
    : { dataset: { path: "imported", validation: 0 }, evalEvery: 0, ...patch };
  try {
    return parseRunConfig(raw, source);
  } catch (e) {
    if (!("basePrecision" in raw)) throw e;
    const { basePrecision: _b, ...rest } = raw;
    return parseRunConfig(rest, source);
  }
}

/** Imports a trained adapter or merged model as a completed run; returns where it is. */
export async function importModel(o: ImportOptions): Promise<ImportResult> {
  const source = path.resolve(o.source);
  if (!fs.existsSync(source)) throw new RangeError(`Cannot import "${source}": no such file or folder`);
  const runs = path.join(o.dataDir, "runs");
  fs.mkdirSync(runs, { recursive: true });
  const work = fs.mkdtempSync(path.join(runs, ".import-"));
  try {
    let root = source;
    if (fs.statSync(source).isFile()) {
      root = path.join(work, "src");
      fs.mkdirSync(root);
      await unzip(source, root);
    }
    const found = findModelFolder(root);
    const handoff = findHandoff(found.dir, root === source ? undefined : root);
    const events = findEvents(root);
    const step = trainerStep(found.dir);
    const name = o.name?.trim() || String(handoff?.config.name ?? "") || path.basename(found.dir === root && root !== source ? source.replace(/\.zip$/i, "") : found.dir);
    const id = newRunId(name);
    const runDir = path.join(runs, id);
    const stage = path.join(work, "run");
    const final = path.join(stage, "final");
    fs.mkdirSync(final, { recursive: true });

    let config: RunConfig, baseModel: string, tensors: number;
    if (found.kind === "adapter") {
      for (const f of ADAPTER_FILES) {
        if (!fs.existsSync(path.join(found.dir, f))) throw new RangeError(`Cannot import "${found.dir}": ${f} is missing (a PEFT adapter has ${ADAPTER_FILES.join(" and ")})`);
      }
      const cfgFile = path.join(found.dir, "adapter_config.json");
      const raw = readJson(cfgFile);
      if (raw.use_dora === true) throw new RangeError(`Cannot import "${cfgFile}": use_dora is true; only plain LoRA adapters are supported`);
      for (const k of ["rank_pattern", "alpha_pattern"]) {
        if (raw[k] && typeof raw[k] === "object" && Object.keys(raw[k] as object).length) {
          throw new RangeError(`Cannot import "${cfgFile}": ${k} is set; only one rank and alpha for every module is supported`);
        }
      }
      const adapter = readAdapter(found.dir);
      const handoffModel = typeof handoff?.config.model === "string" ? handoff.config.model : undefined;
      const named = o.base ?? (handoffModel && (handoffModel === "demo" || fs.existsSync(handoffModel)) ? handoffModel : adapter.baseModel);
      const baseDir = await findBaseModel(named, o.dataDir);
      const targets = checkAdapterShapes(baseDir, adapter.tensors, adapter.lora.r, path.join(found.dir, "adapter_model.safetensors"));
      const lora = { r: adapter.lora.r, alpha: adapter.lora.alpha, dropout: adapter.lora.dropout, rslora: adapter.lora.rslora, targets };
      baseModel = named === "demo" ? "demo" : baseDir;
      tensors = adapter.tensors.size;
      config = runConfigFor(
        handoff?.config ?? null,
        { name, model: baseModel, method: "lora", lora, maxSteps: step || (handoff?.config.maxSteps as number | undefined) || 1 },
        cfgFile,
      );
      for (const f of [...ADAPTER_FILES, "README.md"]) if (fs.existsSync(path.join(found.dir, f))) fs.copyFileSync(path.join(found.dir, f), path.join(final, f));
    } else {
      const info = describeModel(found.dir);
      if (!info.hasTokenizer) {
        throw new RangeError(`Cannot import "${found.dir}": tokenizer.json and tokenizer_config.json are missing; copy them from the base model into the folder`);
      }
      for (const n of fs.readdirSync(found.dir)) {
        if (n === "config.json" || n.endsWith(".safetensors") || MERGED_EXTRA.includes(n) || n === "README.md") fs.copyFileSync(path.join(found.dir, n), path.join(final, n));
      }
      // A full model is its own base: the run's model is its final folder (as a full fine-tune's is).
      baseModel = path.join(runDir, "final");
      tensors = info.parameters;
      config = runConfigFor(
        handoff?.config ?? null,
        { name, model: baseModel, method: "full", maxSteps: step || (handoff?.config.maxSteps as number | undefined) || 1 },
        path.join(found.dir, "config.json"),
      );
    }
    const copied: string[] = [];
    for (const [i, e] of events.entries()) {
      let n = path.basename(e);
      if (copied.includes(n)) n = `${n}.${i}`;
      fs.copyFileSync(e, path.join(stage, n));
      copied.push(n);
    }
    const run: RunJson & { imported: Record<string, unknown> } = {
      id,
      createdAt: new Date().toISOString(),
      config,
      imported: { from: o.origin ?? source, kind: found.kind, at: new Date().toISOString(), ...(handoff?.target ? { target: handoff.target } : {}), events: copied.length },
    };
    writeFileAtomic(path.join(stage, "run.json"), JSON.stringify(run, null, 2) + "\n");
    writeStatus(stage, {
      state: "completed",
      message: `Imported ${found.kind === "adapter" ? "an adapter" : "a merged model"} from ${o.origin ?? source}`,
      step,
      totalSteps: step,
      epoch: 0,
      pid: 0,
    });
    fs.renameSync(stage, runDir);
    return { runId: id, runDir, kind: found.kind, baseModel, tensors, events: copied, step, fromHandoff: !!handoff };
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}
