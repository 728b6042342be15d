/** The create view's fragments through app.request(): validation, preview on good and bad data, upload limits, start. */
import * as fs from "node:fs";
import * as path from "node:path";
import { createApp } from "../routes/app.tsx";
import { loadAppSettings } from "../config/app.ts";
import { TrainingService } from "../trainer/service.ts";
import { formToConfig } from "../routes/create_form.ts";
import { assert } from "./_assert.ts";

function setup() {
  const dataDir = fs.mkdtempSync("/tmp/gt-create-");
  const service = new TrainingService(dataDir, { intervalMs: 0, graceMs: 20_000 });
  const settings = { ...loadAppSettings({ host: "127.0.0.1", port: 0, data: dataDir }), maxUploadBytes: 4096 };
  return { app: createApp({ settings, service }), dataDir, service };
}

const BASE = {
  name: "t", model: "demo", dataset_path: "sample", format: "auto", validation: "0.1", method: "lora", lora_r: "8", lora_alpha: "16",
  lora_dropout: "0", lora_targets: ["q_proj", "v_proj"], until: "steps", maxSteps: "5", batchSize: "2", gradAccum: "1", learningRate: "0.01",
  schedule: "cosine", warmupSteps: "1", maxLength: "128", evalEvery: "5", saveEvery: "5", seed: "1",
};

function form(values: Record<string, string | string[]>): FormData {
  const f = new FormData();
  for (const [k, v] of Object.entries(values)) for (const x of Array.isArray(v) ? v : [v]) f.append(k, x);
  return f;
}

const post = (app: ReturnType<typeof createApp>, url: string, body: FormData) => app.request(url, { method: "POST", body, headers: { "HX-Request": "true", "HX-CSRF": "1" } });

Deno.test("form decoding: good values give a RunConfig, each bad one a message on its field", () => {
  const ok = formToConfig(BASE);
  assert(ok.config && ok.config.maxSteps === 5 && ok.config.lora.targets.length === 2, JSON.stringify(ok.errors));
  const bad = formToConfig({ ...BASE, batchSize: "0", learningRate: "abc", lora_targets: [], maxSteps: "" });
  assert(!bad.config, "bad form accepted");
  assert(bad.errors.batchSize && bad.errors.learningRate && bad.errors.lora_targets && bad.errors.maxSteps, JSON.stringify(bad.errors));
  const warm = formToConfig({ ...BASE, warmupSteps: "50" });
  assert(warm.errors.warmupSteps?.includes("longer than the run"), JSON.stringify(warm.errors));
});

Deno.test("create page renders with presets; check fragment shows model info or field errors", async () => {
  const { app } = setup();
  const page = await app.request("/create?preset=quick-demo");
  const html = await page.text();
  assert(page.status === 200 && html.includes('value="full" checked'), "preset did not fill the form");
  const good = await post(app, "/create/fragments/check", form(BASE));
  const g = await good.text();
  assert(g.includes("Gemma 3") && g.includes("data-memory"), `no model info: ${g.slice(0, 300)}`);
  const bad = await post(app, "/create/fragments/check", form({ ...BASE, batchSize: "-3", model_path: "/nonexistent/model" }));
  const b = await bad.text();
  assert(/id="err-batchSize"[^>]*>[^<]+</.test(b), "no batchSize message");
  assert(b.includes("does not exist"), "no model path message");
});

Deno.test("preview: the sample shows format, histogram and trained tokens; bad datasets show their rows and reasons", async () => {
  const { app, dataDir } = setup();
  const r = await post(app, "/create/fragments/preview", form(BASE));
  const html = await r.text();
  assert(html.includes('data-format="messages"') && html.includes('class="tok trained"') && html.includes('class="hist"'), html.slice(0, 500));
  const badFile = path.join(dataDir, "bad.jsonl");
  fs.writeFileSync(badFile, '{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}]}\nnot json\n{"messages":[{"role":"assistant","content":"x"}]}\n');
  const r2 = await post(app, "/create/fragments/preview", form({ ...BASE, dataset_path: badFile }));
  const h2 = await r2.text();
  assert(h2.includes("invalid row") && h2.includes("<td>2</td>"), `invalid rows not listed: ${h2.slice(0, 800)}`);
  const wrong = path.join(dataDir, "wrong.jsonl");
  fs.writeFileSync(wrong, '{"question":"a","reply":"b"}\n');
  const h3 = await (await post(app, "/create/fragments/preview", form({ ...BASE, dataset_path: wrong }))).text();
  assert(h3.includes('data-preview="error"') && h3.includes("question"), `wrong fields not explained: ${h3}`);
});

