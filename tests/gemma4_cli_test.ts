/**
 * Gemma 4 through the CLI as a user runs it (real `deno run main.ts` processes): init-model presets in
 * both layouts, score / generate --ids on a model directory without a tokenizer, LoRA and full
 * training runs on the multimodal E-model machinery (PLE, KV sharing, double-wide MLP), and a merged
 * export that keeps the towers and the stored k/v of KV-shared layers byte for byte.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { listCheckpoint, readHeader, readTensorBytes } from "../engine/safetensors.ts";
import { describeModel, resolveCheckpoint } from "../engine/model_dir.ts";
import { checkpointName, paramSpecs } from "../engine/gemma/params.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;
const TIMEOUT = Number(Deno.env.get("GT_TEST_TIMEOUT_MS") ?? 300_000);

async function cli(args: string[]) {
  const p = new Deno.Command(Deno.execPath(), { args: ["run", "-A", "--v8-flags=--max-old-space-size=4096", MAIN, ...args], stdout: "piped", stderr: "piped" }).spawn();
  const timer = setTimeout(() => p.kill("SIGKILL"), TIMEOUT);
  const out = await p.output();
  clearTimeout(timer);
  const r = { code: out.code, stdout: new TextDecoder().decode(out.stdout), stderr: new TextDecoder().decode(out.stderr) };
  if (r.code !== 0) throw new Error(`${args[0]} exited ${r.code}: ${r.stderr.slice(-2000)}`);
  return r;
}

const lastJson = (s: string) => JSON.parse(s.trim().split("\n").at(-1)!);

Deno.test("Gemma 4 presets: both layouts load, model info names what is there", async () => {
  const root = fs.mkdtempSync("/tmp/gt-g4-presets-");
  for (const preset of ["tiny-4", "tiny-4-mm", "tiny-4-kv", "tiny-4-kv-mm", "tiny-4-moe", "tiny-4-moe-mm"]) {
    const out = path.join(root, preset);
    await cli(["init-model", "--generation", "4", "--preset", preset, "--out", out]);
    const info = describeModel(out);
    const mm = preset.endsWith("-mm");
    if (info.generation !== 4 || info.multimodal !== mm || info.architecture !== (mm ? "Gemma4ForConditionalGeneration" : "Gemma4ForCausalLM")) {
      throw new Error(`${preset}: ${JSON.stringify({ ...info, config: undefined })}`);
    }
    if (preset.includes("moe") && !info.notes.some((n) => /full fine-tuning is not supported/.test(n))) throw new Error(`${preset}: no MoE note`);
    if (preset === "tiny-4" && !info.notes.some((n) => /KV-shared/.test(n))) throw new Error("no KV-sharing note");
  }
  fs.rmSync(root, { recursive: true, force: true });
});

Deno.test("Gemma 4 E-model (multimodal): score and generate --ids without a tokenizer; LoRA and full runs; merged export keeps every other tensor", async () => {
  const root = fs.mkdtempSync("/tmp/gt-g4-cli-");
  const model = path.join(root, "mm");
  await cli(["init-model", "--generation", "4", "--preset", "tiny-4-mm", "--out", model, "--std", "0.1", "--embed-std", "0.5"]);

  // ids in, ids out on a copy without tokenizer files.
  const bare = path.join(root, "bare");
  fs.cpSync(model, bare, { recursive: true });
  for (const f of ["tokenizer.json", "tokenizer_config.json"]) fs.rmSync(path.join(bare, f));
  const ids = "2,9259,1902,236764,672";
  const s = lastJson((await cli(["score", "--model", bare, "--ids", ids])).stdout);
  if (s.token_nll.length !== 4 || !s.token_nll.every((x: number) => Number.isFinite(x) && x > 0)) throw new Error(`score: ${JSON.stringify(s)}`);
  const g = lastJson((await cli(["generate", "--model", bare, "--ids", ids, "--temperature", "0", "--max-new-tokens", "4", "--json"])).stdout);
  if (!Array.isArray(g.ids) || g.ids.length === 0 || g.text !== null) throw new Error(`generate: ${JSON.stringify(g)}`);

  const data = path.join(root, "data");
  for (const method of ["lora", "full"] as const) {
    const cfg = path.join(root, `${method}.json`);
    fs.writeFileSync(
      cfg,
      JSON.stringify({
        name: `g4-${method}`,
        model,
        method,
        dataset: { path: "sample" },
        maxSteps: 2,
        batchSize: 2,
        maxLength: 32,
        learningRate: 0.01,
        saveEvery: 1,
        evalEvery: 0,
        threads: 1,
        lora: { r: 2, alpha: 4, dropout: 0, targets: ["q_proj", "k_proj", "v_proj", "down_proj"] },
      }),
    );
    const run = lastJson((await cli(["train", "--config", cfg, "--data", data])).stdout);
    const runDir = run.runDir ?? run.dir ?? path.join(data, "runs", run.id);
    if (!fs.existsSync(path.join(runDir, "final"))) throw new Error(`${method}: no final/ in ${runDir}: ${JSON.stringify(run)}`);
    if (method === "lora") {
      const adapter = JSON.parse(fs.readFileSync(path.join(runDir, "final", "adapter_config.json"), "utf8"));
      const re = new RegExp(`^(?:${adapter.target_modules})$`);
      if (!re.test("model.language_model.layers.1.self_attn.k_proj") || re.test("model.vision_tower.encoder.layers.0.self_attn.q_proj.linear")) {
        throw new Error(`target_modules ${adapter.target_modules}`);
      }
      const names = readHeader(path.join(runDir, "final", "adapter_model.safetensors")).entries.map((e) => e.name);
      if (names.some((n) => /layers\.[23]\.self_attn\.[kv]_proj/.test(n))) throw new Error("LoRA on the k/v of a KV-shared layer");
    }
    const out = path.join(root, `merged-${method}`);
    await cli(["export", "--run", runDir, "--merged", "--out", out]);
    const { config } = resolveCheckpoint(model);
    const text = new Set(paramSpecs(config).map((p) => checkpointName(config, p.name)));
    const before = listCheckpoint(model), after = listCheckpoint(out);
    let kept = 0;
    for (const [name, e] of before) {
      if (text.has(name)) continue;
      const a = readTensorBytes(e), b = after.get(name) && readTensorBytes(after.get(name)!);
      if (!b || a.length !== b.length || a.some((x, i) => x !== b[i])) throw new Error(`${method}: ${name} changed in the merged export`);
      kept++;
    }
    // 5 tower tensors + k_proj, v_proj, k_norm of the two KV-shared layers.
    if (kept !== 11) throw new Error(`${method}: compared ${kept} untouched tensors, expected 11`);
    const sm = lastJson((await cli(["score", "--model", out, "--ids", ids])).stdout);
    if (!sm.token_nll.every((x: number) => Number.isFinite(x))) throw new Error("merged model does not score");
  }
  fs.rmSync(root, { recursive: true, force: true });
});
