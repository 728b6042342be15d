/** The CLI as a user runs it: a real `deno run main.ts` process. */
import { assert } from "./_assert.ts";
import { timeout, TIMEOUTS } from "./_timeouts.ts";
const MAIN = new URL("../main.ts", import.meta.url).pathname;

async function cli(args: string[], timeoutMs = 60_000, env: Record<string, string> = {}) {
  const p = new Deno.Command(Deno.execPath(), { args: ["run", "-A", MAIN, ...args], env, stdout: "piped", stderr: "piped" }).spawn();
  const timer = setTimeout(() => p.kill("SIGKILL"), timeout(timeoutMs));
  const out = await p.output();
  clearTimeout(timer);
  return { code: out.code, stdout: new TextDecoder().decode(out.stdout), stderr: new TextDecoder().decode(out.stderr) };
}

Deno.test("--help lists the verbs; unknown verbs and flags exit 2 with a message", async () => {
  const h = await cli(["--help"]);
  assert(h.code === 0 && ["serve", "train", "score", "generate", "init-model", "export", "bench"].every((v) => h.stdout.includes(v)), h.stdout);
  const v = await cli(["frobnicate"]);
  assert(v.code === 2 && v.stderr.includes('unknown verb "frobnicate"'), v.stderr);
  const f = await cli(["score", "--modle", "x"]);
  assert(f.code === 2 && f.stderr.includes('unknown flag "--modle"') && f.stderr.includes("--model"), f.stderr);
});

Deno.test("serve --host 0.0.0.0 without a token refuses to start and names --token", async () => {
  const r = await cli(["serve", "--host", "0.0.0.0", "--port", "0"]);
  assert(r.code === 2 && r.stderr.includes("--token"), r.stderr);
});

Deno.test("serve on a taken port names --port; --port 0 prints the URL", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  try {
    const r = await cli(["serve", "--port", String(port), "--data", "/tmp/gt-cli"]);
    assert(r.code === 2 && r.stderr.includes("already in use") && r.stderr.includes("--port"), r.stderr);
  } finally {
    listener.close();
  }
  const p = new Deno.Command(Deno.execPath(), { args: ["run", "-A", MAIN, "serve", "--port", "0", "--data", "/tmp/gt-cli"], stdout: "piped", stderr: "piped" }).spawn();
  const reader = p.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  const deadline = Date.now() + TIMEOUTS.process;
  while (!/http:\/\/127\.0\.0\.1:\d+\//.test(text) && Date.now() < deadline) {
    const { value, done } = await reader.read();
    if (done) break;
    text += value;
  }
  const url = /http:\/\/127\.0\.0\.1:\d+\//.exec(text)?.[0];
  assert(url, `no URL printed: ${text}`);
  const health = await fetch(`${url}healthz`);
  assert(health.status === 200, "server not answering");
  await health.body?.cancel();
  p.kill("SIGTERM");
  await reader.cancel();
  await p.stderr.cancel();
  await p.status;
});

Deno.test({
  name: "bench keeps glibc's heap by default and fixes the mmap threshold with GEMMA_TUNER_HEAP=lean (engine/malloc.ts), and names the processor",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    const args = [
      "bench",
      "--hidden",
      "64",
      "--heads",
      "2",
      "--kv-heads",
      "1",
      "--head-dim",
      "16",
      "--intermediate",
      "128",
      "--vocab",
      "512",
      "--layers",
      "1",
      "--batch",
      "1",
      "--seq",
      "8",
      "--steps",
      "0",
    ];
    const plain = await cli(args);
    assert(plain.code === 0, plain.stderr);
    const p = JSON.parse(plain.stdout.trim().split("\n").pop()!);
    assert(p.malloc_mmap_threshold === null, `malloc_mmap_threshold ${p.malloc_mmap_threshold}: main.ts fixed the threshold unasked`);
    assert(typeof p.cpu === "string" && p.cpu.length > 0, `cpu: ${p.cpu}`);
    const lean = await cli(args, 60_000, { GEMMA_TUNER_HEAP: "lean" });
    assert(lean.code === 0, lean.stderr);
    const l = JSON.parse(lean.stdout.trim().split("\n").pop()!);
    assert(l.malloc_mmap_threshold === 1 << 20, `malloc_mmap_threshold ${l.malloc_mmap_threshold}: GEMMA_TUNER_HEAP=lean did not fix the threshold`);
  },
});
