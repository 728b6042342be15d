/**
 * Verifies a browser ONNX export in its target runtime: @huggingface/transformers (transformers.js,
 * run here on its Node backend, onnxruntime-node) loads the folder as a user would, and a fixed probe
 * (token NLLs of a short text, then greedy tokens) is compared with our own engine on the same
 * weights. The result goes into the export's JSON line and its model card (docs/ONNX_WEB.md).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { LoadedModel } from "../model_dir.ts";
import { TrainEngine } from "../train_engine.ts";
import { generateIds, Generator } from "../generate.ts";
import type { Tokenizer } from "../tokenizer.ts";

export const PROBE_TEXT = "The quick brown fox jumps over the lazy dog. Fine-tuned models should travel well.";
export const PROBE_NEW_TOKENS = 8;
/** Max |ΔNLL| allowed between our engine and transformers.js (issue 15: ONNX ≤ 1e-3). */
export const ONNX_NLL_BOUND = 1e-3;
export const TRANSFORMERS_JS = "@huggingface/transformers@4.3.1";

export interface OnnxVerification {
  runtime: string;
  text: string;
  tokens: number;
  maxAbsNllDiff: number;
  bound: number;
  greedyOurs: number[];
  greedyRuntime: number[];
  greedyEqual: boolean;
  /** transformers.js's tokenizer (from the exported folder) encodes the probe to our ids. */
  tokenizerEqual: boolean;
  pass: boolean;
}

/** Our engine's probe: NLL of each next token, and greedy tokens (no stop ids) after the text. */
export async function ourProbe(model: Pick<LoadedModel, "config" | "weights">, ids: number[]): Promise<{ nll: number[]; greedy: number[] }> {
  // A mixture-of-experts model has no full-fine-tuning graph: its scoring graph is LoRA's, with B = 0
  // (PEFT's initialisation), which computes the base model.
  const engine = await TrainEngine.create(
    model.config.moe ? { model, method: "lora", seed: 0, lora: { r: 1, alpha: 1, rslora: false, dropout: 0, targets: ["q_proj"] } } : { model, method: "full", seed: 0 },
  );
  let nll: number[];
  try {
    nll = await engine.tokenNll({ inputIds: Int32Array.from(ids), labels: Int32Array.from(ids), batchSize: 1, seqLen: ids.length });
  } finally {
    engine.release();
  }
  const gen = new Generator(model);
  try {
    const r = await generateIds(gen, ids, { temperature: 0, maxNewTokens: PROBE_NEW_TOKENS, stopIds: [] });
    return { nll, greedy: r.ids };
  } finally {
    gen.release();
  }
}

function logSoftmaxAt(row: Float32Array, target: number): number {
  let m = -Infinity;
  for (let i = 0; i < row.length; i++) if (row[i] > m) m = row[i];
  let s = 0;
  for (let i = 0; i < row.length; i++) s += Math.exp(row[i] - m);
  return row[target] - m - Math.log(s);
}

/** The same probe through transformers.js loading `dir` from disk (no network, no cache writes). */
export async function runtimeProbe(dir: string, ids: number[], text: string): Promise<{ nll: number[]; greedy: number[]; tokenizerIds: number[] }> {
  const tjs = await import("@huggingface/transformers");
  tjs.env.allowRemoteModels = false;
  tjs.env.allowLocalModels = true;
  tjs.env.useFSCache = false;
  const abs = path.resolve(dir);
  const model = await tjs.AutoModelForCausalLM.from_pretrained(abs, { local_files_only: true, dtype: "fp32", device: "cpu" });
  try {
    const T = ids.length;
    const input_ids = new tjs.Tensor("int64", BigInt64Array.from(ids.map(BigInt)), [1, T]);
    const attention_mask = new tjs.Tensor("int64", new BigInt64Array(T).fill(1n), [1, T]);
    const out = await model({ input_ids, attention_mask });
    const logits = out.logits.data as Float32Array, V = out.logits.dims[2];
    const nll: number[] = [];
    for (let t = 0; t + 1 < T; t++) nll.push(-logSoftmaxAt(logits.subarray(t * V, (t + 1) * V), ids[t + 1]));
    // eos −1: never stop early, so both sides produce exactly PROBE_NEW_TOKENS tokens.
    const gen = await model.generate({ input_ids, attention_mask, max_new_tokens: PROBE_NEW_TOKENS, do_sample: false, eos_token_id: -1 }) as { data: BigInt64Array };
    const greedy = Array.from(gen.data.slice(T), Number);
    const tok = await tjs.AutoTokenizer.from_pretrained(abs, { local_files_only: true });
    const tokenizerIds = Array.from(tok.encode(text) as number[], Number);
    return { nll, greedy, tokenizerIds };
  } finally {
    await model.dispose();
  }
}

