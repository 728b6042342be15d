/** Export from the UI: a finished run's adapter and merged model download as zip archives. */
import * as fs from "node:fs";
import * as path from "node:path";
import { createApp } from "../routes/app.tsx";
import { loadAppSettings } from "../config/app.ts";
import { TrainingService } from "../trainer/service.ts";
import { createRun, writeStatus } from "../trainer/run_dir.ts";
import { parseRunConfig } from "../config/training.ts";
import { ensureDemoModel } from "../engine/init_model.ts";
import { loadModel } from "../engine/model_dir.ts";
import { initLora } from "../engine/lora.ts";
import { writeAdapter } from "../engine/peft.ts";
import { assert } from "./_assert.ts";

/** Names of the files in a zip, read from its central directory. */
function zipNames(z: Uint8Array): string[] {
  const dv = new DataView(z.buffer, z.byteOffset, z.byteLength);
  const end = z.length - 22;
  assert(dv.getUint32(end, true) === 0x06054b50, "no end of central directory");
  let p = dv.getUint32(end + 16, true);
  const names: string[] = [];
  for (let i = 0; i < dv.getUint16(end + 10, true); i++) {
    const n = dv.getUint16(p + 28, true);
    names.push(new TextDecoder().decode(z.subarray(p + 46, p + 46 + n)));
    p += 46 + n + dv.getUint16(p + 30, true) + dv.getUint16(p + 32, true);
  }
  return names;
}

Deno.test("export downloads: adapter zip holds the PEFT files, merged zip a loadable checkpoint; bad ids are 4xx", async () => {
  const dataDir = fs.mkdtempSync("/tmp/gt-exproute-");
  const service = new TrainingService(dataDir, { intervalMs: 0 });
  const app = createApp({ settings: loadAppSettings({ host: "127.0.0.1", port: 0, data: dataDir }), service });
  const dir = createRun(parseRunConfig({ name: "exp", model: "demo", dataset: { path: "sample" }, maxSteps: 1 }), dataDir);
  const base = await loadModel(await ensureDemoModel(dataDir));
  const lora = { r: 2, alpha: 4, dropout: 0, rslora: false, targets: ["q_proj" as const] };
  writeAdapter(path.join(dir, "final"), initLora(base.config, lora, 1), lora, "demo");
  writeStatus(dir, { state: "completed", message: "done", step: 1, totalSteps: 1, epoch: 0, pid: 0 });
  const id = path.basename(dir);
  const a = await app.request(`/api/export?model=${id}/final&as=adapter`);
  assert(a.status === 200 && a.headers.get("Content-Type") === "application/zip", `adapter export gave ${a.status}`);
  const an = zipNames(new Uint8Array(await a.arrayBuffer()));
  assert(an.includes("adapter_model.safetensors") && an.includes("adapter_config.json"), `adapter zip: ${an}`);
  const m = await app.request(`/api/export?model=${id}/final&as=merged`);
  const mn = zipNames(new Uint8Array(await m.arrayBuffer()));
  assert(["model.safetensors", "config.json", "tokenizer.json"].every((f) => mn.includes(f)), `merged zip: ${mn}`);
  for (const bad of ["../etc/final", `${id}/checkpoint-x`, "nope/final"]) {
    const r = await app.request(`/api/export?model=${encodeURIComponent(bad)}&as=adapter`);
    assert(r.status >= 400 && r.status < 500, `${bad} gave ${r.status}`);
    await r.body?.cancel();
  }
  assert(!fs.readdirSync(dataDir).some((n) => n.startsWith(".export-")), "temporary export folders were left behind");
  await service.stop();
});
