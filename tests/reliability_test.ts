/**
 * Bad input and faults, table-driven: hostile API bodies never give a 500, ids cannot traverse paths,
 * user content is escaped, broken datasets and checkpoints are refused with a named reason, and a
 * read-only data dir is a clear error with nothing half-written.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { createApp } from "../routes/app.tsx";
import { loadAppSettings } from "../config/app.ts";
import { TrainingService } from "../trainer/service.ts";
import { inspectDataset } from "../engine/data/mod.ts";
import { listCheckpoint, readHeader, readTensorF32, writeSafetensors } from "../engine/safetensors.ts";
import { loadModel } from "../engine/model_dir.ts";
import { assert } from "./_assert.ts";
import { waitFor } from "./_timeouts.ts";
import { createRun, writeStatus } from "../trainer/run_dir.ts";
import { LoraSchema, parseRunConfig } from "../config/training.ts";
import { TRAINER_STATE_FORMAT, TRAINER_STATE_VERSION, writeCheckpoint } from "../trainer/checkpoint.ts";

function setup() {
  const dataDir = fs.mkdtempSync("/tmp/gt-rel-");
  const service = new TrainingService(dataDir, { intervalMs: 0 });
  return { app: createApp({ settings: loadAppSettings({ host: "127.0.0.1", port: 0, data: dataDir }), service }), dataDir, service };
}

const json = (body: string) => ({ method: "POST", body, headers: { "Content-Type": "application/json" } });
const good = { model: "demo", dataset: { path: "sample" }, maxSteps: 5 };

const HOSTILE: [string, string][] = [
  ["not JSON", "{nope"],
  ["empty body", ""],
  ["an array", "[]"],
  ["null", "null"],
  ["wrong types", JSON.stringify({ ...good, maxSteps: "five", batchSize: true })],
  ["huge numbers", JSON.stringify({ ...good, maxSteps: 1e300, batchSize: 1e12 })],
  ["negative steps", JSON.stringify({ ...good, maxSteps: -3 })],
  ["NaN-ish", '{"model":"demo","dataset":{"path":"sample"},"maxSteps":1e999}'],
  ["unknown fields", JSON.stringify({ ...good, rm: "-rf /" })],
  ["10 MB string", JSON.stringify({ ...good, name: "x".repeat(10 * 1024 * 1024) })],
  ["missing dataset", JSON.stringify({ model: "demo", maxSteps: 5 })],
  ["prototype pollution", '{"__proto__":{"admin":true},"model":"demo","dataset":{"path":"sample"},"maxSteps":5,"constructor":{}}'],
  ["deep nesting", "[".repeat(5000) + "]".repeat(5000)],
];

for (const [label, body] of HOSTILE) {
  Deno.test(`POST /api/runs with ${label} → 4xx with a message, never a 500`, async () => {
    const { app, service } = setup();
    const r = await app.request("/api/runs", json(body));
    const text = await r.text();
    assert(r.status >= 400 && r.status < 500, `${label}: status ${r.status}: ${text.slice(0, 200)}`);
    assert(typeof JSON.parse(text).error === "string", `${label}: no error message`);
    assert(service.list().length === 0, `${label}: a run was created`);
  });
}

Deno.test("path traversal in run ids and query parameters is refused", async () => {
  const { app, dataDir } = setup();
  fs.writeFileSync(path.join(dataDir, "secret.txt"), "secret");
  for (const id of ["..", "..%2F..%2Fetc", "%2Fetc%2Fpasswd", "..%5C..", ".hidden", "a%00b"]) {
    for (const suffix of ["", "/scalars", "/logs?stream=stdout&offset=0"]) {
      const r = await app.request(`/api/runs/${id}${suffix}`);
      assert(r.status === 404 || r.status === 400, `/api/runs/${id}${suffix} gave ${r.status}`);
      assert(!(await r.text()).includes("secret"), "leaked a file");
    }
    // "/runs/.." is normalised by URL parsing to "/" (the home page); every other id must be a 404.
    if (id !== "..") {
      const page = await app.request(`/runs/${id}`);
      assert(page.status === 404, `/runs/${id} gave ${page.status}`);
    }
  }
  const bad = await app.request("/api/runs/x/logs?stream=../../secret.txt");
  assert(bad.status === 404 || bad.status === 400, `stream traversal gave ${bad.status}`);
});

Deno.test("user content is escaped: script tags in run names and dataset rows never render as HTML", async () => {
  const { app, dataDir } = setup();
  const evil = "<script>alert(1)</script><img src=x onerror=alert(2)>";
  const r = await app.request("/api/runs", json(JSON.stringify({ ...good, name: evil, maxSteps: 1 })));
  assert(r.status === 201, `create gave ${r.status}`);
  const { id } = await r.json();
  for (const url of ["/", "/runs", `/runs/${id}`]) {
    const html = await (await app.request(url)).text();
    assert(!html.includes("<script>alert(1)") && !html.includes("<img src=x"), `${url} rendered user HTML`);
    assert(html.includes("&lt;script"), `${url} does not show the (escaped) name`);
  }
  const ds = path.join(dataDir, "xss.jsonl");
  fs.writeFileSync(ds, JSON.stringify({ messages: [{ role: "user", content: evil }, { role: "assistant", content: evil }] }) + "\n");
  const f = new FormData();
  for (const [k, v] of Object.entries({ model: "demo", dataset_path: ds, format: "auto", maxLength: "128" })) f.append(k, v);
  const preview = await (await app.request("/create/fragments/preview", { method: "POST", body: f, headers: { "HX-CSRF": "1" } })).text();
  assert(preview.includes("&lt;script") && !preview.includes("<script>alert") && !preview.includes("<img src=x"), "dataset row rendered as HTML");
});

const BROKEN_DATASETS: [string, string | Uint8Array, RegExp][] = [
  ["empty.jsonl", "", /no rows|empty/i],
  ["notjson.json", "this is not json", /not valid JSON|Cannot read|JSON/i],
  ["wrongfields.jsonl", '{"question":"a","reply":"b"}\n', /question/],
  ["roles.jsonl", '{"messages":[{"role":"assistant","content":"a"},{"role":"user","content":"b"}]}\n', /alternate|role/i],
  ["invalid-utf8.jsonl", new Uint8Array([0x7b, 0x22, 0x74, 0x65, 0x78, 0x74, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d, 0x0a]), /UTF-8/i],
  ["quoting.csv", 'prompt,completion\n"unterminated,quote\n', /quot|line/i],
  ["fake.parquet", "PAR1 but not really a parquet file", /parquet/i],
  ["mixed.jsonl", '{"text":"plain"}\n{"prompt":"p"}\n', /line 2|no usable|completion/i],
];

for (const [name, content, expect] of BROKEN_DATASETS) {
  Deno.test(`broken dataset ${name} is refused or its rows skipped with the reason`, async () => {
    const dir = fs.mkdtempSync("/tmp/gt-badds-");
    const file = path.join(dir, name);
    fs.writeFileSync(file, content);
    const before = fs.readFileSync(file);
    let message = "";
    try {
      const ins = await inspectDataset(file, { limit: 5 });
      message = ins.invalid.map((i) => `line ${i.line}, ${i.field}: ${i.reason}`).join("\n");
      assert(ins.invalid.length > 0, `${name}: accepted without any reported problem`);
    } catch (e) {
      message = (e as Error).message;
    }
    assert(expect.test(message), `${name}: message does not explain the problem: ${message}`);
    assert(Buffer.compare(before, fs.readFileSync(file)) === 0, `${name}: the user's file was modified`);
  });
}

Deno.test("a huge single line is refused or skipped, not a crash", async () => {
  const dir = fs.mkdtempSync("/tmp/gt-badds-");
  const file = path.join(dir, "huge.jsonl");
  fs.writeFileSync(file, `{"text":"${"a".repeat(20 * 1024 * 1024)}"}\n{"text":"ok"}\n`);
  const ins = await inspectDataset(file, { limit: 1 }).catch((e) => ({ error: (e as Error).message }));
  assert("error" in ins ? /line|long|size/i.test(ins.error) : ins.valid >= 1, JSON.stringify(ins).slice(0, 300));
});

Deno.test("corrupt or truncated safetensors files get an error naming the file and the problem", () => {
  const dir = fs.mkdtempSync("/tmp/gt-st-");
  const file = path.join(dir, "model.safetensors");
  writeSafetensors(file, [{ name: "w", dtype: "F32", shape: [4, 4], data: new Float32Array(16).fill(1.5) }]);
  const whole = fs.readFileSync(file);
  assert(readTensorF32(readHeader(file).entries[0])[3] === 1.5, "round trip");
  const cases: [string, Uint8Array, RegExp][] = [
    ["truncated data", whole.subarray(0, whole.length - 10), /past the end|truncated/],
    ["truncated header", whole.subarray(0, 12), /exceeds file size|truncated/],
    ["garbage header", Uint8Array.from([...whole.subarray(0, 8), ...new TextEncoder().encode("x".repeat(whole.length - 8))]), /not valid JSON|exceeds/],
    ["tiny file", new Uint8Array(3), /too short/],
  ];
  for (const [label, bytes, re] of cases) {
    fs.writeFileSync(file, bytes);
    let msg = "";
    try {
      listCheckpoint(dir);
    } catch (e) {
      msg = (e as Error).message;
    }
    assert(re.test(msg) && msg.includes(file), `${label}: ${msg}`);
  }
});

Deno.test("a corrupt checkpoint shard in a model dir is named, and loading another model still works", async () => {
  const { initModel } = await import("../engine/init_model.ts");
  const root = fs.mkdtempSync("/tmp/gt-ckpt-");
  const a = await initModel({ preset: "tiny-3", out: path.join(root, "a"), seed: 1 });
  const b = await initModel({ preset: "tiny-3", out: path.join(root, "b"), seed: 2 });
  const f = path.join(a, "model.safetensors");
  fs.truncateSync(f, fs.statSync(f).size - 1000);
  let msg = "";
  try {
    await loadModel(a);
  } catch (e) {
    msg = (e as Error).message;
  }
  assert(msg.includes(f), `error does not name the file: ${msg}`);
  const ok = await loadModel(b);
  assert(ok.weights.size > 0, "the intact model did not load");
});

Deno.test("a data dir that cannot be written gives a clear error naming it and the fix, and writes nothing", () => {
  // Root ignores permission bits, so as root the unwritable place is inside /proc (no writes there for anyone).
  const dir = Deno.uid() === 0 ? "/proc/1/gemma-tuner-data" : fs.mkdtempSync("/tmp/gt-ro-");
  if (Deno.uid() !== 0) fs.chmodSync(dir, 0o555);
  let msg = "";
  try {
    new TrainingService(dir, { intervalMs: 0 });
  } catch (e) {
    msg = (e as Error).message;
  }
  assert(msg.includes(dir) && msg.includes("--data"), msg);
  if (Deno.uid() !== 0) assert(fs.readdirSync(dir).length === 0, "something was written");
});

Deno.test("oversized bodies get 413 with a JSON error naming the limit: the API, /v1 (OpenAI's shape) and form posts; nothing created", async () => {
  const { app, service } = setup();
  const big = JSON.stringify({ ...good, name: "x".repeat(2 * 1024 * 1024) });
  // With Content-Length (refused before reading) and streamed without it (cut while reading).
  const streamed = (s: string) =>
    new ReadableStream({
      start(c) {
        c.enqueue(new TextEncoder().encode(s));
        c.close();
      },
    });
  for (const body of [big, streamed(big)]) {
    const r = await app.request("/api/runs", { method: "POST", body, headers: { "Content-Type": "application/json" }, duplex: "half" } as RequestInit);
    const j = await r.json();
    assert(r.status === 413 && j.error === "Request body is over the limit of 1048576 bytes (1 MiB)", `API: ${r.status} ${JSON.stringify(j)}`);
  }
  assert(service.list().length === 0, "a run was created");
  const chat = JSON.stringify({ model: "demo", messages: Array.from({ length: 30 }, () => ({ role: "user", content: "y".repeat(199_000) })) });
  const v1 = await app.request("/v1/chat/completions", json(chat));
  const e = await v1.json();
  assert(v1.status === 413 && e.error?.type === "invalid_request_error" && e.error.message.includes("4194304 bytes (4 MiB)"), `/v1: ${v1.status} ${JSON.stringify(e)}`);
  const form = await app.request("/create/fragments/check", {
    method: "POST",
    body: "name=" + "z".repeat(2 * 1024 * 1024),
    headers: { "Content-Type": "application/x-www-form-urlencoded", "HX-CSRF": "1", "HX-Request": "true" },
  });
  assert(form.status === 413 && (await form.json()).error.includes("1 MiB"), `form: ${form.status}`);
});

Deno.test("messages: a model path that is a file says so; a too-long stop names the limits", async () => {
  const { app, dataDir } = setup();
  const file = path.join(dataDir, "model.safetensors");
  fs.writeFileSync(file, "not a folder");
  let msg = "";
  try {
    await loadModel(file);
  } catch (e) {
    msg = (e as Error).message;
  }
  assert(msg === `"${file}" is a file, not a model directory: give the folder that holds config.json and the *.safetensors files`, msg);
  const missing = path.join(dataDir, "nope");
  try {
    await loadModel(missing);
  } catch (e) {
    msg = (e as Error).message;
  }
  assert(msg === `Model directory "${missing}" does not exist`, msg);
  for (const stop of ["s".repeat(201), Array(9).fill("x"), 7]) {
    const r = await app.request("/v1/chat/completions", json(JSON.stringify({ model: "demo", messages: [{ role: "user", content: "hi" }], stop })));
    const j = await r.json();
    assert(
      r.status === 400 && j.error.param === "stop" && j.error.message === "stop: must be a string of at most 200 characters, or a list of at most 8 such strings",
      `${JSON.stringify(stop).slice(0, 20)}: ${JSON.stringify(j)}`,
    );
  }
});

Deno.test("dashboard: a damaged checkpoint is not offered for resume and is named; with none intact, resume is refused naming them", async () => {
  const { app, dataDir } = setup();
  const dir = createRun(parseRunConfig({ name: "dmg", dataset: { path: "sample" }, maxSteps: 10 }), dataDir);
  const id = path.basename(dir);
  writeStatus(dir, { state: "aborted", message: "Stopped by SIGTERM at step 4", step: 4, totalSteps: 10, epoch: 0, pid: 0 });
  for (const step of [2, 4]) {
    const t = { shape: [2, 2], data: Float32Array.from([step, 1, 2, 3]) };
    writeCheckpoint(dir, {
      step,
      method: "lora",
      lora: LoraSchema.parse({ r: 2, alpha: 4, targets: ["q_proj"] }),
      baseModel: "/m",
      modelDir: "/m",
      trainable: new Map([["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", t]]),
      optimizer: [{ name: "m", dtype: "F32", shape: [4], data: new Float32Array(4) }],
      state: {
        format: TRAINER_STATE_FORMAT,
        version: TRAINER_STATE_VERSION,
        step,
        totalSteps: 10,
        epoch: 0,
        microBatches: step,
        rng: { seed: 1, dropoutStream: "seed,microBatch", nextMicroBatch: step },
        schedule: { kind: "constant", peakLr: 0.01, warmupSteps: 0, totalSteps: 10 },
        method: "lora",
        baseModel: "/m",
        trainLoss: 1,
        evalLoss: null,
        logHistory: [],
      },
    });
  }
  const control = async () => await (await app.request(`/runs/${id}/fragments/control`)).text();
  let html = await control();
  assert(html.includes("Resume from step 4") && !html.includes("is damaged"), html);
  fs.truncateSync(path.join(dir, "checkpoints", "checkpoint-4", "optimizer.safetensors"), 20);
  // Fragments are shared between pollers for half a second: poll for the change.
  html = await waitFor("the damaged checkpoint to leave the control panel", async () => {
    const h = await control();
    return h.includes("is damaged") ? h : "";
  });
  assert(html.includes("Resume from step 2") && !html.includes("Resume from step 4"), `a damaged step is still offered: ${html}`);
  assert(/Checkpoint checkpoint-4 is damaged and is not offered: optimizer\.safetensors is 20 bytes; \d+ were written \(truncated\)/.test(html), html);
  const api = await (await app.request(`/api/runs/${id}`)).json();
  assert(api.checkpoints.length === 1 && api.damagedCheckpoints[0]?.name === "checkpoint-4", JSON.stringify(api));
  fs.writeFileSync(path.join(dir, "checkpoints", "checkpoint-2", "damaged.txt"), "adapter_model.safetensors does not match its checksum\n");
  html = await waitFor("no intact checkpoint in the control panel", async () => {
    const h = await control();
    return h.includes("No intact checkpoint") ? h : "";
  });
  assert(!html.includes("Resume from step") && html.includes("No intact checkpoint") && html.includes("Start again"), html);
  const r = await app.request(`/api/runs/${id}/resume`, { method: "POST" });
  const j = await r.json();
  assert(r.status === 409 && j.error.includes("no intact checkpoint") && j.error.includes("checkpoint-2: adapter_model.safetensors does not match"), JSON.stringify(j));
});