export async function verifyOnnxExport(dir: string, model: Pick<LoadedModel, "config" | "weights">, tokenizer: Tokenizer, text = PROBE_TEXT): Promise<OnnxVerification> {
  const ids = tokenizer.encode(text, { addSpecialTokens: true });
  const ours = await ourProbe(model, ids);
  const theirs = await runtimeProbe(dir, ids, text);
  let maxAbsNllDiff = 0;
  for (let i = 0; i < ours.nll.length; i++) maxAbsNllDiff = Math.max(maxAbsNllDiff, Math.abs(ours.nll[i] - (theirs.nll[i] ?? NaN)));
  if (theirs.nll.length !== ours.nll.length) maxAbsNllDiff = NaN;
  const greedyEqual = ours.greedy.length === theirs.greedy.length && ours.greedy.every((x, i) => x === theirs.greedy[i]);
  const tokenizerEqual = theirs.tokenizerIds.join() === ids.join();
  return {
    runtime: `${TRANSFORMERS_JS} (Node, onnxruntime-node)`,
    text,
    tokens: ids.length,
    maxAbsNllDiff,
    bound: ONNX_NLL_BOUND,
    greedyOurs: ours.greedy,
    greedyRuntime: theirs.greedy,
    greedyEqual,
    tokenizerEqual,
    pass: maxAbsNllDiff <= ONNX_NLL_BOUND && greedyEqual && tokenizerEqual,
  };
}

/** The model card of the export folder, with the verification result. */
export function writeOnnxModelCard(dir: string, v: OnnxVerification | null): void {
  const gemma4 = fs.existsSync(path.join(dir, "onnx", "decoder_model_merged.onnx"));
  const layout = gemma4
    ? "Gemma 4, as transformers.js runs it (config.json is the `gemma4` wrapper, text only): `onnx/embed_tokens.onnx` maps `input_ids` to\n" +
      "`inputs_embeds` (and `per_layer_inputs` on E-models); `onnx/decoder_model_merged.onnx` takes those, `attention_mask`, `position_ids`\n" +
      "and `past_key_values.<layer>.key/value` for the layers that own a cache (KV-shared layers read their source's), and returns\n" +
      "`logits` and `present.<layer>.key/value`. Each graph has its own `.onnx_data`; every batch and length dim is dynamic; RoPE and\n" +
      "the causal / sliding-window masks are computed inside the graph."
    : "`onnx/model.onnx` (weights in `onnx/model.onnx_data`) takes `input_ids`, `attention_mask`, `position_ids`\n" +
      "and `past_key_values.<layer>.key/value`, and returns `logits` and `present.<layer>.key/value`; every batch\n" +
      "and length dim is dynamic; RoPE and the causal / sliding-window masks are computed inside the graph.";
  const result = v
    ? `Verified on export in ${v.runtime}: a ${v.tokens}-token probe ("${v.text}") gives token NLLs within ` +
      `${v.maxAbsNllDiff.toExponential(2)} of gemma-tuner's engine (bound ${v.bound}); greedy tokens ${v.greedyEqual ? "equal" : "DIFFER"} ` +
      `(${v.greedyRuntime.join(" ")}); tokenizer ${v.tokenizerEqual ? "encodes the probe identically" : "encodes the probe DIFFERENTLY"}. ` +
      `Result: **${v.pass ? "pass" : "FAIL"}**.`
    : "Not verified (export run with --no-verify).";
  fs.writeFileSync(
    path.join(dir, "README.md"),
    `---
library_name: transformers.js
pipeline_tag: text-generation
---
# Gemma (ONNX, exported by gemma-tuner)

Loads in transformers.js from this folder:

\`\`\`js
import { pipeline, env } from "@huggingface/transformers";
env.localModelPath = "/path/to/parent/"; // or serve the folder
const generate = await pipeline("text-generation", "<this folder's name>", { dtype: "fp32" });
\`\`\`

${layout}

## Verification

${result}
`,
  );
}
