/**
 * `gemma-tuner export` on a model directory of the HF cache layout with a PEFT adapter: the merged
 * f32 GGUF and the GGUF LoRA, each verified by the verb itself in llama.cpp (node-llama-cpp 3.21.1,
 * CPU); the Modelfile; the Hub id in adapter_config.json; refusals by name. A quantized GGUF (q8_0)
 * is verified by the export job's test (tests/export_job_route_test.ts).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { realisticTiny } from "../engine/export/testing.ts";
import { loadModel } from "../engine/model_dir.ts";
import { initLora, rng } from "../engine/lora.ts";
import { writeAdapter } from "../engine/peft.ts";
import { hubIdOf } from "../engine/hub_id.ts";
import { assert, assertEquals } from "../tests/_assert.ts";
import { TIMEOUTS } from "../tests/_timeouts.ts";
import { listFiles } from "./export.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;

async function cli(...args: string[]) {
  const child = new Deno.Command(Deno.execPath(), { args: ["run", "-A", MAIN, "export", ...args], stdout: "piped", stderr: "piped" }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), TIMEOUTS.process * 5);
  const out = await child.output();
  clearTimeout(timer);
  const stdout = new TextDecoder().decode(out.stdout), stderr = new TextDecoder().decode(out.stderr);
  const last = stdout.trim().split("\n").at(-1) ?? "";
  // deno-lint-ignore no-explicit-any
  let line: Record<string, any> | null = null;
  try {
    line = JSON.parse(last);
  } catch { /* a refusal prints no result line */ }
  return { code: out.code, line, stderr };
}

/** A tiny Gemma 3 as the HF cache holds it, and a LoRA adapter that moves its NLLs by a lot. */
async function fixture() {
  const root = fs.mkdtempSync("/tmp/gt-export-cli-");
  const snap = path.join(root, "hub", "models--acme--tiny-gemma", "snapshots", "0123456789abcdef0123456789abcdef01234567");
  await realisticTiny({ preset: "tiny-3", out: snap, seed: 5 });
  const m = await loadModel(snap);
  const lora = { r: 4, alpha: 8, dropout: 0, rslora: false, targets: ["q_proj", "v_proj", "down_proj"] as ("q_proj" | "v_proj" | "down_proj")[] };
  const t = initLora(m.config, lora, 2);
  const r = rng(3);
  for (const [k, v] of t) if (k.includes("lora_B")) v.data.forEach((_, i) => (v.data[i] = (r() - 0.5) * 0.5));
  const adapter = path.join(root, "my-adapter");
  writeAdapter(adapter, t, lora, snap);
  return { root, snap, adapter };
}

Deno.test("hub id: a snapshot folder of the HF cache (as given or behind a link) names its repo; other paths none", () => {
  const root = fs.mkdtempSync("/tmp/gt-hubid-");
  const snap = path.join(root, "models--google--gemma-3-270m-it", "snapshots", "abc");
  fs.mkdirSync(snap, { recursive: true });
  fs.symlinkSync(snap, path.join(root, "linked"));
  assertEquals(hubIdOf(snap), "google/gemma-3-270m-it");
  assertEquals(hubIdOf(snap + "/"), "google/gemma-3-270m-it");
  assertEquals(hubIdOf(path.join(root, "linked")), "google/gemma-3-270m-it");
  assertEquals(hubIdOf(root), null);
  assertEquals(hubIdOf(path.join(snap, "..")), null);
  fs.rmSync(root, { recursive: true });
});

