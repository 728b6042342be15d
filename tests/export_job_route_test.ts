/**
 * The export job from the UI: a completed run's dashboard links to /exports, the form starts a GGUF
 * export in a subprocess of `gemma-tuner export`, the polled fragment shows its progress (then
 * "verifying in llama.cpp") and, at the end, the verification and download links that serve the files.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { createApp } from "../routes/app.tsx";
import { loadAppSettings } from "../config/app.ts";
import { TrainingService } from "../trainer/service.ts";
import { createRun, writeStatus } from "../trainer/run_dir.ts";
import { parseRunConfig } from "../config/training.ts";
import { loadModel } from "../engine/model_dir.ts";
import { initLora, rng } from "../engine/lora.ts";
import { writeAdapter } from "../engine/peft.ts";
import { realisticTiny } from "../engine/export/testing.ts";
import { QUANTS } from "../engine/export/gguf.ts";
import { EXPORT_QUANTS } from "../engine/mod.ts";
import { assert, assertEquals } from "./_assert.ts";
import { TIMEOUTS, waitFor } from "./_timeouts.ts";

const HX = { "HX-Request": "true", "HX-CSRF": "1", "Content-Type": "application/x-www-form-urlencoded" };

Deno.test("export job: dashboard → /exports → GGUF q8_0 in the background with progress → verified in llama.cpp → downloads", async () => {
  assertEquals([...EXPORT_QUANTS], [...QUANTS], "the server's list of GGUF encodings");
  const dataDir = fs.mkdtempSync("/tmp/gt-exportjob-");
  const service = new TrainingService(dataDir, { intervalMs: 0 });
  const app = createApp({ settings: loadAppSettings({ host: "127.0.0.1", port: 0, data: dataDir }), service });
  try {
    const base = await realisticTiny({ preset: "tiny-3", out: path.join(dataDir, "base"), seed: 8 });
    const dir = createRun(parseRunConfig({ name: "exp", model: base, dataset: { path: "sample" }, maxSteps: 1 }), dataDir);
    const m = await loadModel(base);
    const lora = { r: 2, alpha: 4, dropout: 0, rslora: false, targets: ["q_proj" as const, "v_proj" as const] };
    const t = initLora(m.config, lora, 1);
    const r = rng(2);
    for (const [k, v] of t) if (k.includes("lora_B")) v.data.forEach((_, i) => (v.data[i] = (r() - 0.5) * 0.3));
    writeAdapter(path.join(dir, "final"), t, lora, base);
    writeStatus(dir, { state: "completed", message: "done", step: 1, totalSteps: 1, epoch: 0, pid: 0 });
    const id = path.basename(dir);
    const model = `${id}/final`;

    const dash = await (await app.request(`/runs/${id}`)).text();
    assert(dash.includes(`href="/exports?model=${encodeURIComponent(model)}"`), "the completed dashboard has no export link");
    const play = await (await app.request("/inference")).text();
    assert(play.includes(`href="/exports?model=${encodeURIComponent(model)}"`), "the playground's models table has no export link");
    const form = await (await app.request(`/exports?model=${encodeURIComponent(model)}`)).text();
    for (const k of ["gguf", "lora-gguf", "adapter", "merged", "onnx"]) assert(form.includes(`value="${k}"`), `the export form lacks ${k}`);

    const bad = await app.request("/exports", { method: "POST", headers: HX, body: new URLSearchParams({ model, kind: "zip" }) });
    assert(bad.status === 400 && (await bad.text()).includes("kind must be one of"), `bad kind gave ${bad.status}`);

    const started = await app.request("/exports", { method: "POST", headers: HX, body: new URLSearchParams({ model, kind: "gguf", quant: "q8_0" }) });
    assert(started.status === 200, `start gave ${started.status}: ${await started.clone().text()}`);
    const panel = await started.text();
    assert(panel.includes('data-export-state="running"') && panel.includes('hx-trigger="every 1s"'), `start fragment: ${panel}`);
    const jobId = decodeURIComponent(started.headers.get("HX-Push-Url")!.split("/").at(-1)!);
    const busy = await app.request("/exports", { method: "POST", headers: HX, body: new URLSearchParams({ model, kind: "adapter" }) });
    assert(busy.status === 409 && (await busy.text()).includes("An export is running"), `a second export gave ${busy.status}`);

    // The event loop stays free while the child works: the fragment answers, and shows the phases.
    const seen = new Set<string>();
    let verifyingText = "";
    const job = await waitFor(
      "the export job to finish",
      async () => {
        const j = await (await app.request(`/api/exports/${encodeURIComponent(jobId)}`)).json();
        if (j.progress?.phase) seen.add(j.progress.phase);
        if (j.state === "running" && j.progress?.phase === "verifying" && !verifyingText) {
          verifyingText = await (await app.request(`/exports/jobs/${encodeURIComponent(jobId)}/fragment`)).text();
        }
        return j.state !== "running" ? j : null;
      },
      TIMEOUTS.process * 5,
      200,
    );
    assert(job.state === "done", `export job ${job.state}: ${job.error}`);
    assert(seen.has("verifying") && verifyingText.includes("verifying in llama.cpp"), `phases seen: ${[...seen]}; fragment while verifying: ${verifyingText}`);
    assert(job.verification.pass && job.verification.runtime.includes("llama.cpp"), `verification: ${JSON.stringify(job.verification)}`);

    const done = await app.request(`/exports/jobs/${encodeURIComponent(jobId)}/fragment`);
    assert(done.status === 286, `the finished fragment should stop the poll, gave ${done.status}`);
    const html = await done.text();
    assert(html.includes('data-verification="pass"') && html.includes("max |ΔNLL|"), `finished fragment: ${html}`);
    const names = job.files.map((f: { name: string }) => f.name);
    assertEquals(names, ["Modelfile", "README.md", "exp-q8_0.gguf"]);
    for (const f of job.files) assert(html.includes(`href="${f.url}"`), `no download link for ${f.name}`);

    const gguf = job.files.find((f: { name: string }) => f.name.endsWith(".gguf"));
    const dl = await app.request(gguf.url);
    assert(dl.status === 200 && dl.headers.get("Content-Length") === String(gguf.bytes), `download: ${dl.status} ${dl.headers.get("Content-Length")}`);
    const bytes = new Uint8Array(await dl.arrayBuffer());
    assert(bytes.length === gguf.bytes && new TextDecoder().decode(bytes.subarray(0, 4)) === "GGUF", "the download is not the GGUF file");
    const mf = await (await app.request(job.files.find((f: { name: string }) => f.name === "Modelfile").url)).text();
    assert(mf.includes("FROM ./exp-q8_0.gguf"), `Modelfile: ${mf}`);
    for (const name of ["../../run.json", "nope.gguf"]) {
      const r404 = await app.request(`/exports/jobs/${encodeURIComponent(jobId)}/files/${encodeURIComponent(name)}`);
      assert(r404.status === 404, `${name} gave ${r404.status}`);
      await r404.body?.cancel();
    }
    const list = await (await app.request("/exports")).text();
    assert(list.includes("done, verified"), "the exports list does not show the finished job");
  } finally {
    await service.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
});
