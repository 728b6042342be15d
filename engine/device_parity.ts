/**
 * Device parity: the same tiny models, batch and weights on a device and on the CPU, compared figure by
 * figure — the training loss and every gradient (LoRA and full, the staged engine's three graph kinds),
 * the single-graph token NLLs and their gradients (what `score --grad` runs), and greedy generation with
 * the KV-cache decoder. The device parity test and `scripts/device_check.sh` both run this.
 *
 * Run as a script it prints one JSON line per figure:
 *   deno run -A engine/device_parity.ts --device webgpu [--models 1,2,3,4-ple,4-kv,4-moe]
 * With GEMMA_TUNER_ORT_VERBOSE=1 ORT also logs every session's node placement to stderr, which
 * `nodePlacements` parses (the test fails if any node of ours runs on the CPU provider).
 */
import { type Device, DEVICES } from "./session.ts";
import { TrainEngine } from "./train_engine.ts";
import { generateIds, Generator } from "./generate.ts";
import { type Gemma4Variant, randomWeights, runSequence, tinyConfig, tinyConfig4 } from "./gemma/testing.ts";
import type { GemmaConfig } from "./gemma/config.ts";

/**
 * The tiny stress models compared: Gemma 1–3, and Gemma 4's three (per-layer embeddings with KV
 * sharing and the double-wide MLP; K=V full layers; the mixture of experts, which has no full
 * fine-tuning and so no full-step figure).
 */
export const PARITY_MODELS = ["1", "2", "3", "4-ple", "4-kv", "4-moe"] as const;
export type ParityModel = typeof PARITY_MODELS[number];

/** The figures a model must produce (MoE: full fine-tuning is refused, docs/GEMMA4.md). */
export function parityKinds(model: ParityModel): ParityFigure["what"][] {
  return model === "4-moe" ? ["lora-step", "score-grad", "generate"] : ["lora-step", "full-step", "score-grad", "generate"];
}

function parityConfig(model: ParityModel): GemmaConfig {
  return model.startsWith("4-") ? tinyConfig4(model.slice(2) as Gemma4Variant) : tinyConfig(Number(model) as 1 | 2 | 3, true);
}

export interface ParityFigure {
  device: Device;
  generation: number;
  /** Which of PARITY_MODELS. */
  model: ParityModel;
  what: "lora-step" | "full-step" | "score-grad" | "generate";
  /** |loss(device) − loss(cpu)| (steps), max |Δ token NLL| (score), or 0/1 mismatch (generate). */
  lossDiff: number;
  /** Largest |Δ| over every gradient element, relative to the largest |gradient| (steps and score). */
  gradRelDiff: number;
  /** Gradient tensors compared (steps and score), or tokens compared (generate). */
  count: number;
  ms: number;
}

/** Tolerances the test holds figures to: float32 on both sides, different kernels and summation orders. */
export const PARITY_LIMITS = { lossDiff: 1e-4, gradRelDiff: 1e-4 };

const T = 8;
const ROWS = [[2, 17, 5, 33, 40, 8, 8, 21], [2, 30, 31, 32, 9, 1, 0, 0]];
const LABELS = [[-100, -100, -100, 33, 40, 8, 8, 21], [-100, -100, 31, 32, 9, 1, -100, -100]];
const LORA = { r: 4, alpha: 8, dropout: 0, rslora: false, targets: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] };

function batch() {
  return { inputIds: Int32Array.from(ROWS.flat()), labels: Int32Array.from(LABELS.flat()), batchSize: ROWS.length, seqLen: T };
}

function maxRel(a: Map<string, ArrayLike<number>>, b: Map<string, ArrayLike<number>>): { rel: number; count: number } {
  let worst = 0, scale = 0, count = 0;
  for (const [k, x] of a) {
    const y = b.get(k);
    if (!y || y.length !== x.length) throw new Error(`gradient "${k}" is missing or differs in size between devices`);
    for (let i = 0; i < x.length; i++) {
      worst = Math.max(worst, Math.abs(x[i] - y[i]));
      scale = Math.max(scale, Math.abs(y[i]));
    }
    count++;
  }
  if (count === 0 || scale === 0) throw new Error("no non-zero gradient to compare");
  return { rel: worst / scale, count };
}

async function step(c: GemmaConfig, w: Map<string, Float32Array>, method: "lora" | "full", device: Device) {
  // Copies: full fine-tuning trains the given buffers in place.
  const weights = new Map([...w].map(([k, v]) => [k, v.slice()]));
  const e = await TrainEngine.create({ model: { config: c, weights }, method, lora: method === "lora" ? LORA : undefined, device, seed: 3, threads: 1 });
  // B ≠ 0 so every LoRA tensor has a gradient.
  for (const [k, t] of e.trainable) if (k.includes("lora_B")) t.data.forEach((_, i) => (t.data[i] = Math.sin(i + k.length) * 0.1));
  e.zeroGrads();
  const r = await e.forwardBackward(batch());
  const grads = new Map([...e.grads].map(([k, g]) => [k, g.slice()]));
  e.release();
  return { loss: r.lossSum, grads };
}

