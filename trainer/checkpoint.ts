/**
 * Checkpoints in a run directory: `checkpoints/checkpoint-<step>/` holding the adapter (PEFT) or the
 * full weights (HF layout), the optimizer state and trainer_state.json. Each is written into a temp
 * directory and renamed, so a kill at any moment leaves only complete checkpoints behind.
 *
 * Each checkpoint also records the size and sha256 of every file in it (checksums.json). The list the
 * UI and the service see leaves out a checkpoint whose files are missing or of the wrong size (a cheap
 * check, every poll) or that a resume found damaged (damaged.txt, written by the trainer); resume
 * verifies the checksums and falls back to the newest intact checkpoint, saying which one was damaged.
 */
import * as fs from "node:fs";
import { createHash } from "node:crypto";
import { basename, join } from "node:path";
import type { LoraConfig } from "../config/training.ts";
import { readAdapter, writeAdapter } from "../engine/peft.ts";
import { checkpointLayout, internalName, resolveCheckpoint } from "../engine/model_dir.ts";
import { listCheckpoint, readHeader, readTensorBytes, readTensorF32, type TensorToWrite, writeSafetensors } from "../engine/safetensors.ts";
import type { Schedule, StateTensor } from "../engine/optim.ts";

export const TRAINER_STATE_FORMAT = "gemma-tuner-trainer-state";
export const TRAINER_STATE_VERSION = 1;

export interface LogEntry {
  step: number;
  loss?: number;
  learningRate?: number;
  gradNorm?: number;
  evalLoss?: number;
  epoch: number;
}

/** trainer_state.json: everything besides tensors that a resumed run needs to continue exactly. */
export interface TrainerState {
  format: typeof TRAINER_STATE_FORMAT;
  version: number;
  /** Optimizer steps completed. */
  step: number;
  totalSteps: number;
  /** Fractional epochs done. */
  epoch: number;
  /** Data cursor: micro-batches consumed (the order is a function of seed and epoch). */
  microBatches: number;
  /** The seeds every random choice derives from; LoRA dropout of micro-batch k uses (seed, k). */
  rng: { seed: number; dropoutStream: "seed,microBatch"; nextMicroBatch: number };
  schedule: Schedule;
  method: "lora" | "full";
  baseModel: string;
  trainLoss: number | null;
  evalLoss: number | null;
  logHistory: LogEntry[];
}

export interface CheckpointInfo {
  step: number;
  dir: string;
}

export interface DamagedCheckpoint extends CheckpointInfo {
  /** What is wrong, in words ("optimizer.safetensors is 512 bytes; 4096 were written"). */
  damaged: string;
}

/** The sizes and sha256 of a checkpoint's files, written last into the temp dir before the rename. */
export const CHECKSUMS_FILE = "checksums.json";
/** Written into a checkpoint that resume found damaged; it is then never offered or resumed from. */
export const DAMAGED_FILE = "damaged.txt";
const CHECKSUMS_FORMAT = "gemma-tuner-checksums";

interface Checksums {
  format: typeof CHECKSUMS_FORMAT;
  version: 1;
  files: Record<string, { bytes: number; sha256: string }>;
}

/** sha256 of a file, read in chunks (a full checkpoint's weights can be gigabytes). */
export function sha256File(file: string): string {
  const h = createHash("sha256");
  const buf = new Uint8Array(8 << 20);
  const fd = fs.openSync(file, "r");
  try {
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n <= 0) break;
      h.update(buf.subarray(0, n));
    }
  } finally {
    fs.closeSync(fd);
  }
  return h.digest("hex");
}

function writeChecksums(dir: string): void {
  const files: Checksums["files"] = {};
  for (const name of fs.readdirSync(dir).sort()) {
    const file = join(dir, name);
    if (name === CHECKSUMS_FILE || name === DAMAGED_FILE || !fs.statSync(file).isFile()) continue;
    files[name] = { bytes: fs.statSync(file).size, sha256: sha256File(file) };
  }
  const sums: Checksums = { format: CHECKSUMS_FORMAT, version: 1, files };
  fs.writeFileSync(join(dir, CHECKSUMS_FILE), JSON.stringify(sums, null, 2) + "\n");
}

