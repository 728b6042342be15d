/** The create form's device choice: probed devices, unavailable ones disabled with their reason. */
import * as fs from "node:fs";
import { createApp } from "./app.tsx";
import { loadAppSettings } from "../config/app.ts";
import { TrainingService } from "../trainer/service.ts";
import { formToConfig } from "./create_form.ts";

function app(probe?: Parameters<typeof createApp>[0]["probeDevices"]) {
  const dataDir = fs.mkdtempSync("/tmp/gt-devices-");
  const service = new TrainingService(dataDir, { intervalMs: 0, graceMs: 20_000 });
  const settings = loadAppSettings({ host: "127.0.0.1", port: 0, data: dataDir });
  return createApp({ settings, service, probeDevices: probe });
}

Deno.test("the device fragment lists every device; unavailable ones are disabled and say why", async () => {
  const a = app(() =>
    Promise.resolve([
      { device: "cpu", available: true },
      { device: "webgpu", available: true },
      { device: "cuda", available: false, reason: "libonnxruntime_providers_cuda.so is missing from /x; run `gemma-tuner setup-cuda`" },
    ])
  );
  const html = await (await a.request("/create/devices?selected=webgpu", { headers: { "HX-Request": "true" } })).text();
  if (!/<option value="webgpu" selected/.test(html)) throw new Error(`webgpu not selected: ${html}`);
  if (!/<option value="cuda" disabled/.test(html)) throw new Error(`cuda not disabled: ${html}`);
  if (!html.includes("setup-cuda") || !html.includes('data-device="cuda"')) throw new Error(`no reason for cuda: ${html}`);
  // An unavailable device asked for falls back to the CPU choice, visibly.
  const html2 = await (await a.request("/create/devices?selected=cuda")).text();
  if (!/<option value="cpu" selected/.test(html2)) throw new Error(`cpu not selected: ${html2}`);
});

Deno.test("the create page loads the probed choice and the form posts the device", async () => {
  const page = await (await app().request("/create")).text();
  if (!page.includes('hx-get="/create/devices?selected=cpu"') || !page.includes('name="device"')) throw new Error("no device choice on /create");
  const real = await (await app().request("/create/devices")).text();
  if (!/<option value="cpu" selected/.test(real)) throw new Error(`the real probe does not offer the CPU: ${real}`);
  const r = formToConfig({ name: "t", model: "demo", dataset_path: "sample", method: "lora", lora_targets: ["q_proj"], until: "steps", maxSteps: "50", device: "webgpu" });
  if (r.config?.device !== "webgpu") throw new Error(`device not decoded: ${JSON.stringify(r)}`);
});
