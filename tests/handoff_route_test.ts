/**
 * "Run on a cluster…" from the create view and a run's dashboard: the form is on both pages, Prepare
 * answers the mapping summary (with the unmapped fields) and a link, and the link downloads a zip
 * holding the bundle; bad input is a 400 naming the field.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import YAML from "yaml";
import { createApp } from "../routes/app.tsx";
import { loadAppSettings } from "../config/app.ts";
import { TrainingService } from "../trainer/service.ts";
import { createRun, writeStatus } from "../trainer/run_dir.ts";
import { parseRunConfig } from "../config/training.ts";
import { extractEntry, listZip } from "../engine/zip_read.ts";
import { assert, assertEquals } from "./_assert.ts";
import { CREATE_FORM, formParams } from "./_forms.ts";

const HX = { "HX-Request": "true", "HX-CSRF": "1" };

Deno.test("Run on a cluster: create form and dashboard prepare a bundle whose zip downloads", async () => {
  const dataDir = fs.mkdtempSync("/tmp/gt-hroute-");
  const service = new TrainingService(dataDir, { intervalMs: 0 });
  try {
    const app = createApp({ settings: loadAppSettings({ host: "127.0.0.1", port: 0, data: dataDir }), service, probeDevices: () => Promise.resolve([]) });
    const create = await (await app.request("/create")).text();
    assert(create.includes("Run on a cluster…") && create.includes('hx-include="#create-form"'), "the create view has the cluster form");

    // The create form's fields (as hx-include sends them) plus the cluster fields.
    const form = formParams({
      ...CREATE_FORM,
      name: "cluster demo",
      lora_dropout: "0.05",
      maxSteps: "20",
      batchSize: "4",
      gradAccum: "2",
      learningRate: "0.0002",
      warmupSteps: "2",
      saveEvery: "10",
      seed: "3",
      device: "cpu",
      hf_target: "trl",
      hf_launcher: "slurm",
      hf_gpus: "4",
      hf_nodes: "2",
      hf_time: "12:00:00",
    });
    const prep = await app.request("/handoff/prepare", { method: "POST", body: form, headers: HX });
    const html = await prep.text();
    assertEquals(prep.status, 200, html);
    assert(html.includes("<code>device</code>"), `unmapped fields are shown: ${html}`);
    const href = /href="(\/handoff\/bundle\?[^"]+)"/.exec(html)?.[1]?.replaceAll("&amp;", "&");
    assert(href, `no download link in ${html}`);
    const zip = await app.request(href);
    assertEquals([zip.status, zip.headers.get("Content-Type")], [200, "application/zip"], href);
    const file = path.join(dataDir, "b.zip");
    fs.writeFileSync(file, new Uint8Array(await zip.arrayBuffer()));
    const entries = listZip(file), names = entries.map((e) => e.name);
    for (const n of ["trl.yaml", "train_trl.py", "data/train.jsonl", "data/validation.jsonl", "deepspeed/zero2.json", "job.sbatch", "README.md", "handoff.json"]) {
      assert(names.includes(`cluster-demo-trl/${n}`), `zip lacks ${n}: ${names}`);
    }
    const yml = path.join(dataDir, "trl.yaml");
    await extractEntry(file, entries.find((e) => e.name === "cluster-demo-trl/trl.yaml")!, yml);
    const trl = YAML.parse(fs.readFileSync(yml, "utf8"), { version: "1.1" });
    assertEquals([trl.sft.per_device_train_batch_size, trl.sft.gradient_accumulation_steps, trl.sft.max_steps, trl.peft.r, trl.peft.target_modules], [4, 2, 20, 8, [
      "q_proj",
      "v_proj",
    ]]);

    // A run's dashboard: the same form, with the run's id.
    const dir = createRun(parseRunConfig({ name: "done", model: "demo", dataset: { path: "sample", validation: 0 }, maxSteps: 3, evalEvery: 0 }), dataDir);
    writeStatus(dir, { state: "completed", message: "done", step: 3, totalSteps: 3, epoch: 0, pid: 0 });
    const id = path.basename(dir);
    const dash = await (await app.request(`/runs/${id}`)).text();
    assert(dash.includes("Run on a cluster…") && dash.includes(`value="${id}"`), "the dashboard has the cluster form for this run");
    const prep2 = await app.request("/handoff/prepare", {
      method: "POST",
      body: new URLSearchParams({ hf_run: id, hf_target: "axolotl", hf_launcher: "local", hf_gpus: "1", hf_nodes: "1", hf_time: "01:00:00" }),
      headers: HX,
    });
    const href2 = /href="(\/handoff\/bundle\?[^"]+)"/.exec(await prep2.text())?.[1]?.replaceAll("&amp;", "&");
    assert(href2?.includes(`run=${id}`), `dashboard link: ${href2}`);
    const z2 = await app.request(href2!);
    fs.writeFileSync(file, new Uint8Array(await z2.arrayBuffer()));
    const names2 = listZip(file).map((e) => e.name);
    assert(names2.includes("done-axolotl/axolotl.yaml") && names2.includes("done-axolotl/run_local.sh"), `run zip: ${names2}`);

    // Bad input: a 400 that names what to fix.
    const bad = await app.request("/handoff/bundle?run=" + id + "&target=axolotl&launcher=local&time=forever");
    const badText = await bad.text();
    assert(bad.status === 400 && badText.includes("Time limit &quot;forever&quot; is not HH:MM:SS"), `${bad.status} ${badText}`);
    const badForm = await app.request("/handoff/prepare", { method: "POST", body: new URLSearchParams({ name: "x", maxSteps: "", hf_target: "axolotl" }), headers: HX });
    const badFormText = await badForm.text();
    assert(badForm.status === 400 && badFormText.includes("maxSteps"), `${badForm.status} ${badFormText}`);
  } finally {
    await service.stop();
  }
});