Deno.test("upload: a small file is saved under datasets/; one over the limit is refused and leaves nothing", async () => {
  const { app, dataDir } = setup();
  const ok = new FormData();
  ok.append("file", new File(['{"text":"hello"}\n'], "mine.jsonl"));
  const r = await post(app, "/create/upload", ok);
  assert(r.status === 200, `upload status ${r.status}`);
  const saved = fs.readdirSync(path.join(dataDir, "datasets"));
  assert(saved.length === 1 && saved[0].endsWith("mine.jsonl"), `saved: ${saved}`);
  const big = new FormData();
  big.append("file", new File(["x".repeat(200_000)], "big.jsonl"));
  const r2 = await post(app, "/create/upload", big);
  assert(r2.status === 413, `oversized upload gave ${r2.status}`);
  assert(fs.readdirSync(path.join(dataDir, "datasets")).length === 1, "the oversized upload left a file");
  const evil = new FormData();
  evil.append("file", new File(["{}"], "../../etc/passwd.json"));
  await post(app, "/create/upload", evil);
  assert(!fs.existsSync(path.join(dataDir, "etc")) && fs.readdirSync(path.join(dataDir, "datasets")).every((n) => !n.includes("/")), "path traversal in upload name");
});

Deno.test("start: invalid settings are refused with 422; valid ones create a run and redirect to its dashboard", async () => {
  const { app, service } = setup();
  const bad = await post(app, "/create/start", form({ ...BASE, maxLength: "2" }));
  assert(bad.status === 422, `bad start gave ${bad.status}`);
  assert(service.list().length === 0, "a run was created from bad settings");
  const ok = await post(app, "/create/start", form(BASE));
  assert(ok.status === 201 && ok.headers.get("HX-Redirect")?.startsWith("/runs/"), `start gave ${ok.status}`);
  const runs = service.list();
  assert(runs.length === 1 && runs[0].run.config.maxSteps === 5, "run not created with the form's settings");
  const again = await (await app.request("/create")).text();
  assert(again.includes('name="maxSteps" type="number" inputmode="decimal" value="5"'), "last settings not remembered");
  // The run really started: stop it (SIGTERM; it saves and ends aborted) so no trainer outlives the test.
  const st = await service.abort(runs[0].id);
  assert(st.state === "aborted" || st.state === "failed", `after abort: ${st.state}`);
});

Deno.test("HF cache: multimodal Gemma 3 and Gemma 4 checkpoints are listed, Gemma 3n is not; the check fragment shows their architecture and notes", async () => {
  const { initModel } = await import("../engine/init_model.ts");
  const { scanHuggingFaceCache } = await import("../routes/create_form.ts");
  const hub = fs.mkdtempSync("/tmp/gt-hub-");
  const snap = (name: string) => path.join(hub, `models--google--${name}`, "snapshots", "0123456789abcdef");
  await initModel({ preset: "tiny-3-mm", out: snap("gemma-3-tiny-mm") });
  await initModel({ preset: "tiny-4-moe-mm", out: snap("gemma-4-tiny-moe") });
  fs.mkdirSync(snap("gemma-3n-E2B"), { recursive: true });
  fs.writeFileSync(path.join(snap("gemma-3n-E2B"), "config.json"), JSON.stringify({ model_type: "gemma3n", text_config: { model_type: "gemma3n_text" } }));
  const listed = scanHuggingFaceCache([hub]).map((m) => m.label).sort();
  assert(listed.length === 2 && listed[0].startsWith("google/gemma-3-tiny-mm") && listed[1].startsWith("google/gemma-4-tiny-moe"), `listed: ${listed}`);
  const { app } = setup();
  const res = await post(app, "/create/fragments/check", form({ ...BASE, model: "path", model_path: snap("gemma-4-tiny-moe") }));
  const html = await res.text();
  assert(html.includes("Gemma4ForConditionalGeneration") && html.includes("full fine-tuning is not supported"), `no Gemma 4 info: ${html.slice(0, 600)}`);
  fs.rmSync(hub, { recursive: true, force: true });
});
