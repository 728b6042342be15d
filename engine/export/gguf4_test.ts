/**
 * Gemma 4 GGUF through llama.cpp (node-llama-cpp 3.21.1, its prebuilt CPU build): tiny random
 * checkpoints exported to f32 GGUF score the probe's token NLLs within 5e-3 of our engine and pick
 * the same greedy tokens. "tiny-4" carries per-layer embeddings, KV sharing and the double-wide MLP;
 * "tiny-4-moe" K=V full layers and the mixture of experts; both proportional RoPE, layer_scalar and
 * the final soft-cap. Each feature is shown to matter for the probe: our engine without it misses
 * llama.cpp's NLLs by more than 4× the bound.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { assert, assertEquals, assertThrows } from "../../tests/_assert.ts";
import { normalizeConfig } from "../gemma/config.ts";
import { tinyRawConfig4 } from "../gemma/testing.ts";
import { loadModel } from "../model_dir.ts";
import { ARCHS, GgufUnsupportedError } from "./gguf_arch.ts";
import { writeModelGguf } from "./gguf.ts";
import { buildVocab, GEMMA4_VISIBLE_TOKENS, TOKEN_TYPE } from "./gguf_vocab.ts";
import { SAME_WEIGHTS_BOUND } from "./verify.ts";
import { realisticTiny } from "./testing.ts";
import { llamaProbe, NLL_BOUND, ourProbe, probeIds, type ProbeResult, verifyGguf } from "./verify.ts";
import type { GemmaConfig } from "../gemma/config.ts";

/** Refused with a GgufUnsupportedError whose message contains `what`. */
function refused(fn: () => unknown, what: string) {
  const e = assertThrows(fn);
  assert(e instanceof GgufUnsupportedError, `expected a GgufUnsupportedError, got ${e.name}: ${e.message}`);
  assert(e.message.includes(what), `"${e.message}" does not say "${what}"`);
}

const maxDiff = (a: number[], b: number[]) => Math.max(...a.map((x, i) => Math.abs(x - b[i])));

/** Our engine's probe NLLs with one feature taken out, against llama.cpp's. */
async function without(
  what: string,
  m: { config: GemmaConfig; weights: Map<string, Float32Array> },
  p: Awaited<ReturnType<typeof probeIds>>,
  theirs: ProbeResult,
  change: (c: GemmaConfig, w: Map<string, Float32Array>) => void,
) {
  const c = structuredClone(m.config), w = new Map(m.weights);
  change(c, w);
  const d = maxDiff((await ourProbe({ config: c, weights: w }, p)).nll, theirs.nll);
  assert(d > 4 * NLL_BOUND.f32, `without ${what}, our NLLs are within ${d} of llama.cpp's: the probe does not see ${what}`);
}

const ones = (w: Map<string, Float32Array>, re: RegExp) => {
  for (const [k, v] of w) if (re.test(k)) w.set(k, new Float32Array(v.length).fill(1));
};

/**
 * A soft-cap and a full-layer RoPE base small enough that the probe's 19 tokens feel them (with the
 * released 30 and 1e6 at this size, dropping either moves the NLLs by only ~3e-3).
 */
const VISIBLE = {
  final_logit_softcapping: 5,
  rope_parameters: { sliding_attention: { rope_type: "default", rope_theta: 10000 }, full_attention: { rope_type: "proportional", partial_rotary_factor: 0.5, rope_theta: 100 } },
};