Deno.test("export --model --adapter: --gguf f32 and --lora-gguf, each verified in llama.cpp; Modelfile; Hub id", async () => {
  const { root, snap, adapter } = await fixture();
  try {
    // The adapter names its base by the Hub id, not the local snapshot path.
    assertEquals(JSON.parse(fs.readFileSync(path.join(adapter, "adapter_config.json"), "utf8")).base_model_name_or_path, "acme/tiny-gemma");

    const f32 = await cli("--model", snap, "--adapter", adapter, "--gguf", "--out", path.join(root, "f32"));
    assert(f32.code === 0 && f32.line, `f32 export failed (${f32.code}): ${f32.stderr}`);
    const v = f32.line.verification;
    assert(v.runtime.includes("llama.cpp") && v.pass === true, `f32 verification: ${JSON.stringify(v)}`);
    assert(v.max_abs_dnll <= 5e-3 && v.bound === 5e-3, `f32 max |ΔNLL| ${v.max_abs_dnll}`);
    assert(v.greedy_equal === true && v.greedy_ours.length === 8, `f32 greedy: ours ${v.greedy_ours}, llama.cpp ${v.greedy_runtime}`);
    assert(v.tokenizer_equal === true, "llama.cpp tokenizes the probe differently");
    const gguf = path.join(root, "f32", "tiny-gemma-my-adapter-f32.gguf");
    assertEquals(f32.line.file, gguf);
    const head = new TextDecoder("latin1").decode(fs.readFileSync(gguf).subarray(0, 1 << 16));
    assert(head.startsWith("GGUF") && head.includes("general.source.huggingface.repository") && head.includes("acme/tiny-gemma"), "GGUF metadata lacks the Hub id");

    const mf = fs.readFileSync(path.join(root, "f32", "Modelfile"), "utf8");
    assert(mf.includes("FROM ./tiny-gemma-my-adapter-f32.gguf\n"), `Modelfile FROM: ${mf}`);
    assert(/TEMPLATE """[\s\S]*<start_of_turn>user\n[\s\S]*<end_of_turn>\n[\s\S]*<start_of_turn>model\n[\s\S]*"""/.test(mf), `Modelfile TEMPLATE: ${mf}`);
    assert(!mf.includes("<bos>"), "the template must not add a second <bos> (llama.cpp adds one)");
    assert(mf.includes('PARAMETER stop "<end_of_turn>"') && /PARAMETER temperature \d/.test(mf) && /PARAMETER num_ctx 2048\n/.test(mf), `Modelfile parameters: ${mf}`);
    const card = fs.readFileSync(path.join(root, "f32", "README.md"), "utf8");
    assert(card.includes("Result: **pass**") && card.includes('base_model: "acme/tiny-gemma"'), `model card: ${card}`);

    const lo = await cli("--model", snap, "--adapter", adapter, "--lora-gguf", "--out", path.join(root, "lora"));
    assert(lo.code === 0 && lo.line, `LoRA GGUF export failed (${lo.code}): ${lo.stderr}`);
    const vl = lo.line.verification;
    assert(vl.pass && vl.max_abs_dnll <= 5e-3 && vl.greedy_equal, `LoRA verification: ${JSON.stringify(vl)}`);
    // The check can see the adapter: without it the NLLs differ by far more than the bound.
    assert(vl.adapter_effect_max_abs_dnll > 20 * vl.bound, `the adapter barely changes the model (${vl.adapter_effect_max_abs_dnll}): the check would not see it missing`);
    assertEquals(lo.line.files.map((f: { name: string }) => f.name), ["README.md", "tiny-gemma-my-adapter-lora.gguf"]);
    assert(!fs.readdirSync(root).some((n) => n.startsWith(".lora-base-")), "the scratch base GGUF was left behind");
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

Deno.test("export: adapter_config gets the Hub id; refusals name the reason and write nothing; bad command lines exit 2", async () => {
  const { root, snap, adapter } = await fixture();
  try {
    // An adapter trained elsewhere that names its base by a local path.
    const cfgFile = path.join(adapter, "adapter_config.json");
    fs.writeFileSync(cfgFile, JSON.stringify({ ...JSON.parse(fs.readFileSync(cfgFile, "utf8")), base_model_name_or_path: "/home/someone/models/tiny" }));
    const a = await cli("--model", snap, "--adapter", adapter, "--adapter", "--out", path.join(root, "a"));
    assert(a.code === 0, `adapter export: ${a.stderr}`);
    assertEquals(JSON.parse(fs.readFileSync(path.join(root, "a", "adapter_config.json"), "utf8")).base_model_name_or_path, "acme/tiny-gemma");

    // A checkpoint llama.cpp would compute differently: refused by name, before any file.
    const odd = path.join(root, "odd");
    fs.mkdirSync(odd);
    for (const f of fs.readdirSync(snap)) if (f !== "config.json") fs.symlinkSync(path.join(snap, f), path.join(odd, f));
    fs.writeFileSync(path.join(odd, "config.json"), JSON.stringify({ ...JSON.parse(fs.readFileSync(path.join(snap, "config.json"), "utf8")), query_pre_attn_scalar: 64 }));
    const r = await cli("--model", odd, "--gguf", "--out", path.join(root, "refused"));
    assert(r.code === 1 && /query_pre_attn_scalar is 64/.test(r.stderr) && /llama\.cpp/.test(r.stderr), `refusal: ${r.code} ${r.stderr}`);
    assert(!fs.existsSync(path.join(root, "refused")), "a refused export left an output folder");

    const noAdapter = await cli("--model", snap, "--lora-gguf", "--out", path.join(root, "x"));
    assert(noAdapter.code === 1 && /needs an adapter/.test(noAdapter.stderr), noAdapter.stderr);
    for (
      const [args, re] of [
        [["--run", root, "--adapter", adapter, "--gguf"], /--adapter DIR goes with --model/],
        [["--model", snap, "--merged", "--quant", "q8_0"], /--quant goes with --gguf/],
        [["--model", snap, "--gguf", "--quant", "q9"], /--quant must be one of/],
        [["--model", snap, "--gguf", "--onnx"], /exactly one of/],
      ] as [string[], RegExp][]
    ) {
      const u = await cli(...args, "--out", path.join(root, "u"));
      assert(u.code === 2 && re.test(u.stderr), `${args.join(" ")}: ${u.code} ${u.stderr}`);
    }
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

Deno.test("export's file list names files inside folders with their sizes (the ONNX export's onnx/ folder)", () => {
  const dir = fs.mkdtempSync("/tmp/gt-files-");
  try {
    fs.mkdirSync(path.join(dir, "onnx"));
    fs.writeFileSync(path.join(dir, "config.json"), "{}");
    fs.writeFileSync(path.join(dir, "onnx", "model.onnx"), new Uint8Array(10));
    fs.writeFileSync(path.join(dir, "onnx", "model.onnx_data"), new Uint8Array(300));
    assertEquals(listFiles(dir), [{ name: "config.json", bytes: 2 }, { name: "onnx/model.onnx", bytes: 10 }, { name: "onnx/model.onnx_data", bytes: 300 }]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
