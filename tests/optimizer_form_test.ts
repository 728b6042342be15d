/** The optimizer choice (adamw | adamw-8bit): the create form's select reaches RunConfig, a bad value is named, and the memory shown follows it. */
import * as fs from "node:fs";
import { createApp } from "../routes/app.tsx";
import { loadAppSettings } from "../config/app.ts";
import { TrainingService } from "../trainer/service.ts";
import { formToConfig } from "../routes/create_form.ts";
import { parseRunConfig } from "../config/training.ts";
import { assert } from "./_assert.ts";
import { CREATE_FORM, formData } from "./_forms.ts";

Deno.test("optimizer: the form's select reaches RunConfig, a bad value names the field, and full fine-tuning's memory shrinks with 8-bit moments", async () => {
  assert(formToConfig(CREATE_FORM).config!.optimizer === "adamw", "the default should be float32 AdamW");
  assert(formToConfig({ ...CREATE_FORM, optimizer: "adamw-8bit" }).config!.optimizer === "adamw-8bit", "adamw-8bit not decoded");
  const bad = formToConfig({ ...CREATE_FORM, optimizer: "sgd" });
  assert(bad.errors.optimizer?.includes("adamw-8bit"), `the error should name the field and the choices: ${JSON.stringify(bad.errors)}`);
  let threw = "";
  try {
    parseRunConfig({ model: "demo", dataset: { path: "sample" }, maxSteps: 5, optimizer: "adam8" });
  } catch (e) {
    threw = (e as Error).message;
  }
  assert(threw.includes("optimizer:"), `RunConfig should name the field: ${threw}`);
  const dataDir = fs.mkdtempSync("/tmp/gt-optim-");
  try {
    const service = new TrainingService(dataDir, { intervalMs: 0, graceMs: 20_000 });
    const app = createApp({ settings: loadAppSettings({ host: "127.0.0.1", port: 0, data: dataDir }), service });
    const page = await (await app.request("/create")).text();
    assert(page.includes('name="optimizer"') && page.includes("AdamW 8-bit"), "no Optimizer select");
    const panel = async (extra: Record<string, string>) => {
      const r = await app.request("/create/fragments/check", { method: "POST", body: formData({ ...CREATE_FORM, ...extra }), headers: { "HX-Request": "true", "HX-CSRF": "1" } });
      return await r.text();
    };
    const mem = (html: string) => Number(/data-memory="(\d+)"/.exec(html)?.[1]);
    const fp32 = mem(await panel({ method: "full" })), q8 = mem(await panel({ method: "full", optimizer: "adamw-8bit" }));
    // The demo model's 17M parameters, about 6 bytes less each: about 100 MB.
    assert(fp32 - q8 > 90 * 2 ** 20 && fp32 - q8 < 110 * 2 ** 20, `memory does not follow the optimizer: ${fp32} vs ${q8}`);
  } finally {
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
});