/** Every figure for one model (a generation's tiny stress model) on `device` against the CPU. */
export async function parityFigures(device: Device, which: ParityModel | 1 | 2 | 3): Promise<ParityFigure[]> {
  const model = String(which) as ParityModel;
  if (!PARITY_MODELS.includes(model)) throw new RangeError(`no parity model "${which}": one of ${PARITY_MODELS.join(", ")}`);
  const c = parityConfig(model);
  const generation = c.generation;
  const w = randomWeights(c, 41 + generation + (generation === 4 ? PARITY_MODELS.indexOf(model) : 0), 0.1);
  const out: ParityFigure[] = [];
  const kinds = parityKinds(model);
  for (const method of ["lora", "full"] as const) {
    if (!kinds.includes(`${method}-step`)) continue;
    const t0 = performance.now();
    const dev = await step(c, w, method, device);
    const ms = performance.now() - t0;
    const cpu = await step(c, w, method, "cpu");
    const g = maxRel(dev.grads, cpu.grads);
    out.push({ device, generation, model, what: `${method}-step`, lossDiff: Math.abs(dev.loss - cpu.loss), gradRelDiff: g.rel, count: g.count, ms });
  }
  {
    const ids = ROWS[0];
    const t0 = performance.now();
    const dev = await runSequence(c, w, ids, { method: "full", device });
    const ms = performance.now() - t0;
    const cpu = await runSequence(c, w, ids, { method: "full" });
    let nll = 0;
    dev.nll.forEach((x, i) => (nll = Math.max(nll, Math.abs(x - cpu.nll[i]))));
    const g = maxRel(dev.grads, cpu.grads);
    out.push({ device, generation, model, what: "score-grad", lossDiff: nll, gradRelDiff: g.rel, count: g.count, ms });
  }
  {
    const prompt = [2, 17, 5, 33];
    const t0 = performance.now();
    const dev = await generateIds(new Generator({ config: c, weights: w }, { device, threads: 1 }), prompt, { temperature: 0, maxNewTokens: 12, stopIds: [] });
    const ms = performance.now() - t0;
    const cpu = await generateIds(new Generator({ config: c, weights: w }, { threads: 1 }), prompt, { temperature: 0, maxNewTokens: 12, stopIds: [] });
    const same = dev.ids.length === cpu.ids.length && dev.ids.every((x, i) => x === cpu.ids[i]);
    out.push({ device, generation, model, what: "generate", lossDiff: same ? 0 : 1, gradRelDiff: 0, count: cpu.ids.length, ms });
  }
  return out;
}

/** A figure within PARITY_LIMITS. */
export function figureOk(f: ParityFigure): boolean {
  return f.lossDiff <= PARITY_LIMITS.lossDiff && f.gradRelDiff <= PARITY_LIMITS.gradRelDiff;
}

export interface Placement {
  provider: string;
  nodes: string[];
}

/**
 * Node placements from ORT's verbose session log (one block per session created):
 * "Node(s) placed on [CPUExecutionProvider]. Number of nodes: 1" followed by "  LogSoftmax (LogSoftmax_188)".
 * "All nodes placed on [X]" blocks count their nodes without listing them.
 */
export function nodePlacements(log: string): { sessions: number; placements: Placement[] } {
  const placements: Placement[] = [];
  let sessions = 0;
  let current: Placement | null = null;
  for (const line of log.split("\n")) {
    if (line.includes("VerifyEachNodeIsAssignedToAnEp] Node placements")) {
      sessions++;
      current = null;
      continue;
    }
    const all = line.match(/All nodes placed on \[(\w+)\]\. Number of nodes: (\d+)/);
    if (all) {
      placements.push({ provider: all[1], nodes: [`${all[2]} nodes`] });
      current = null;
      continue;
    }
    const some = line.match(/Node\(s\) placed on \[(\w+)\]\. Number of nodes: (\d+)/);
    if (some) {
      current = { provider: some[1], nodes: [] };
      placements.push(current);
      continue;
    }
    const node = current && line.match(/VerifyEachNodeIsAssignedToAnEp\]\s{3}(\S+ \(.*\))\s*$/);
    if (node && current) current.nodes.push(node[1]);
    else if (!line.includes("VerifyEachNodeIsAssignedToAnEp")) current = null;
  }
  return { sessions, placements };
}

if (import.meta.main) {
  const args = Deno.args;
  const flag = (name: string) => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const device = (flag("device") ?? "webgpu") as Device;
  if (!DEVICES.includes(device)) throw new RangeError(`--device must be one of ${DEVICES.join(", ")}`);
  const models = (flag("models") ?? flag("generations") ?? PARITY_MODELS.join(",")).split(",") as ParityModel[];
  for (const model of models) {
    for (const f of await parityFigures(device, model)) console.log(JSON.stringify({ ...f, ok: figureOk(f) }));
  }
}
