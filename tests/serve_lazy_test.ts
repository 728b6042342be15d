/**
 * `serve` starts and renders its pages without loading ONNX Runtime's native library; the first chat
 * loads it. Checked in the process's own memory map (Linux /proc/<pid>/maps), so it depends on no
 * timing and would fail if any module on the server's startup path imported onnxruntime-node.
 */
import * as fs from "node:fs";
import { TIMEOUTS, waitFor } from "./_timeouts.ts";
import { assert } from "./_assert.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;

function ortLoaded(pid: number): boolean {
  return fs.readFileSync(`/proc/${pid}/maps`, "utf8").includes("onnxruntime");
}

Deno.test({
  name: "serve loads ONNX Runtime only when a model is first needed",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    const dataDir = fs.mkdtempSync("/tmp/gt-lazy-");
    const p = new Deno.Command(Deno.execPath(), { args: ["run", "-A", MAIN, "serve", "--port", "0", "--data", dataDir], stdout: "piped", stderr: "null" }).spawn();
    const reader = p.stdout.pipeThrough(new TextDecoderStream()).getReader();
    try {
      let text = "";
      const url = await waitFor(
        "the serving URL",
        async () => {
          const { value, done } = await reader.read();
          if (done) throw new Error(`serve exited before printing its URL: ${text}`);
          text += value;
          return /http:\/\/127\.0\.0\.1:\d+\//.exec(text)?.[0];
        },
        TIMEOUTS.process,
        0,
      );
      for (const page of ["healthz", "", "runs", "create", "inference", "v1/models"]) {
        const r = await fetch(`${url}${page}`, { signal: AbortSignal.timeout(TIMEOUTS.request) });
        await r.body?.cancel();
        assert(r.status === 200, `/${page} answered ${r.status}`);
      }
      assert(!ortLoaded(p.pid), "ONNX Runtime was loaded by serve before any model was needed");
      // The detection itself: a chat with the demo model must load it.
      const chat = await fetch(`${url}v1/chat/completions`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ model: "demo", messages: [{ role: "user", content: "Hi" }], max_tokens: 1, temperature: 0 }),
        signal: AbortSignal.timeout(TIMEOUTS.process),
      });
      await chat.body?.cancel();
      assert(chat.status === 200, `chat answered ${chat.status}`);
      assert(ortLoaded(p.pid), "a chat did not load ONNX Runtime (the check above would pass vacuously)");
    } finally {
      p.kill("SIGTERM");
      await reader.cancel().catch(() => {});
      await p.status;
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  },
});
