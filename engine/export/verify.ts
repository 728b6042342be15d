/**
 * Verification of an export in its target runtime (docs/GGUF.md §6): a fixed probe (the token NLLs
 * of a short text, and greedy tokens after a chat prompt) through our own engine and through the
 * artifact's runtime — llama.cpp via node-llama-cpp for GGUF — compared against a bound per format.
 */
import { Generator, type GeneratorModel } from "../generate.ts";
import { loadTokenizer } from "../tokenizer.ts";
import { renderChat } from "../chat_format.ts";
import type { Quant } from "./gguf.ts";
import type { ControlledEvaluateInputItem, Token } from "node-llama-cpp";

/** node-llama-cpp brands token ids; ours are plain numbers of the same vocabulary. */
const tk = (id: number) => id as unknown as Token;

export const PROBE_TEXT = "The quick brown fox jumps over the lazy dog, and then it rests by the river.";
export const PROBE_PROMPT = "Write one sentence about the sea.";
export const GREEDY_TOKENS = 8;
export const LLAMA_RUNTIME = "llama.cpp (node-llama-cpp 3.21.1, CPU)";

/**
 * Max |ΔNLL| (nats) of the runtime against our engine on the original fp32 weights, per format:
 * kernel rounding for f32, quantization loss for the rest. Measured on tiny random Gemma 1/2/3
 * checkpoints whose mean NLL is ~15 nats (notes/PERF.md "GGUF"); a bug (a wrong norm, a wrong
 * tensor layout) moves NLLs by whole nats.
 */
export const NLL_BOUND: Record<Quant, number> = { f32: 5e-3, f16: 0.05, bf16: 0.2, q8_0: 0.3, q4_0: 3, q4_k_m: 3 };
/**
 * Max |ΔNLL| against our engine on the weights as the file stores them (dequantized): what is left
 * is the runtime's own arithmetic (llama.cpp rounds activations to f16 or 8 bits in its dot products).
 */
export const SAME_WEIGHTS_BOUND: Record<Quant, number> = { f32: 5e-3, f16: 0.05, bf16: 0.1, q8_0: 0.15, q4_0: 0.3, q4_k_m: 0.3 };
/** Formats whose greedy tokens must equal ours (quantized files may pick another token at a near tie). */
const GREEDY_MUST_MATCH = new Set<Quant>(["f32", "f16", "bf16"]);

export interface ProbeIds {
  nllIds: number[];
  promptIds: number[];
}

export interface ProbeResult {
  nll: number[];
  greedy: number[];
  /** Per greedy step: top-1 minus top-2 logit (ours) or log-probability (llama.cpp). */
  margins: number[];
}

export interface Verification {
  runtime: string;
  ok: boolean;
  bound: number;
  max_abs_dnll: number;
  /** Against our engine on the dequantized weights the file holds (quantized formats only). */
  same_weights_bound?: number;
  max_abs_dnll_same_weights?: number;
  mean_nll_ours: number;
  mean_nll_runtime: number;
  greedy_equal: boolean;
  greedy_ours: number[];
  greedy_runtime: number[];
  /** The smallest top-1/top-2 gap of our greedy steps: a tie here makes a greedy mismatch meaningless. */
  greedy_min_margin: number;
  tokenizer_equal?: boolean;
  seconds: number;
  error?: string;
}

/** The probe's token ids, from the model's own tokenizer. */
export async function probeIds(modelDir: string, generation: 1 | 2 | 3 | 4): Promise<ProbeIds> {
  const tok = await loadTokenizer(modelDir);
  return {
    nllIds: [tok.bosId, ...tok.encode(PROBE_TEXT)],
    promptIds: tok.encode(renderChat([{ role: "user", content: PROBE_PROMPT }], { addGenerationPrompt: true, generation })),
  };
}

function logSoftmaxAt(logits: ArrayLike<number>, id: number): number {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  let s = 0;
  for (let i = 0; i < logits.length; i++) s += Math.exp(logits[i] - max);
  return logits[id] - max - Math.log(s);
}

function top2(logits: ArrayLike<number>): [number, number] {
  let a = -1, b = -1;
  for (let i = 0; i < logits.length; i++) {
    if (a < 0 || logits[i] > logits[a]) (b = a, a = i);
    else if (b < 0 || logits[i] > logits[b]) b = i;
  }
  return [a, logits[a] - logits[b]];
}

/** The probe through our own decoder (fp32). */
export async function ourProbe(model: GeneratorModel, p: ProbeIds): Promise<ProbeResult> {
  const gen = new Generator(model);
  try {
    const nll: number[] = [];
    for (let i = 0; i + 1 < p.nllIds.length; i++) nll.push(-logSoftmaxAt(await gen.feed([p.nllIds[i]]), p.nllIds[i + 1]));
    gen.reset();
    let logits = await gen.feed(p.promptIds);
    const greedy: number[] = [], margins: number[] = [];
    for (let k = 0; k < GREEDY_TOKENS; k++) {
      const [id, m] = top2(logits);
      greedy.push(id), margins.push(m);
      if (k + 1 < GREEDY_TOKENS) logits = await gen.feed([id]);
    }
    return { nll, greedy, margins };
  } finally {
    gen.release();
  }
}

