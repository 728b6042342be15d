/**
 * Decode speed beside llama.cpp on the same weights (issue #14): makes one random-weight checkpoint of
 * a preset (engine/init_model.ts), exports it with our GGUF writer (engine/export/gguf.ts), and times
 * greedy decoding in gemma-tuner's Generator and in node-llama-cpp (CPU, same thread count, same prompt
 * length and new tokens), alternating the two within each precision pair. One JSON line per run.
 *
 *   deno run -A --v8-flags=--max-old-space-size=8192 scripts/bench_decode_llamacpp.ts \
 *     [--preset gemma-3-270m] [--layers N] [--pairs fp32:f32,int8:q8_0,int4:q4_0] [--rounds 2]
 *     [--prompt 16] [--new 32] [--threads 2] [--dir /tmp/decode-bench]
 *
 * tokens/s counts the decode steps after the first generated token on both sides: (new − 1) tokens
 * over the time from the first token to the last (prompt processing is excluded on both sides).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { initModel } from "../engine/init_model.ts";
import { loadModel } from "../engine/model_dir.ts";
import { type Quant, writeModelGguf } from "../engine/export/gguf.ts";
import { generateIds, Generator, loadForGeneration } from "../engine/generate.ts";
import { BASE_PRECISIONS, type BasePrecision } from "../engine/quant/blocks.ts";
import { collectGarbage } from "../engine/gc.ts";
import type { Token } from "node-llama-cpp";

function flag(name: string, dflt: string): string {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 && Deno.args[i + 1] !== undefined ? Deno.args[i + 1] : dflt;
}

const preset = flag("preset", "gemma-3-270m");
const layers = Number(flag("layers", "0")) || undefined;
const rounds = Number(flag("rounds", "2"));
const promptLen = Number(flag("prompt", "16"));
const newTokens = Number(flag("new", "32"));
const threads = Number(flag("threads", "2"));
const dir = path.resolve(flag("dir", `/tmp/decode-bench-${preset}${layers ? `-${layers}` : ""}`));
const pairs = flag("pairs", "fp32:f32,int8:q8_0,int4:q4_0").split(",").map((p) => p.split(":") as [BasePrecision, Quant]);
for (const [ours] of pairs) if (!BASE_PRECISIONS.includes(ours)) throw new RangeError(`--pairs: "${ours}" is not a base precision (${BASE_PRECISIONS.join(", ")})`);

const load = () => Number(Deno.readTextFileSync("/proc/loadavg").split(" ")[0]);
const modelDir = path.join(dir, "model");
if (!fs.existsSync(path.join(modelDir, "model.safetensors"))) await initModel({ preset, out: modelDir, layers, seed: 7 });
const prompt = Array.from({ length: promptLen }, (_, i) => 2 + ((i * 7919) % 5000));

/** Decode rate from token timestamps: (n − 1) steps between the first and the last token. */
function rate(stamps: number[]): number {
  return (stamps.length - 1) / ((stamps.at(-1)! - stamps[0]) / 1000);
}

async function ours(gen: Generator): Promise<{ tps: number; ids: number[] }> {
  const stamps: number[] = [];
  const r = await generateIds(gen, prompt, { temperature: 0, maxNewTokens: newTokens, stopIds: [], onToken: () => void stamps.push(performance.now()) });
  return { tps: rate(stamps), ids: r.ids };
}

const { getLlama, LlamaLogLevel } = await import("node-llama-cpp");
const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error, progressLogs: false });

for (const [precision, quant] of pairs) {
  const gguf = path.join(dir, `bench-${quant}.gguf`);
  if (!fs.existsSync(gguf)) {
    const m = await loadModel(modelDir);
    writeModelGguf({ dir: modelDir, config: m.config, weights: m.weights, name: "bench" }, dir, quant);
    collectGarbage();
  }
  const gen = new Generator(await loadForGeneration(modelDir, undefined, precision), { threads });
  await generateIds(gen, prompt, { temperature: 0, maxNewTokens: 4, stopIds: [] }); // builds (and prepacks) the session
  const model = await llama.loadModel({ modelPath: gguf, gpuLayers: 0 });
  const context = await model.createContext({ contextSize: 512, batchSize: 512, sequences: 1, threads });
  const seq = context.getSequence();
  const theirs = async () => {
    await seq.clearHistory();
    const stamps: number[] = [], ids: number[] = [];
    for await (const t of seq.evaluate(prompt as Token[], { temperature: 0 })) {
      stamps.push(performance.now());
      ids.push(Number(t));
      if (ids.length >= newTokens) break;
    }
    return { tps: rate(stamps), ids };
  };
  await theirs(); // warm-up
  for (let r = 0; r < rounds; r++) {
    for (const side of r % 2 ? ["llama.cpp", "gemma-tuner"] : ["gemma-tuner", "llama.cpp"]) {
      const l0 = load();
      const res = side === "gemma-tuner" ? await ours(gen) : await theirs();
      console.log(JSON.stringify({
        engine: side,
        precision: side === "gemma-tuner" ? precision : quant,
        preset,
        layers: gen.config.numLayers,
        threads,
        prompt_tokens: promptLen,
        new_tokens: res.ids.length,
        decode_tokens_per_second: Math.round(res.tps * 100) / 100,
        load_before: l0,
        load_after: load(),
        greedy_ids: res.ids.slice(0, 6),
      }));
    }
  }
  await context.dispose();
  await model.dispose();
  gen.release();
  collectGarbage();
}
