/**
 * --base-precision on `score` and `generate` (docs/QUANT.md), as a user runs them (real `deno run
 * main.ts` processes on a checkpoint written to disk), and the low-precision KV-cache decoder against
 * the float32 decoder run on the very weights the base holds.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { assert } from "./_assert.ts";
import { TIMEOUTS } from "./_timeouts.ts";
import { initModel } from "../engine/init_model.ts";
import { Generator, loadForGeneration } from "../engine/generate.ts";
import { loadModel } from "../engine/model_dir.ts";
import { toBf16Bits } from "../engine/quant/blocks.ts";
import { NLL_BOUND } from "../engine/quant/policy.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;

async function cli(args: string[]) {
  const p = new Deno.Command(Deno.execPath(), { args: ["run", "-A", MAIN, ...args], stdout: "piped", stderr: "piped" }).spawn();
  const timer = setTimeout(() => p.kill("SIGKILL"), TIMEOUTS.process * 2);
  const out = await p.output();
  clearTimeout(timer);
  return { code: out.code, stdout: new TextDecoder().decode(out.stdout), stderr: new TextDecoder().decode(out.stderr) };
}
const lastJson = (s: string) => JSON.parse(s.trim().split("\n").at(-1)!);

const IDS = Array.from({ length: 24 }, (_, i) => 2 + ((i * 37 + 11) % 500));

Deno.test("score --base-precision: bf16 and int4 NLLs within the documented bounds of fp32, int4 not bit-equal", async () => {
  const tmp = fs.mkdtempSync("/tmp/gt-bp-score-");
  try {
    // Embeddings of std 0.5 so the fp32 model is not uniform (the merge test's checkpoint, quality_test.ts).
    const model = await initModel({ preset: "tiny-3", out: path.join(tmp, "model"), seed: 3, embedStd: 0.5 });
    const nll: Record<string, number[]> = {};
    for (const p of ["fp32", "bf16", "int4"]) {
      const r = await cli(["score", "--model", model, "--ids", IDS.join(","), "--base-precision", p]);
      assert(r.code === 0, `score --base-precision ${p} exited ${r.code}: ${r.stderr.slice(-1500)}`);
      nll[p] = lastJson(r.stdout).token_nll;
      assert(nll[p].length === IDS.length - 1, `${p}: ${nll[p].length} NLLs`);
    }
    const shift = (p: string) => nll[p].reduce((a, v, i) => a + Math.abs(v - nll.fp32[i]), 0) / nll[p].length;
    const spread = Math.max(...nll.fp32) - Math.min(...nll.fp32);
    assert(spread > 0.5, `fp32 NLLs span only ${spread} nats: the model is too uniform to show a shift`);
    assert(shift("bf16") <= NLL_BOUND.bf16, `bf16 mean |ΔNLL| ${shift("bf16")} > ${NLL_BOUND.bf16}`);
    assert(shift("int4") <= NLL_BOUND.int4, `int4 mean |ΔNLL| ${shift("int4")} > ${NLL_BOUND.int4}`);
    // The flag changes what is loaded: int4 moves the NLLs, and more than bf16 does.
    assert(nll.int4.some((v, i) => v !== nll.fp32[i]), "int4 NLLs are bit-equal to fp32: the flag loaded the fp32 base");
    assert(shift("int4") > shift("bf16"), `int4 shift ${shift("int4")} not above bf16's ${shift("bf16")}`);
    // --grad needs every weight in float32.
    const g = await cli(["score", "--model", model, "--ids", IDS.join(","), "--base-precision", "int8", "--grad"]);
    assert(g.code === 2 && g.stderr.includes("--grad") && g.stderr.includes("--base-precision fp32"), `--grad on int8: ${g.code} ${g.stderr}`);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

Deno.test("score and generate refuse a bad --base-precision naming the flag and the choices, and a device without the kernel", async () => {
  for (const verb of ["score", "generate"]) {
    const r = await cli([verb, "--model", "/nonexistent", "--ids", "2,3", "--base-precision", "fp16"]);
    assert(r.code === 2, `${verb}: exit ${r.code}`);
    assert(r.stderr.includes("--base-precision") && r.stderr.includes("fp32, bf16, int8, int4") && r.stderr.includes('"fp16"'), `${verb}: ${r.stderr}`);
  }
  // CUDA is not on this machine: int4 is refused before the model loads (the directory does not exist),
  // naming the device, the precision and what works.
  const r = await cli(["score", "--model", "/nonexistent", "--ids", "2,3", "--base-precision", "int4", "--device", "cuda"]);
  assert(r.code !== 0 && /int4/.test(r.stderr) && /cuda/.test(r.stderr) && /device cpu/.test(r.stderr) && !/nonexistent/.test(r.stderr), `cuda int4: ${r.code} ${r.stderr}`);
});

Deno.test("generate --base-precision: the CLI loads the base in that precision (the logits move, greedy ids come out)", async () => {
  const tmp = fs.mkdtempSync("/tmp/gt-bp-gen-");
  try {
    // Gemma 4 with per-layer embeddings and KV sharing.
    const dir = await initModel({ preset: "tiny-4", out: path.join(tmp, "model"), seed: 5, embedStd: 0.5 });
    const prompt = [2, 17, 5, 33, 40, 8];
    const logits = async (g: Generator) => {
      const a = await g.feed(prompt);
      g.release();
      return [...a];
    };
    const low = await loadForGeneration(dir, undefined, "bf16");
    assert(low.base?.precision === "bf16" && !low.weights.has("model.embed_tokens.weight"), "the bf16 base was not loaded in its frozen form");
    const got = await logits(new Generator(low));
    const orig = await logits(new Generator(await loadModel(dir)));
    const moved = got.reduce((a, v, i) => Math.max(a, Math.abs(v - orig[i])), 0);
    assert(moved > 1e-4, `bf16 logits equal the fp32 model's (${moved}): nothing was quantized`);
    const r = await cli(["generate", "--model", dir, "--ids", prompt.join(","), "--max-new-tokens", "4", "--temperature", "0", "--json", "--base-precision", "bf16"]);
    assert(r.code === 0, `generate exited ${r.code}: ${r.stderr.slice(-1500)}`);
    const j = lastJson(r.stdout);
    assert(j.base_precision === "bf16" && Array.isArray(j.ids) && j.ids.length > 0, r.stdout);
    // int4 on a model whose input sizes are not whole 32-wide blocks (tiny-4): those weights decode from
    // their dequantized values instead of MatMulNBits, which refuses them.
    const q = await cli(["generate", "--model", dir, "--ids", prompt.join(","), "--max-new-tokens", "4", "--temperature", "0", "--json", "--base-precision", "int4"]);
    assert(q.code === 0, `generate --base-precision int4 exited ${q.code}: ${q.stderr.slice(-1500)}`);
    const jq = lastJson(q.stdout);
    assert(jq.base_precision === "int4" && Array.isArray(jq.ids) && jq.ids.length > 0, q.stdout);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

Deno.test("a bf16 table left in its file (Gemma 4's per-layer table) reads the same rows and chunks as one held in memory", async () => {
  const { EmbeddingTable } = await import("../engine/quant/table.ts");
  const V = 37, H = 24, at = 8 + 2 * 5; // after a header, as a safetensors tensor is
  const bits = toBf16Bits(Float32Array.from({ length: V * H }, (_, i) => Math.sin(i * 0.37) * 3));
  const file = Deno.makeTempFileSync();
  try {
    const bytes = new Uint8Array(at + bits.byteLength);
    bytes.fill(0xaa, 0, at);
    bytes.set(new Uint8Array(bits.buffer), at);
    fs.writeFileSync(file, bytes);
    const mem = EmbeddingTable.fromBf16(bits, V, H), disk = EmbeddingTable.fromFile(file, at, V, H);
    assert(disk.inFile && !mem.inFile && disk.bytes === mem.bytes, "table kinds");
    const a = new Float32Array(2 * H), b = new Float32Array(2 * H);
    for (const v of [0, 5, V - 1]) {
      mem.row(v, a, H);
      disk.row(v, b, H);
      assert(a.every((x, i) => x === b[i]) && a.subarray(H).some((x) => x !== 0), `row ${v} differs`);
    }
    const c1 = mem.chunk(3, 10).slice(), c2 = disk.chunk(3, 10);
    assert(c1.every((x, i) => x === c2[i]), "chunk differs");
    assert(disk.allBits().every((x, i) => x === bits[i]), "allBits differs");
    let refused = "";
    try {
      EmbeddingTable.fromFile(file, at + 2, V, H);
    } catch (e) {
      refused = (e as Error).message;
    }
    assert(refused.includes("too short"), `a short file was not refused: ${refused}`);
  } finally {
    fs.rmSync(file, { force: true });
  }
});
