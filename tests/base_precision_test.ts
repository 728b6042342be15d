/** The create view's "Base weights (LoRA)" select: decoded into RunConfig, shown in the Model panel with its reason, and the memory follows it. */
import * as fs from "node:fs";
import { createApp } from "../routes/app.tsx";
import { loadAppSettings } from "../config/app.ts";
import { TrainingService } from "../trainer/service.ts";
import { formToConfig } from "../routes/create_form.ts";
import { assert } from "./_assert.ts";
import { CREATE_FORM, formData } from "./_forms.ts";

const BASE = CREATE_FORM;
const form = formData;

Deno.test("base precision: the form's select reaches RunConfig (LoRA only) and the Model panel shows the choice, its reason and its memory", async () => {
  assert(formToConfig(BASE).config!.basePrecision === undefined, "empty select should leave the default policy");
  assert(formToConfig({ ...BASE, base_precision: "int4" }).config!.basePrecision === "int4", "int4 not decoded");
  assert(formToConfig({ ...BASE, method: "full", base_precision: "int4" }).config!.basePrecision === undefined, "full fine-tuning must ignore the hidden select");
  const dataDir = fs.mkdtempSync("/tmp/gt-baseprec-");
  try {
    const service = new TrainingService(dataDir, { intervalMs: 0, graceMs: 20_000 });
    const app = createApp({ settings: loadAppSettings({ host: "127.0.0.1", port: 0, data: dataDir }), service });
    const page = await (await app.request("/create")).text();
    assert(page.includes('name="base_precision"') && page.includes("Base weights (LoRA)") && page.includes('class="lora-only"'), "no Base weights select");
    const panel = async (extra: Record<string, string>) => {
      const r = await app.request("/create/fragments/check", { method: "POST", body: form({ ...BASE, ...extra }), headers: { "HX-Request": "true", "HX-CSRF": "1" } });
      return await r.text();
    };
    const def = await panel({});
    // The demo model is tiny (< 2B): the policy picks int8 and says why.
    assert(/data-base-precision="int8"/.test(def) && def.includes("within bound"), `default not shown: ${def.slice(0, 600)}`);
    const mem = (html: string) => Number(/data-memory="(\d+)"/.exec(html)?.[1]);
    const fp32 = await panel({ base_precision: "fp32" }), int4 = await panel({ base_precision: "int4" });
    assert(/data-base-precision="fp32"/.test(fp32) && fp32.includes("as configured"), "fp32 choice not shown");
    assert(mem(int4) < mem(fp32), `memory does not follow the precision: int4 ${mem(int4)} vs fp32 ${mem(fp32)}`);
    const full = await panel({ method: "full" });
    assert(!full.includes("data-base-precision"), "full fine-tuning shows a base precision");
  } finally {
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
});
