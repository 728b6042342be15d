/**
 * Decoding on a low-precision base (engine/generate.ts): a bf16 base decodes exactly as float32 on the
 * bf16-rounded weights; int8 / int4 bases (MatMulNBits over prepacked blocks, 8-bit head) keep the
 * teacher-forced token NLLs within the base-precision bound (engine/quant/policy.ts NLL_BOUND) of the
 * fp32 decoder on a checkpoint with realistic weight scales, and each step down really changes them.
 */
import { paramSpecs } from "./gemma/params.ts";
import { rng } from "./lora.ts";
import { generateIds, Generator } from "./generate.ts";
import { freezeWeights } from "./quant/base.ts";
import { bf16ToF32, toBf16Bits } from "./quant/blocks.ts";
import { NLL_BOUND } from "./quant/policy.ts";
import { realisticConfig, realisticWeights } from "./quant/_realistic.ts";

const c = realisticConfig("decode quality test");

const copy = (w: Map<string, Float32Array>) => new Map([...w].map(([k, v]) => [k, v.slice()]));

/** Teacher-forced NLL of ids[t+1] after ids[0…t], one decode step per token; and the logits. */
async function decodeNll(g: Generator, ids: number[]): Promise<{ nll: number[]; logits: Float32Array[] }> {
  g.reset();
  const nll: number[] = [], logits: Float32Array[] = [];
  for (let t = 0; t + 1 < ids.length; t++) {
    const l = await g.feed([ids[t]]);
    logits.push(l.slice());
    let max = -Infinity;
    for (const x of l) max = Math.max(max, x);
    let sum = 0;
    for (const x of l) sum += Math.exp(x - max);
    nll.push(Math.log(sum) + max - l[ids[t + 1]]);
  }
  return { nll, logits };
}

const w = realisticWeights(c, 42);
const r = rng(9);
const ids = Array.from({ length: 40 }, () => 2 + Math.floor(r() * (c.vocabSize - 2)));

Deno.test("decode, bf16 base: logits equal the fp32 decoder's on the bf16-rounded weights", async () => {
  const rounded = new Map([...w].map(([k, v]) => [k, paramSpecs(c).find((s) => s.name === k)!.kind === "norm" ? v : bf16ToF32(toBf16Bits(v))]));
  const a = new Generator({ config: c, weights: rounded }), b = new Generator(freezeWeights(c, copy(w), "bf16"));
  if (b.precision !== "bf16") throw new Error(`precision ${b.precision}`);
  const x = await decodeNll(a, ids.slice(0, 12)), y = await decodeNll(b, ids.slice(0, 12));
  for (let t = 0; t < x.logits.length; t++) {
    for (let i = 0; i < c.vocabSize; i++) {
      if (x.logits[t][i] !== y.logits[t][i]) throw new Error(`step ${t}, logit ${i}: ${y.logits[t][i]} vs ${x.logits[t][i]}`);
    }
  }
  a.release(), b.release();
});

Deno.test("decode, int8/int4 base (MatMulNBits): token NLLs within the base-precision bound of fp32; greedy decoding runs", async () => {
  const ref = new Generator({ config: c, weights: w });
  const base = await decodeNll(ref, ids);
  const spread = Math.max(...base.nll) - Math.min(...base.nll);
  if (spread < 2) throw new Error(`fp32 NLLs span only ${spread.toFixed(3)} nats: the test model is too uniform`);
  const shift: Record<string, number> = {};
  for (const p of ["int8", "int4"] as const) {
    const g = new Generator(freezeWeights(c, copy(w), p));
    const q = await decodeNll(g, ids);
    shift[p] = q.nll.reduce((a, v, i) => a + Math.abs(v - base.nll[i]), 0) / q.nll.length;
    console.log(`${p} decode: mean |ΔNLL| ${shift[p].toExponential(3)} nats/token (bound ${NLL_BOUND[p]})`);
    if (!(shift[p] <= NLL_BOUND[p])) throw new Error(`${p} decode: mean |ΔNLL| ${shift[p]} exceeds ${NLL_BOUND[p]}`);
    // Prefill in one chunk agrees with token-by-token decoding (same session, other shapes). Not bit for
    // bit: accuracy_level 4 quantizes the activations to int8, and the kernel's tiling differs with M.
    g.reset();
    const pre = await g.feed(ids.slice(0, 20));
    const d = pre.reduce((m, v, i) => Math.max(m, Math.abs(v - q.logits[19][i])), 0);
    const range = Math.max(...q.logits[19]) - Math.min(...q.logits[19]);
    console.log(`${p}: prefill vs decode max |Δlogit| ${d.toExponential(2)} (logit range ${range.toFixed(2)})`);
    if (!(d <= 0.02 * range)) throw new Error(`${p}: prefill logits differ from decode logits by ${d} (range ${range})`);
    const out = await generateIds(g, ids.slice(0, 8), { temperature: 0, maxNewTokens: 6, stopIds: [] });
    if (out.ids.length !== 6) throw new Error(`${p}: generated ${out.ids.length} tokens`);
    g.release();
  }
  if (!(shift.int4 > shift.int8 && shift.int8 > 0)) throw new Error(`shifts not ordered int4 > int8 > 0: ${JSON.stringify(shift)}`);
  ref.release();
});
