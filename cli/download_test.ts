/** `gemma-tuner download` as a user runs it: a real process, HF_ENDPOINT/HF_TOKEN from its environment, the stand-in Hub. */
import * as fs from "node:fs";
import * as path from "node:path";
import { GOOD_TOKEN, startFakeHub } from "../tests/_hub.ts";
import { assert } from "../tests/_assert.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;

async function cli(args: string[], env: Record<string, string>) {
  const out = await new Deno.Command(Deno.execPath(), { args: ["run", "-A", MAIN, ...args], env, stdout: "piped", stderr: "piped" }).output();
  return { code: out.code, stdout: new TextDecoder().decode(out.stdout), stderr: new TextDecoder().decode(out.stderr) };
}

Deno.test(
  { name: "download --repo: HF_ENDPOINT and HF_TOKEN honoured, one JSON line, progress on stderr, clear refusals", sanitizeResources: false, sanitizeOps: false },
  async () => {
    const hub = await startFakeHub();
    try {
      const cache = fs.mkdtempSync("/tmp/gt-hfcache-cli-");
      const env = { HF_ENDPOINT: hub.url, HF_HUB_CACHE: cache, HF_TOKEN: "" };
      const denied = await cli(["download", "--repo", "google/gated-gemma"], env);
      assert(denied.code === 1 && /licen[cs]e/.test(denied.stderr) && denied.stderr.includes("--token"), denied.stderr);
      const r = await cli(["download", "--repo", "google/gated-gemma"], { ...env, HF_TOKEN: GOOD_TOKEN });
      assert(r.code === 0, r.stderr);
      const j = JSON.parse(r.stdout.trim().split("\n").at(-1)!);
      assert(j.sha === hub.sha && j.dir === path.join(cache, "models--google--gated-gemma", "snapshots", hub.sha), r.stdout);
      assert(fs.existsSync(path.join(j.dir, "model.safetensors")) && r.stderr.includes("100.0%"), r.stderr);
      const missing = await cli(["download"], env);
      assert(missing.code === 2 && missing.stderr.includes("--repo"), missing.stderr);
      const llama = await cli(["download", "--repo", "org/tiny-llama", "--revision", "main"], env);
      assert(llama.code === 1 && llama.stderr.includes("not a Gemma model"), llama.stderr);
    } finally {
      await hub.close();
    }
  },
);