for (const preset of ["tiny-4", "tiny-4-moe"]) {
  Deno.test(`Gemma 4 GGUF (${preset}, f32) computes in llama.cpp what our engine computes`, async () => {
    const tmp = Deno.makeTempDirSync({ prefix: "g4gguf-" });
    try {
      const dir = await realisticTiny({ preset, out: path.join(tmp, "model"), config: VISIBLE });
      const m = await loadModel(dir);
      const r = writeModelGguf({ dir, config: m.config, weights: m.weights, name: preset }, tmp, "f32");
      assertEquals(r.types, { f32: r.types.f32 });
      const v = await verifyGguf({ gguf: r.file, model: m, modelDir: dir, quant: "f32" });
      assert(!v.error, v.error);
      assert(v.max_abs_dnll <= 5e-3, `max |ΔNLL| ${v.max_abs_dnll} > 5e-3`);
      assert(v.greedy_equal, `greedy ours ${v.greedy_ours} vs llama.cpp ${v.greedy_runtime}`);
      assert(new Set(v.greedy_ours).size > 2, `greedy tokens barely vary (${v.greedy_ours}): the check would not see the layers`);
      assertEquals(v.tokenizer_equal, true);
      assert(v.ok);

      // Each feature changes the probe by far more than the bound, so llama.cpp computes it.
      const p = await probeIds(dir, 4);
      const theirs = await llamaProbe(r.file, p);
      await without("proportional RoPE", m, p, theirs, (c) => (c.ropePartialFull = 1));
      await without("layer_scalar", m, p, theirs, (_c, w) => ones(w, /layer_scalar$/));
      if (preset === "tiny-4") {
        await without("per-layer embeddings", m, p, theirs, (c) => (c.ple = null));
        // (tiny-4-moe's logits stay smaller: there the soft-cap moves the NLLs by ~0.014 only.)
        await without("the final soft-cap", m, p, theirs, (c) => (c.finalSoftcap = null));
      } else {
        await without("the experts", m, p, theirs, (c) => (c.moe = null));
        // router.per_expert_scale is not held to it: post_feedforward_layernorm_2 normalises the
        // expert sum, so only the 2 chosen experts' relative scale shows (3e-4 here).
      }
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
}

Deno.test("Gemma 4 GGUF: what llama.cpp's gemma4 architecture cannot express is refused by name", () => {
  const row = ARCHS.gemma4_text!;
  const cfg = (over: Record<string, unknown>) => normalizeConfig({ ...tinyRawConfig4("ple"), ...over }, "config.json");
  // The stress config is expressible: sliding sources layer 0, full layer 1 (first shared − 2, − 1).
  assertEquals(row.check(cfg({})), []);
  // Shared layers after [full, sliding]: transformers takes the sliding KV from layer 1, llama.cpp from layer 0.
  refused(
    () => row.check(cfg({ layer_types: ["full_attention", "sliding_attention", "sliding_attention", "full_attention"] })),
    "num_kv_shared_layers: shared sliding layer 2 takes keys/values from layer 1, but llama.cpp's gemma4 architecture takes them from layer 0",
  );
  const rp = tinyRawConfig4("ple").rope_parameters as Record<string, Record<string, unknown>>;
  refused(
    () => row.check(cfg({ rope_parameters: { ...rp, full_attention: { ...rp.full_attention, factor: 8 } } })),
    "rope_parameters.full_attention.factor is 8",
  );
  // Only full layers: llama.cpp's gemma4 always builds a sliding-window cache.
  refused(
    () => row.check(normalizeConfig({ ...tinyRawConfig4("kv"), layer_types: ["full_attention", "full_attention", "full_attention"] }, "config.json")),
    "no sliding_attention layer",
  );
});

Deno.test("Gemma 4 GGUF: a PLE table shorter than the vocabulary is padded with row 0, as transformers maps those ids", () => {
  const row = ARCHS.gemma4_text!;
  const c = normalizeConfig({ ...tinyRawConfig4("ple"), vocab_size_per_layer_input: 40 }, "config.json");
  const name = "model.embed_tokens_per_layer.weight";
  const D = c.numLayers * c.ple!.dim;
  assertEquals(row.shapeOf!(c, name, [40, D]), [48, D]);
  const w = Float32Array.from({ length: 40 * D }, (_, i) => i);
  const out = row.dataOf!(c, name, w);
  assertEquals(out.length, 48 * D);
  assertEquals([...out.subarray(0, 40 * D)], [...w]);
  for (let r = 40; r < 48; r++) assertEquals([...out.subarray(r * D, (r + 1) * D)], [...w.subarray(0, D)]);
  assert(row.check(c).some((x) => x.includes("vocab_size_per_layer_input 40")));
  // The rope_freqs tensor stills the pairs past partial_rotary_factor (0.5 of 16: pairs 0–3 turn).
  const [rf] = row.extraTensors!(c);
  assertEquals(rf.name, "rope_freqs.weight");
  assertEquals([...rf.data], [1, 1, 1, 1, 1e30, 1e30, 1e30, 1e30].map(Math.fround));
});

Deno.test('Gemma 4 GGUF vocabulary: tokenizer model "gemma4" with merges, as llama.cpp\'s converter writes it', async () => {
  const tmp = Deno.makeTempDirSync({ prefix: "g4vocab-" });
  try {
    const dir = await realisticTiny({ preset: "tiny-4", out: path.join(tmp, "model") });
    const c = (await loadModel(dir)).config;
    const v = buildVocab(dir, c.vocabSize, { bos: c.bosTokenId, eos: c.eosTokenIds[0], pad: c.padTokenId }, "gemma4");
    const meta = new Map(v.meta);
    assertEquals(meta.get("tokenizer.ggml.model"), { str: "gemma4" });
    assertEquals(meta.get("tokenizer.ggml.pre"), { str: "gemma4" });
    assertEquals(meta.get("tokenizer.ggml.add_space_prefix"), { bool: false });
    assertEquals(meta.get("tokenizer.ggml.add_bos_token"), { bool: true });
    const tj = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8"));
    const merges = (meta.get("tokenizer.ggml.merges") as { strs: string[] }).strs;
    assertEquals(merges.length, tj.model.merges.length);
    assertEquals(merges[1000], tj.model.merges[1000].join(" "));
    // Pieces verbatim (the "llama" flavour turns a user-defined "▁▁" into spaces), the turn tokens control, the channel ones visible.
    const id = (t: string) => v.tokens.indexOf(t);
    assertEquals(v.types[id("<|turn>")], TOKEN_TYPE.CONTROL);
    assertEquals(v.types[id("<turn|>")], TOKEN_TYPE.CONTROL);
    for (const t of ["<|channel>", "<channel|>", "<|tool_call>"]) assert(GEMMA4_VISIBLE_TOKENS.has(t) && v.types[id(t)] === TOKEN_TYPE.USER_DEFINED, `${t} is not USER_DEFINED`);
    assertEquals(meta.get("tokenizer.ggml.eot_token_id"), { u32: id("<turn|>") });
    assertEquals(new Map(buildVocab(dir, c.vocabSize, { bos: 2, eos: 1, pad: 0 }).meta).get("tokenizer.ggml.model"), { str: "llama" });
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

for (const quant of ["q8_0", "q4_0"] as const) {
  Deno.test(`Gemma 4 GGUF (tiny-4, ${quant}) in llama.cpp: within the format's bounds, on the original and the stored weights`, async () => {
    const tmp = Deno.makeTempDirSync({ prefix: `g4gguf-${quant}-` });
    try {
      const dir = await realisticTiny({ preset: "tiny-4", out: path.join(tmp, "model"), config: VISIBLE });
      const m = await loadModel(dir);
      const stored = new Map<string, Float32Array>();
      const r = writeModelGguf({ dir, config: m.config, weights: m.weights, name: "tiny-4" }, tmp, quant, { stored });
      assert((r.types[quant] ?? 0) >= 3 * m.config.numLayers, `few ${quant} tensors: ${JSON.stringify(r.types)}`);
      const v = await verifyGguf({ gguf: r.file, model: m, stored, modelDir: dir, quant });
      console.log(
        `tiny-4 ${quant}: max |ΔNLL| ${v.max_abs_dnll.toFixed(4)} (bound ${v.bound}), stored ${v.max_abs_dnll_same_weights?.toFixed(4)} (bound ${v.same_weights_bound}), greedy ${
          v.greedy_equal ? "equal" : "differs"
        }, margin ${v.greedy_min_margin.toFixed(3)}, ${v.seconds.toFixed(0)} s`,
      );
      assert(!v.error, v.error);
      assertEquals(v.tokenizer_equal, true);
      assert(v.max_abs_dnll <= NLL_BOUND[quant], `max |ΔNLL| ${v.max_abs_dnll} > ${NLL_BOUND[quant]}`);
      assert(v.max_abs_dnll_same_weights! <= SAME_WEIGHTS_BOUND[quant], `stored-weights max |ΔNLL| ${v.max_abs_dnll_same_weights}`);
      // Greedy tokens equal unless our engine itself sees a near tie (as verify.ts allows for block formats).
      assert(v.greedy_equal || v.greedy_min_margin < 0.05, `greedy ours ${v.greedy_ours} vs llama.cpp ${v.greedy_runtime} with margin ${v.greedy_min_margin}`);
      assert(v.ok);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
}
