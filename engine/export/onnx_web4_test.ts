/**
 * Gemma 4 browser ONNX export, run in real transformers.js 4.3.1 (its Gemma4ForConditionalGeneration,
 * text only: sessions embed_tokens + decoder_model_merged). Tiny random stress checkpoints: "tiny-4"
 * carries per-layer embeddings, KV sharing and the double-wide MLP; "tiny-4-moe" K=V full layers and
 * the mixture of experts; both proportional RoPE on full layers, layer_scalar and the final soft-cap.
 * transformers.js must score the probe's tokens within WEB4_NLL_BOUND of our engine and generate the
 * same greedy tokens through its KV cache (present → past_key_values, shared layers reading their
 * source's cache). Each feature is shown to be visible: our engine without it misses
 * transformers.js's NLLs by more than 4× the bound.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as ort from "onnxruntime-node";
import { assert, assertEquals } from "../../tests/_assert.ts";
import type { GemmaConfig } from "../gemma/config.ts";
import { normalizeConfig } from "../gemma/config.ts";
import { tinyRawConfig4 } from "../gemma/testing.ts";
import { loadModel } from "../model_dir.ts";
import { loadTokenizer } from "../tokenizer.ts";
import { webExportRefusal, webOnnxFiles, writeWebExport } from "./onnx_web.ts";
import { PROBE_TEXT, runtimeProbe, verifyOnnxExport } from "./onnx_probe.ts";
import { realisticTiny } from "./testing.ts";
import { ourProbe } from "./verify.ts";

/** Max |ΔNLL| held to here (the product's ONNX bound is 1e-3; Gemma 4's f32 graphs do far better). */
const WEB4_NLL_BOUND = 3e-4;

/**
 * A soft-cap and a full-layer RoPE base small enough that the short probe feels them (as gguf4_test.ts),
 * and a sliding window of 5 so the 19-token probe crosses it and the in-graph sliding mask matters.
 */
const VISIBLE = {
  final_logit_softcapping: 5,
  sliding_window: 5,
  rope_parameters: { sliding_attention: { rope_type: "default", rope_theta: 10000 }, full_attention: { rope_type: "proportional", partial_rotary_factor: 0.5, rope_theta: 100 } },
};

const maxDiff = (a: number[], b: number[]) => Math.max(...a.map((x, i) => Math.abs(x - b[i])));

const ones = (w: Map<string, Float32Array>, re: RegExp) => {
  for (const [k, v] of w) if (re.test(k)) w.set(k, new Float32Array(v.length).fill(1));
};