function readChecksums(dir: string): Checksums | string | null {
  let text: string;
  try {
    text = fs.readFileSync(join(dir, CHECKSUMS_FILE), "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null; // written before checksums
    return `${CHECKSUMS_FILE} cannot be read (${(e as Error).message})`;
  }
  try {
    const j = JSON.parse(text) as Checksums;
    if (j.format !== CHECKSUMS_FORMAT || typeof j.files !== "object" || !j.files) throw new Error("not a checksum list");
    return j;
  } catch (e) {
    return `${CHECKSUMS_FILE} is damaged (${(e as Error).message})`;
  }
}

/**
 * What is wrong with the checkpoint in `dir`, or null when it is intact. `full` hashes every file
 * (resume); without it only the marker, the files' presence and their sizes are checked (every poll).
 * A checkpoint written before checksums gets its safetensors headers and trainer state checked instead.
 */
export function checkpointProblem(dir: string, opts: { full?: boolean } = {}): string | null {
  try {
    const marker = fs.readFileSync(join(dir, DAMAGED_FILE), "utf8").trim();
    return marker || "marked damaged";
  } catch { /* no marker */ }
  const sums = readChecksums(dir);
  if (typeof sums === "string") return sums;
  if (sums === null) {
    if (!opts.full) return null;
    try {
      readTrainerState(dir);
      for (const name of fs.readdirSync(dir)) if (name.endsWith(".safetensors")) readHeader(join(dir, name));
      return null;
    } catch (e) {
      return (e as Error).message;
    }
  }
  for (const [name, want] of Object.entries(sums.files)) {
    const file = join(dir, name);
    let size: number;
    try {
      size = fs.statSync(file).size;
    } catch {
      return `${name} is missing`;
    }
    if (size !== want.bytes) return `${name} is ${size} bytes; ${want.bytes} were written${size < want.bytes ? " (truncated)" : ""}`;
  }
  if (!opts.full) return null;
  for (const [name, want] of Object.entries(sums.files)) {
    const got = sha256File(join(dir, name));
    if (got !== want.sha256) {
      return `${name} does not match its checksum (sha256 ${want.sha256.slice(0, 12)}… written, ${got.slice(0, 12)}… now): its bytes changed after it was saved`;
    }
  }
  return null;
}

const NAME = /^checkpoint-(\d+)$/;

export function checkpointsDir(runDir: string): string {
  return join(runDir, "checkpoints");
}

/** Every complete checkpoint directory (one with trainer_state.json), oldest first, intact or not. */
function completeCheckpoints(runDir: string): CheckpointInfo[] {
  const root = checkpointsDir(runDir);
  if (!fs.existsSync(root)) return [];
  const out: CheckpointInfo[] = [];
  for (const name of fs.readdirSync(root)) {
    const m = NAME.exec(name);
    if (m && fs.existsSync(join(root, name, "trainer_state.json"))) out.push({ step: Number(m[1]), dir: join(root, name) });
  }
  return out.sort((a, b) => a.step - b.step);
}

/**
 * Complete checkpoints that pass the cheap check (no damage marker, every recorded file present at its
 * recorded size), oldest first: the ones to offer, resume from and try.
 */
export function listCheckpoints(runDir: string): CheckpointInfo[] {
  return completeCheckpoints(runDir).filter((c) => checkpointProblem(c.dir) === null);
}

/** Complete checkpoints that the cheap check or an earlier resume found damaged, with what is wrong. */
export function damagedCheckpoints(runDir: string): DamagedCheckpoint[] {
  const out: DamagedCheckpoint[] = [];
  for (const c of completeCheckpoints(runDir)) {
    const damaged = checkpointProblem(c.dir);
    if (damaged) out.push({ ...c, damaged });
  }
  return out;
}

export function latestCheckpoint(runDir: string): CheckpointInfo | null {
  return listCheckpoints(runDir).at(-1) ?? null;
}

/**
 * The checkpoint to resume from: the newest whose files all match their checksums. Each damaged one
 * on the way is marked (damaged.txt, so it is not offered again) and `note` is told which one and
 * why, and which checkpoint is used instead.
 */
export function newestIntactCheckpoint(runDir: string, note: (line: string) => void): CheckpointInfo | null {
  const all = completeCheckpoints(runDir).reverse();
  const damaged: string[] = [];
  for (const c of all) {
    const problem = checkpointProblem(c.dir, { full: true });
    const name = basename(c.dir);
    if (problem === null) {
      if (damaged.length) note(`Resuming from ${name} instead of the damaged ${damaged.join(", ")}`);
      return c;
    }
    damaged.push(name);
    note(`Checkpoint ${name} is damaged: ${problem}`);
    try {
      if (!fs.existsSync(join(c.dir, DAMAGED_FILE))) fs.writeFileSync(join(c.dir, DAMAGED_FILE), problem + "\n");
    } catch { /* a read-only checkpoint stays unmarked; it is checked again next time */ }
  }
  if (damaged.length) note(`No intact checkpoint (${damaged.join(", ")} damaged): starting from step 0`);
  return null;
}

/** Removes temp directories left by a killed writer. */
export function cleanPartialCheckpoints(runDir: string): void {
  for (const root of [checkpointsDir(runDir), runDir]) {
    if (!fs.existsSync(root)) continue;
    for (const name of fs.readdirSync(root)) {
      if (name.startsWith(".tmp-")) fs.rmSync(join(root, name), { recursive: true, force: true });
    }
  }
}

export interface CheckpointContent {
  step: number;
  method: "lora" | "full";
  /** PEFT names (lora) or HF names (full). */
  trainable: Map<string, { shape: number[]; data: Float32Array }>;
  /** AdamW's moments (engine/optim.ts `stateTensors`: float32, or U8 codes with float32 absmax). */
  optimizer: StateTensor[];
  state: TrainerState;
  lora?: LoraConfig;
  baseModel: string;
  /** The base model directory: config and tokenizer files are copied for full checkpoints. */
  modelDir: string;
}

const MODEL_SIDE_FILES = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json", "chat_template.jinja"];

/** Writes the tensors and state of one checkpoint into `dir` (which must exist). */
function writeContent(dir: string, c: CheckpointContent): void {
  if (c.method === "lora") {
    if (!c.lora) throw new RangeError("A LoRA checkpoint needs the LoRA settings");
    writeAdapter(dir, c.trainable, c.lora, c.baseModel, checkpointLayout(c.modelDir));
  } else {
    // Under the base checkpoint's own names, so the folder loads like the base (multimodal too).
    const layout = checkpointLayout(c.modelDir);
    const ext = (n: string) => (n.startsWith("model.") ? layout.textPrefix + n.slice("model.".length) : n);
    const tensors: TensorToWrite[] = [...c.trainable].map(([name, t]) => ({ name: ext(name), dtype: "F32" as const, shape: t.shape, data: t.data }));
    // Text tensors that are never trained (Gemma 4 layer_scalar buffers) come along as stored, so the
    // folder is a complete model.
    if (fs.existsSync(join(c.modelDir, "config.json"))) {
      for (const [name, e] of resolveCheckpoint(c.modelDir).text) {
        if (!c.trainable.has(name)) tensors.push({ name: ext(name), dtype: e.dtype, shape: e.shape, raw: () => readTensorBytes(e) });
      }
    }
    writeSafetensors(join(dir, "model.safetensors"), tensors, { format: "pt" });
    for (const f of MODEL_SIDE_FILES) {
      const src = join(c.modelDir, f);
      if (!fs.existsSync(src)) continue;
      if (f === "config.json") {
        // The weights are saved as float32 whatever the base stored.
        const cfg = JSON.parse(fs.readFileSync(src, "utf8"));
        if ("torch_dtype" in cfg) cfg.torch_dtype = "float32";
        if ("dtype" in cfg) cfg.dtype = "float32";
        fs.writeFileSync(join(dir, f), JSON.stringify(cfg, null, 2) + "\n");
      } else fs.copyFileSync(src, join(dir, f));
    }
  }
  writeSafetensors(join(dir, "optimizer.safetensors"), c.optimizer, { format: "pt", step: String(c.state.step) });
  fs.writeFileSync(join(dir, "trainer_state.json"), JSON.stringify(c.state, null, 2) + "\n");
  writeChecksums(dir);
}

/** Writes `checkpoints/checkpoint-<step>/` through a temp dir + rename; returns its path. */
export function writeCheckpoint(runDir: string, c: CheckpointContent): string {
  const root = checkpointsDir(runDir);
  fs.mkdirSync(root, { recursive: true });
  const final = join(root, `checkpoint-${c.step}`);
  // Saved already at this step (a resume that stops at once); a damaged one is written again.
  if (fs.existsSync(join(final, "trainer_state.json")) && checkpointProblem(final) === null) return final;
  const tmp = join(root, `.tmp-checkpoint-${c.step}-${Deno.pid}`);
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp);
  try {
    writeContent(tmp, c);
    fs.rmSync(final, { recursive: true, force: true });
    fs.renameSync(tmp, final);
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  return final;
}

/** Deletes all but the newest `keep` intact checkpoints, and damaged ones older than those kept. */
export function pruneCheckpoints(runDir: string, keep: number): void {
  const all = listCheckpoints(runDir);
  const drop = all.slice(0, Math.max(0, all.length - keep));
  const oldestKept = all[Math.max(0, all.length - keep)]?.step ?? -1;
  for (const d of damagedCheckpoints(runDir)) if (d.step < oldestKept) drop.push(d);
  for (const c of drop) fs.rmSync(c.dir, { recursive: true, force: true });
}

/** Reads trainer_state.json, refusing a file of another format or version with a hint. */
export function readTrainerState(dir: string): TrainerState {
  const file = join(dir, "trainer_state.json");
  let s: TrainerState;
  try {
    s = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e) {
    throw new SyntaxError(`Cannot resume from "${file}": ${(e as Error).message}`);
  }
  if (s.format !== TRAINER_STATE_FORMAT || s.version !== TRAINER_STATE_VERSION) {
    throw new RangeError(
      `Cannot resume from "${file}": format ${
        JSON.stringify(s.format)
      } version ${s.version}, expected ${TRAINER_STATE_FORMAT} version ${TRAINER_STATE_VERSION} (written by another gemma-tuner version; start a new run)`,
    );
  }
  return s;
}

/** Trainable tensors and optimizer state of a checkpoint. */
export function readCheckpoint(dir: string): { state: TrainerState; trainable: Map<string, Float32Array>; optimizer: Map<string, Float32Array | Uint8Array> } {
  const state = readTrainerState(dir);
  const trainable = new Map<string, Float32Array>();
  if (state.method === "lora") {
    for (const [name, t] of readAdapter(dir).tensors) trainable.set(name, t.data);
  } else {
    for (const [name, e] of listCheckpoint(dir)) trainable.set(internalName(name), readTensorF32(e));
  }
  const optimizer = new Map<string, Float32Array | Uint8Array>();
  for (const e of readHeader(join(dir, "optimizer.safetensors")).entries) optimizer.set(e.name, e.dtype === "U8" ? readTensorBytes(e) : readTensorF32(e));
  return { state, trainable, optimizer };
}

/**
 * `final/`: a copy of the checkpoint (without optimizer state) plus README.md, replaced atomically.
 */
export function writeFinal(runDir: string, checkpointDir: string, readme: string): string {
  const final = join(runDir, "final");
  const tmp = join(runDir, `.tmp-final-${Deno.pid}`);
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp);
  for (const f of fs.readdirSync(checkpointDir)) {
    if (f === "optimizer.safetensors" || f === CHECKSUMS_FILE || f === DAMAGED_FILE) continue;
    fs.copyFileSync(join(checkpointDir, f), join(tmp, f));
  }
  fs.writeFileSync(join(tmp, "README.md"), readme);
  fs.writeFileSync(join(tmp, "checkpoint.txt"), basename(checkpointDir) + "\n");
  fs.rmSync(final, { recursive: true, force: true });
  fs.renameSync(tmp, final);
  return final;
}
