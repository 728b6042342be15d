/** KV-cache generation: cached logits equal full-forward logits, greedy equals the full-forward argmax, stops. */
import { generateIds, Generator, prepackFits } from "./generate.ts";
import { argmax, Sampler } from "./sampling.ts";
import { randomWeights, runSequence, tinyConfig, tinyConfig4 } from "./gemma/testing.ts";

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>) {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

const PROMPT = [2, 17, 5, 33, 40, 8, 8, 21, 3, 9, 11];

// Gemma 4: sliding layers with a ring, KV-shared layers reading their source's cache ("ple"), K=V layers ("kv").
const CASES = [
  ...([1, 2, 3] as const).map((gen) => ({ label: `Gemma ${gen}`, c: tinyConfig(gen, true), seed: gen })),
  ...(["ple", "kv", "moe"] as const).map((v, k) => ({ label: `Gemma 4 (${v})`, c: tinyConfig4(v), seed: 10 + k })),
];
for (const { label, c, seed } of CASES) {
  Deno.test(`${label} (stress: window 3): KV-cache logits equal no-cache logits token by token, and after a chunked prefill`, async () => {
    const w = randomWeights(c, 51 + seed, 0.15);
    const seq = [...PROMPT, 4, 6, 30, 12, 44, 1, 2];
    const full = await runSequence(c, w, [...seq, 0], { logits: true }); // logits at positions 0…T−1
    const V = c.vocabSize;
    const g = new Generator({ config: c, weights: w });
    // One token at a time (decode path, ring buffers wrap on sliding layers).
    for (let t = 0; t < seq.length; t++) {
      const got = await g.feed([seq[t]]);
      const d = maxDiff(got, full.logits!.subarray(t * V, (t + 1) * V));
      if (d > 1e-4) throw new Error(`position ${t}: KV-cache logits differ by ${d}`);
    }
    // A multi-token prefill, then decode.
    g.reset();
    const pre = await g.feed(seq.slice(0, 9));
    if (maxDiff(pre, full.logits!.subarray(8 * V, 9 * V)) > 1e-4) throw new Error("prefill logits differ");
    const next = await g.feed([seq[9]]);
    if (maxDiff(next, full.logits!.subarray(9 * V, 10 * V)) > 1e-4) throw new Error("decode after prefill differs");
    g.release();
  });

  Deno.test(`${label}: greedy generation equals the argmax of the full forward at every step`, async () => {
    const w = randomWeights(c, 61 + seed, 0.3);
    const g = new Generator({ config: c, weights: w });
    const r = await generateIds(g, PROMPT, { temperature: 0, maxNewTokens: 8, stopIds: [] });
    if (r.ids.length !== 8) throw new Error(`generated ${r.ids.length} tokens`);
    let seq = [...PROMPT];
    for (const id of r.ids) {
      const full = await runSequence(c, w, [...seq, 0], { logits: true });
      const V = c.vocabSize;
      const expect = argmax(Float32Array.from(full.logits!.subarray((seq.length - 1) * V, seq.length * V)));
      if (expect !== id) throw new Error(`greedy picked ${id}, full-forward argmax is ${expect} after ${seq.length} tokens`);
      seq = [...seq, id];
    }
    g.release();
  });
}

Deno.test("weights prepacked by ORT or fed as inputs (a model too large for a second copy) decode the same logits", async () => {
  for (const c of [tinyConfig(3, true), tinyConfig4("moe")]) {
    const w = randomWeights(c, 77, 0.15);
    const packed = new Generator({ config: c, weights: w }, { prepack: true }), fed = new Generator({ config: c, weights: w }, { prepack: false });
    if (!packed.prepacked || fed.prepacked) throw new Error("the prepack option was not applied");
    for (const ids of [PROMPT, [7], [19]]) {
      const a = await packed.feed(ids), b = await fed.feed(ids);
      if (maxDiff(a, b) > 1e-5) throw new Error(`${c.modelType}: prepacked and fed weights differ by ${maxDiff(a, b)}`);
    }
    packed.release();
    fed.release();
  }
  // The default: a tiny model prepacks; ten times this machine's memory would not.
  if (!prepackFits(1 << 20) || prepackFits(10 * 2 ** 40)) throw new Error("prepackFits does not follow the machine's memory");
});

Deno.test("generation stops at a stop token and respects max new tokens", async () => {
  const c = tinyConfig(3);
  const w = randomWeights(c, 7, 0.3);
  const g = new Generator({ config: c, weights: w });
  const free = await generateIds(g, PROMPT, { temperature: 0, maxNewTokens: 5, stopIds: [] });
  const stopAt = free.ids[2];
  const stopped = await generateIds(g, PROMPT, { temperature: 0, maxNewTokens: 5, stopIds: [stopAt] });
  if (stopped.stopReason !== "stop" || stopped.ids.length !== free.ids.indexOf(stopAt)) throw new Error(`did not stop at ${stopAt}: ${stopped.ids}`);
  if (free.stopReason !== "length" || free.ids.length !== 5) throw new Error("max new tokens not respected");
  g.release();
});

Deno.test("sampling: seeded and reproducible; top-k 1 is greedy; temperature spreads choices", () => {
  const logits = Float32Array.from({ length: 50 }, (_, i) => Math.sin(i) * 3);
  const a = new Sampler({ temperature: 1, seed: 5 }), b = new Sampler({ temperature: 1, seed: 5 });
  const xa = Array.from({ length: 20 }, () => a.pick(logits, [])), xb = Array.from({ length: 20 }, () => b.pick(logits, []));
  if (xa.join() !== xb.join()) throw new Error("same seed, different samples");
  if (new Set(xa).size < 2) throw new Error("temperature 1 never varied");
  const k1 = new Sampler({ temperature: 1, topK: 1, seed: 1 });
  if (k1.pick(logits, []) !== argmax(logits)) throw new Error("top-k 1 is not greedy");
  const pen = new Sampler({ temperature: 0, repetitionPenalty: 100 });
  if (pen.pick(logits, [argmax(logits)]) === argmax(logits)) throw new Error("repetition penalty had no effect");
});
