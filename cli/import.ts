/**
 * `gemma-tuner import`: an adapter or merged model trained elsewhere becomes a completed run
 * (trainer/import_run.ts). From a folder, a zip, or a Hub repo (downloaded into the HF cache first,
 * engine/hub.ts). Prints one JSON line: {"runId","runDir","kind","baseModel","tensors","events","step"}.
 */
import { defineVerb } from "./verb.ts";
import { hubSettings, resolveDataDir } from "../config/app.ts";
import { downloadRepo, HubError } from "../engine/hub.ts";
import { importModel } from "../trainer/import_run.ts";

export const importVerb = defineVerb({
  name: "import",
  usage: "gemma-tuner import (--adapter DIR|ZIP | --repo ORG/NAME [--revision R]) [--name N] [--base MODEL] [--data DIR]",
  flags: {
    adapter: { kind: "string", help: "a PEFT adapter folder or zip (adapter_config.json + adapter_model.safetensors), or a merged model folder", metavar: "DIR|ZIP" },
    repo: { kind: "string", help: "a Hub repo holding an adapter or a merged model (downloaded into the HF cache)", metavar: "ORG/NAME" },
    revision: { kind: "string", help: "with --repo: branch, tag or commit (default main)" },
    token: { kind: "string", help: "with --repo: Hub token (default $HF_TOKEN)" },
    name: { kind: "string", help: "the run's name (default: the handed-off config's, else the folder's)" },
    base: { kind: "string", help: "base model: demo, a model folder or a Hub id in the HF cache (default: adapter_config.json's base_model_name_or_path)", metavar: "MODEL" },
    data: { kind: "string", help: "data directory", metavar: "DIR" },
  },
  exactlyOne: [["adapter", "repo"]],
  async run(f) {
    const dataDir = resolveDataDir(f.data);
    let source = f.adapter;
    let origin: string | undefined;
    if (f.repo) {
      const hub = hubSettings();
      try {
        const r = await downloadRepo({ repo: f.repo, revision: f.revision, token: f.token ?? hub.token, endpoint: hub.endpoint, cacheDir: hub.cacheDir, allowAdapter: true });
        source = r.dir;
        origin = `hub:${f.repo}@${r.sha}`;
      } catch (e) {
        if (e instanceof HubError) {
          console.error(`gemma-tuner import: ${e.message}`);
          return 1;
        }
        throw e;
      }
    }
    const r = await importModel({ source: source!, dataDir, name: f.name, base: f.base, origin });
    console.log(JSON.stringify(r));
    return 0;
  },
});
