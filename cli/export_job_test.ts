/** `export-job` and `import` as a user runs them: real processes, one JSON line each; `import --repo` through the stand-in Hub. */
import * as fs from "node:fs";
import * as path from "node:path";
import { startFakeHub } from "../tests/_hub.ts";
import { assert, assertEquals } from "../tests/_assert.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;

async function cli(args: string[], env: Record<string, string> = {}) {
  const out = await new Deno.Command(Deno.execPath(), { args: ["run", "-A", MAIN, ...args], env, stdout: "piped", stderr: "piped" }).output();
  return { code: out.code, stdout: new TextDecoder().decode(out.stdout), stderr: new TextDecoder().decode(out.stderr) };
}

Deno.test({
  name: "export-job writes the bundle and prints the mapping with the unmapped fields; import --repo brings a Hub model back as a run",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  const dir = fs.mkdtempSync("/tmp/gt-exportjob-");
  const data = path.join(dir, "data");
  const cfg = path.join(dir, "run.json");
  fs.writeFileSync(cfg, JSON.stringify({ name: "cli job", model: "demo", dataset: { path: "sample", validation: 0.2 }, maxSteps: 10, threads: 2, basePrecision: "bf16" }));
  const out = path.join(dir, "bundle");
  const r = await cli(["export-job", "--config", cfg, "--target", "trl", "--launcher", "local", "--gpus", "2", "--out", out, "--data", data]);
  assertEquals(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout.trim().split("\n").at(-1)!);
  assertEquals([j.target, j.launcher, j.strategy, j.rows.validation > 0], ["trl", "local", "zero2", true]);
  assert(j.unmapped.some((u: { ours: string }) => u.ours === "threads") && j.unmapped.some((u: { ours: string }) => u.ours === "device"), r.stdout);
  assert(j.fields.some((f: { ours: string; theirs: string }) => f.ours === "basePrecision" && f.theirs === "model.torch_dtype"), "basePrecision is mapped");
  for (const f of j.files) assert(fs.existsSync(path.join(out, f)), `${f} missing`);
  assert(fs.readFileSync(path.join(out, "run_local.sh"), "utf8").includes('--nproc_per_node "$GPUS" train_trl.py trl.yaml'), "local launcher");
  const taken = await cli(["export-job", "--config", cfg, "--target", "trl", "--out", out, "--data", data]);
  assert(taken.code !== 0 && taken.stderr.includes("is not empty"), taken.stderr);
  const bad = await cli(["export-job", "--config", cfg, "--target", "megatron", "--out", path.join(dir, "x")]);
  assert(bad.code === 2 && bad.stderr.includes("--target must be one of axolotl, trl"), bad.stderr);

  const hub = await startFakeHub();
  try {
    const env = { HF_ENDPOINT: hub.url, HF_HUB_CACHE: path.join(dir, "hf"), HF_TOKEN: "" };
    const imp = await cli(["import", "--repo", "google/tiny-gemma", "--name", "from hub", "--data", data], env);
    assertEquals(imp.code, 0, imp.stderr);
    const k = JSON.parse(imp.stdout.trim().split("\n").at(-1)!);
    assertEquals(k.kind, "merged");
    const run = JSON.parse(fs.readFileSync(path.join(k.runDir, "run.json"), "utf8"));
    assertEquals([run.config.name, run.config.method, run.imported.from.startsWith(`hub:google/tiny-gemma@${hub.sha}`)], ["from hub", "full", true]);
    assertEquals(JSON.parse(fs.readFileSync(path.join(k.runDir, "status.json"), "utf8")).state, "completed");
    assert(fs.existsSync(path.join(k.runDir, "final", "tokenizer.json")), "the merged model keeps its tokenizer");
  } finally {
    await hub.close();
  }
});