for (const preset of ["tiny-4", "tiny-4-moe"]) {
  Deno.test(`Gemma 4 (${preset}): the browser ONNX export runs in transformers.js with our engine's NLLs and cached greedy tokens`, async () => {
    const tmp = Deno.makeTempDirSync({ prefix: "g4web-" });
    try {
      const dir = await realisticTiny({ preset, out: path.join(tmp, "model"), config: VISIBLE });
      const m = await loadModel(dir);
      const tokenizer = await loadTokenizer(dir);
      const c = m.config;
      const out = path.join(tmp, "web");
      const files = writeWebExport(c, m.weights, dir, out);
      for (
        const f of [
          "config.json",
          "onnx/embed_tokens.onnx",
          "onnx/embed_tokens.onnx_data",
          "onnx/decoder_model_merged.onnx",
          "onnx/decoder_model_merged.onnx_data",
          "tokenizer.json",
        ]
      ) {
        assert(files.includes(f) && fs.existsSync(path.join(out, f)), `export lacks ${f}: ${files}`);
      }
      const cfg = JSON.parse(fs.readFileSync(path.join(out, "config.json"), "utf8"));
      assertEquals([cfg.model_type, cfg.architectures[0], cfg.text_config.model_type], ["gemma4", "Gemma4ForConditionalGeneration", "gemma4_text"]);
      assertEquals(cfg["transformers.js_config"].use_external_data_format, { "embed_tokens.onnx": 1, "decoder_model_merged.onnx": 1 });

      // The I/O contract as onnxruntime reads it: names, and a cache only for the layers that own one.
      const owners = c.layers.flatMap((l, i) => (l.kvSource === i ? [i] : []));
      if (preset === "tiny-4") assert(owners.length < c.numLayers, "tiny-4 should share KV");
      const s = await ort.InferenceSession.create(path.join(out, "onnx", "decoder_model_merged.onnx"));
      const pkv = owners.flatMap((i) => [`past_key_values.${i}.key`, `past_key_values.${i}.value`]);
      assertEquals(s.inputNames, ["inputs_embeds", ...(c.ple ? ["per_layer_inputs"] : []), "attention_mask", "position_ids", ...pkv]);
      assertEquals([...s.outputNames].sort(), ["logits", ...owners.flatMap((i) => [`present.${i}.key`, `present.${i}.value`])].sort());
      for (const i of owners) {
        const meta = s.inputMetadata.find((x) => x.name === `past_key_values.${i}.key`) as { shape?: (number | string)[] };
        assertEquals(meta.shape, ["batch_size", c.layers[i].kvHeads, "past_sequence_length", c.layers[i].headDim]);
      }
      await s.release();
      const e = await ort.InferenceSession.create(path.join(out, "onnx", "embed_tokens.onnx"));
      assertEquals([...e.outputNames].sort(), ["inputs_embeds", ...(c.ple ? ["per_layer_inputs"] : [])].sort());
      await e.release();

      const v = await verifyOnnxExport(out, m, tokenizer);
      console.log(`${preset}: max |ΔNLL| ${v.maxAbsNllDiff.toExponential(2)} over ${v.tokens} tokens, greedy ${v.greedyRuntime.join(" ")} (ours ${v.greedyOurs.join(" ")})`);
      assert(v.tokens >= 12, `probe too short: ${v.tokens}`);
      assert(v.maxAbsNllDiff <= WEB4_NLL_BOUND, `NLLs differ by ${v.maxAbsNllDiff}`);
      assert(v.greedyEqual, `greedy tokens: ours ${v.greedyOurs}, transformers.js ${v.greedyRuntime}`);
      assert(new Set(v.greedyOurs).size > 2, `greedy tokens barely vary (${v.greedyOurs}): the check would not see the cache`);
      assert(v.tokenizerEqual, "transformers.js's tokenizer encodes the probe differently");
      assert(v.pass, JSON.stringify(v));

      // Each feature moves the probe by far more than the bound, so transformers.js ran it.
      const ids = tokenizer.encode(PROBE_TEXT, { addSpecialTokens: true });
      const theirs = await runtimeProbe(out, ids, PROBE_TEXT);
      const without = async (what: string, change: (c: GemmaConfig, w: Map<string, Float32Array>) => void) => {
        const cc = structuredClone(c), w = new Map(m.weights);
        change(cc, w);
        const d = maxDiff((await ourProbe({ config: cc, weights: w }, { nllIds: ids, promptIds: ids })).nll, theirs.nll);
        assert(d > 4 * WEB4_NLL_BOUND, `without ${what}, our NLLs are within ${d} of transformers.js's: the probe does not see ${what}`);
        return d;
      };
      const seen: Record<string, number> = {};
      seen["proportional RoPE"] = await without("proportional RoPE", (cc) => (cc.ropePartialFull = 1));
      seen["layer_scalar"] = await without("layer_scalar", (_cc, w) => ones(w, /layer_scalar$/));
      seen["the final soft-cap"] = await without("the final soft-cap", (cc) => (cc.finalSoftcap = null));
      seen["the sliding window"] = await without("the sliding window", (cc) => (cc.slidingWindow = null));
      if (preset === "tiny-4") {
        seen["per-layer embeddings"] = await without("per-layer embeddings", (cc) => (cc.ple = null));
        // KV sharing off: every layer computes its own keys and values from its stored (random) k/v weights.
        // (Its stored k/v weights are not loaded, so it gets its source layer's projections and k-norm.)
        seen["KV sharing"] = await without("KV sharing", (cc, w) =>
          cc.layers.forEach((l, i) => {
            if (l.kvSource === i) return;
            for (const [k, t] of m.weights) {
              const own = k.replace(`model.layers.${l.kvSource}.self_attn.`, `model.layers.${i}.self_attn.`);
              if (own !== k && /\.(k_proj|v_proj|k_norm)\./.test(k)) w.set(own, t);
            }
            l.kvSource = i;
          }));
      } else {
        seen["the experts"] = await without("the experts", (cc) => (cc.moe = null));
        // K=V full layers: V is the raw K projection, then the weightless v-norm; without that norm the values differ.
        assert(c.layers.some((l) => l.kEqV), "tiny-4-moe should have K=V layers");
        seen["the v-norm"] = await without("the v-norm", (cc) => (cc.vNorm = false));
      }
      console.log(`${preset}: without each feature, max |ΔNLL| ${Object.entries(seen).map(([k, d]) => `${k} ${d.toFixed(3)}`).join(", ")}`);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
}

Deno.test("Gemma 4 browser export: a cache layout transformers.js cannot name is refused by name", () => {
  const ok = normalizeConfig(tinyRawConfig4("ple"), "config.json");
  assertEquals(webExportRefusal(ok), null);
  assertEquals(webOnnxFiles(ok), ["onnx/embed_tokens.onnx", "onnx/embed_tokens.onnx_data", "onnx/decoder_model_merged.onnx", "onnx/decoder_model_merged.onnx_data"]);
  // transformers.js keys the cache by num_kv_shared_layers: a config.json that says 0 while layers share is refused.
  const lying = structuredClone(ok);
  lying.raw = { ...lying.raw, num_kv_shared_layers: 0 };
  const why = webExportRefusal(lying);
  assert(why?.includes("num_kv_shared_layers 0"), String(why));
});