/** The probe through llama.cpp: the GGUF (and a GGUF LoRA applied at scale 1), CPU only, never built from source. */
export async function llamaProbe(gguf: string, p: ProbeIds, o: { lora?: string; tokenizeText?: string } = {}): Promise<ProbeResult & { tokens?: number[] }> {
  const { getLlama, LlamaLogLevel } = await import("node-llama-cpp");
  const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error, progressLogs: false });
  const model = await llama.loadModel({ modelPath: gguf, gpuLayers: 0 });
  try {
    const context = await model.createContext({
      contextSize: 256,
      batchSize: 256,
      sequences: 1,
      lora: o.lora ? { adapters: [{ filePath: o.lora, scale: 1 }] } : undefined,
    });
    try {
      const seq = context.getSequence();
      const want = p.nllIds.slice(1);
      const out = await seq.controlledEvaluate(p.nllIds.slice(0, -1).map((t): ControlledEvaluateInputItem => [tk(t), { generateNext: { probabilities: true } }]));
      const nll = want.map((id, i) => -Math.log(out[i]?.next.probabilities?.get(tk(id)) ?? 0));
      await seq.clearHistory();
      const greedy: number[] = [], margins: number[] = [];
      let input = p.promptIds.map((t, i): ControlledEvaluateInputItem => (i === p.promptIds.length - 1 ? [tk(t), { generateNext: { probabilities: true } }] : tk(t)));
      for (let k = 0; k < GREEDY_TOKENS; k++) {
        const res = await seq.controlledEvaluate(input);
        const probs = [...(res.at(-1)?.next.probabilities ?? new Map()).entries()];
        if (!probs.length) throw new Error("llama.cpp returned no probabilities");
        greedy.push(Number(probs[0][0]));
        margins.push(Math.log(probs[0][1]) - Math.log(probs[1]?.[1] ?? 1e-30));
        input = [[probs[0][0], { generateNext: { probabilities: true } }]];
      }
      const tokens = o.tokenizeText !== undefined ? model.tokenize(o.tokenizeText, false).map(Number) : undefined;
      return { nll, greedy, margins, tokens };
    } finally {
      await context.dispose();
    }
  } finally {
    await model.dispose();
  }
}

/** Ours vs the runtime's probe, judged against the format's bound. */
export function compareProbes(ours: ProbeResult, theirs: ProbeResult, quant: Quant, runtime: string, seconds: number): Verification {
  const maxD = maxDiff(ours.nll, theirs.nll);
  const mean = (a: number[]) => a.reduce((s, x) => s + x, 0) / a.length;
  const greedyEqual = ours.greedy.length === theirs.greedy.length && ours.greedy.every((x, i) => x === theirs.greedy[i]);
  const bound = NLL_BOUND[quant];
  return {
    runtime,
    ok: maxD <= bound && (greedyEqual || !GREEDY_MUST_MATCH.has(quant)),
    bound,
    max_abs_dnll: maxD,
    mean_nll_ours: mean(ours.nll),
    mean_nll_runtime: mean(theirs.nll),
    greedy_equal: greedyEqual,
    greedy_ours: ours.greedy,
    greedy_runtime: theirs.greedy,
    greedy_min_margin: Math.min(...ours.margins),
    seconds,
  };
}

function maxDiff(a: number[], b: number[]): number {
  return Math.max(...a.map((x, i) => Math.abs(x - (b[i] ?? Infinity))));
}

/**
 * Runs the probes on a GGUF: ours on the original weights (and, for a quantized file, on the weights
 * as stored) against llama.cpp's. A runtime failure is a failed verification with its error.
 */
export async function verifyGguf(
  o: { gguf: string; lora?: string; model: GeneratorModel; stored?: Map<string, Float32Array>; modelDir: string; quant: Quant },
): Promise<Verification> {
  const t0 = performance.now();
  const p = await probeIds(o.modelDir, o.model.config.generation);
  const ours = await ourProbe(o.model, p);
  const same = o.stored && o.quant !== "f32" ? await ourProbe({ config: o.model.config, weights: o.stored }, p) : null;
  const secs = () => (performance.now() - t0) / 1000;
  try {
    const theirs = await llamaProbe(o.gguf, p, { lora: o.lora, tokenizeText: PROBE_TEXT });
    const v = compareProbes(ours, theirs, o.quant, LLAMA_RUNTIME, secs());
    if (same) {
      v.same_weights_bound = SAME_WEIGHTS_BOUND[o.quant];
      v.max_abs_dnll_same_weights = maxDiff(same.nll, theirs.nll);
      v.ok &&= v.max_abs_dnll_same_weights <= v.same_weights_bound;
    }
    if (theirs.tokens) {
      const mine = p.nllIds.slice(1);
      v.tokenizer_equal = theirs.tokens.length === mine.length && theirs.tokens.every((t, i) => t === mine[i]);
    }
    return v;
  } catch (e) {
    return {
      ...compareProbes(ours, { nll: [], greedy: [], margins: [] }, o.quant, LLAMA_RUNTIME, secs()),
      ok: false,
      error: `llama.cpp could not run the export: ${(e as Error).message}`,
    };
  }
}
