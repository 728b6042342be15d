/**
 * Hand-off to a cluster and back (docs/HANDOFF.md):
 *   `ClusterForm` — "Run on a cluster…" on the create view (with the create form's fields) and on a
 *   run's dashboard; `POST /handoff/prepare` checks it and answers the mapping summary with a download
 *   link; `GET /handoff/bundle` answers the job bundle as a zip.
 *   `/import` — a page whose form turns an adapter or merged model trained elsewhere (a folder on this
 *   machine, an uploaded zip, or a Hub repo) into a completed run.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { Hono } from "hono";
import { HTTPException } from "hono/http-exception";
import { fragment, page } from "./_layout.tsx";
import type { AppDeps } from "./deps.ts";
import { formToConfig, type FormValues } from "./create_form.ts";
import {
  buildBundle,
  type HandoffConfig,
  LAUNCHERS,
  mapAxolotl,
  mapTrl,
  parseHandoffConfig,
  readConfig,
  resolveModelPath,
  slug,
  STRATEGIES,
  TARGETS,
  zipFiles,
} from "../engine/mod.ts";
import { hubSettings } from "../config/app.ts";
import { downloadRepo, HubError } from "../engine/hub.ts";
import { importModel } from "../trainer/import_run.ts";

const FIELD = (n: string) => `hf_${n}`;

/** "Run on a cluster…": the target, launcher and resources; on the create view it takes the form's config too. */
export function ClusterForm(props: { run?: string }) {
  return (
    <details class="panel handoff" id="cluster">
      <summary>Run on a cluster…</summary>
      <p class="muted">
        A job bundle for Axolotl or TRL: the data exactly as this app trains on it, their config mapped field by field, DeepSpeed for several GPUs, and a Slurm, SkyPilot or local
        launcher with a README. Bring the result back with <a href="/import">Import</a>.
      </p>
      <form id="cluster-form" hx-post="/handoff/prepare" hx-target="#cluster-result" hx-include={props.run ? undefined : "#create-form"}>
        {props.run && <input type="hidden" name={FIELD("run")} value={props.run} />}
        <label>
          Trainer <select name={FIELD("target")}>{TARGETS.map((t) => <option value={t}>{t === "trl" ? "TRL" : "Axolotl"}</option>)}</select>
        </label>
        <label>
          Launcher{" "}
          <select name={FIELD("launcher")}>
            {LAUNCHERS.map((l) => <option value={l}>{l === "slurm" ? "Slurm (sbatch)" : l === "skypilot" ? "SkyPilot" : "local torchrun"}</option>)}
          </select>
        </label>
        <label>
          GPUs per node <input name={FIELD("gpus")} type="number" min={1} max={64} value="1" />
        </label>
        <label>
          Nodes <input name={FIELD("nodes")} type="number" min={1} max={1024} value="1" />
        </label>
        <label>
          Time limit <input name={FIELD("time")} type="text" size={11} value="24:00:00" />
        </label>
        <label>
          Base model on the cluster <input name={FIELD("base")} type="text" size={30} placeholder="google/gemma-3-270m (default: derived)" />
        </label>
        <button type="submit">Prepare bundle</button>
      </form>
      <div id="cluster-result" aria-live="polite"></div>
    </details>
  );
}

function str(v: FormValues[string] | undefined): string {
  return (Array.isArray(v) ? v[0] : v)?.trim() ?? "";
}

interface Options {
  target: typeof TARGETS[number];
  launcher: typeof LAUNCHERS[number];
  gpus: number;
  nodes: number;
  time: string;
  baseModel?: string;
  strategy?: typeof STRATEGIES[number];
}

function options(get: (name: string) => string): Options {
  const target = get("target") || "axolotl", launcher = get("launcher") || "slurm";
  if (!TARGETS.includes(target as Options["target"])) throw new HTTPException(400, { message: `Trainer must be one of ${TARGETS.join(", ")}` });
  if (!LAUNCHERS.includes(launcher as Options["launcher"])) throw new HTTPException(400, { message: `Launcher must be one of ${LAUNCHERS.join(", ")}` });
  const strategy = get("strategy");
  if (strategy && !STRATEGIES.includes(strategy as Options["strategy"] & string)) {
    throw new HTTPException(400, { message: `Multi-GPU strategy must be one of ${STRATEGIES.join(", ")}` });
  }
  return {
    target: target as Options["target"],
    launcher: launcher as Options["launcher"],
    gpus: Number(get("gpus") || 1),
    nodes: Number(get("nodes") || 1),
    time: get("time") || "24:00:00",
    baseModel: get("base") || undefined,
    strategy: (strategy || undefined) as Options["strategy"],
  };
}

function b64url(s: string): string {
  return btoa(String.fromCharCode(...new TextEncoder().encode(s))).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

function unb64url(s: string): string {
  const bin = atob(s.replaceAll("-", "+").replaceAll("_", "/"));
  return new TextDecoder().decode(Uint8Array.from(bin, (ch) => ch.charCodeAt(0)));
}

export function handoffRoutes(deps: AppDeps) {
  const app = new Hono();
  const dataDir = deps.settings.dataDir;

  /** The config a bundle is made from: a run's, or the create form's (JSON in the download link). */
  function runConfig(run: string): HandoffConfig {
    const v = deps.service.get(run);
    const raw = JSON.parse(fs.readFileSync(path.join(v.dir, "run.json"), "utf8"));
    return parseHandoffConfig(raw.config ?? v.run.config, `run ${run}`);
  }

  app.post("/handoff/prepare", async (c) => {
    const f = (await c.req.parseBody({ all: true })) as FormValues;
    const o = options((n) => str(f[FIELD(n)]));
    let cfg: HandoffConfig, source: string;
    const run = str(f[FIELD("run")]);
    if (run) {
      cfg = runConfig(run);
      source = `run=${encodeURIComponent(run)}`;
    } else {
      const { config, errors } = formToConfig(f);
      if (!config) {
        return fragment(
          c,
          <div class="field-error" role="alert">
            <p>Fix the form first:</p>
            <ul>{Object.entries(errors).map(([k, m]) => <li>{k}: {m}</li>)}</ul>
          </div>,
          400,
        );
      }
      cfg = config;
      source = `config=${b64url(JSON.stringify(cfg))}`;
    }
    const modelDir = await resolveModelPath(cfg.model, dataDir);
    const hasValidation = cfg.dataset.validation > 0 || !!cfg.dataset.validationPath;
    const world = o.gpus * o.nodes;
    const strategy = o.strategy ?? (world === 1 ? "none" : cfg.method === "full" ? "zero3" : "zero2");
    const ctx = {
      baseModel: o.baseModel ?? cfg.model,
      generation: readConfig(modelDir).generation,
      hasValidation,
      gpus: o.gpus,
      nodes: o.nodes,
      strategy,
      files: { train: "data/train.jsonl", validation: "data/validation.jsonl", deepspeed: `deepspeed/${strategy}.json` },
    };
    const mapped = o.target === "axolotl" ? mapAxolotl(cfg, ctx) : mapTrl(cfg, ctx);
    const q = new URLSearchParams({
      target: o.target,
      launcher: o.launcher,
      gpus: String(o.gpus),
      nodes: String(o.nodes),
      time: o.time,
      ...(o.baseModel ? { base: o.baseModel } : {}),
    });
    return fragment(
      c,
      <div class="handoff-result">
        <p>
          {mapped.fields.length} fields mapped to {o.target === "trl" ? "TRL" : "Axolotl"}; {world} GPU{world === 1 ? "" : "s"}, multi-GPU: {strategy}.
        </p>
        {mapped.unmapped.length > 0 && (
          <>
            <p>No equivalent (listed in the bundle's README):</p>
            <ul>
              {mapped.unmapped.map((u) => (
                <li>
                  <code>{u.ours}</code> = {JSON.stringify(u.value)}: {u.note}
                </li>
              ))}
            </ul>
          </>
        )}
        <p>
          <a class="button primary" id="cluster-download" href={`/handoff/bundle?${source}&${q}`} download>Download bundle (zip)</a>
        </p>
      </div>,
    );
  });

  app.get("/handoff/bundle", async (c) => {
    const o = options((n) => c.req.query(n)?.trim() ?? "");
    const run = c.req.query("run"), encoded = c.req.query("config");
    let cfg: HandoffConfig;
    if (run) cfg = runConfig(run);
    else if (encoded) {
      let raw: unknown;
      try {
        raw = JSON.parse(unb64url(encoded));
      } catch {
        throw new HTTPException(400, { message: "The config in the link is damaged: prepare the bundle again" });
      }
      cfg = parseHandoffConfig(raw, "the bundle link's config");
    } else throw new HTTPException(400, { message: "Give run=<id> or config=<…> (use Prepare bundle)" });
    const bundle = await buildBundle(cfg, dataDir, o);
    const top = `${slug(cfg.name)}-${o.target}`;
    const zip = await zipFiles(bundle.files.map((f) => ({ name: `${top}/${f.name}`, data: f.data })));
    return new Response(zip as Uint8Array<ArrayBuffer>, { headers: { "Content-Type": "application/zip", "Content-Disposition": `attachment; filename="${top}-bundle.zip"` } });
  });

  app.get("/import", (c) =>
    page(
      c,
      "Import a model",
      <>
        <h1>Import a model trained elsewhere</h1>
        <p class="muted">
          A PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors) or a merged model (config.json, *.safetensors, tokenizer files), for example the output of a job
          bundle. It becomes a completed run: in the history, in the playground, exportable. TensorBoard events found with it are kept.
        </p>
        <form id="import-form" method="post" action="/import" hx-post="/import" hx-encoding="multipart/form-data" hx-target="#import-result">
          <label>
            Folder on this machine <input name="folder" type="text" size={60} placeholder="/path/to/outputs/my-run" />
          </label>
          <label>
            or a zip <input name="file" type="file" accept=".zip" />
          </label>
          <label>
            or a Hub repo <input name="repo" type="text" size={40} placeholder="org/my-gemma-adapter" />
          </label>
          <label>
            Name <input name="name" type="text" size={30} placeholder="(from the bundle or folder)" />
          </label>
          <label>
            Base model <input name="base" type="text" size={40} placeholder="(adapter_config.json's; demo, a folder or org/name)" />
          </label>
          <button type="submit" class="primary">Import</button>
        </form>
        <div id="import-result" aria-live="polite"></div>
      </>,
    ));

  app.post("/import", async (c) => {
    const f = (await c.req.parseBody()) as Record<string, string | File>;
    const text = (k: string) => (typeof f[k] === "string" ? (f[k] as string).trim() : "");
    const file = f.file instanceof File && f.file.size > 0 ? f.file : null;
    const given = [text("folder") && "folder", file && "zip", text("repo") && "repo"].filter(Boolean);
    if (given.length !== 1) throw new HTTPException(400, { message: "Give exactly one of: a folder, a zip or a Hub repo" });
    let source = text("folder"), origin: string | undefined, upload: string | undefined;
    try {
      if (file) {
        upload = path.join(dataDir, `.upload-${crypto.randomUUID()}.zip`);
        fs.writeFileSync(upload, new Uint8Array(await file.arrayBuffer()));
        source = upload;
        origin = `upload:${file.name}`;
      } else if (text("repo")) {
        const hub = hubSettings();
        try {
          const r = await downloadRepo({ repo: text("repo"), token: hub.token, endpoint: hub.endpoint, cacheDir: hub.cacheDir, allowAdapter: true });
          source = r.dir;
          origin = `hub:${text("repo")}@${r.sha}`;
        } catch (e) {
          if (e instanceof HubError) throw new HTTPException(e.kind === "network" ? 502 : 400, { message: e.message });
          throw e;
        }
      }
      const r = await importModel({ source, dataDir, name: text("name") || undefined, base: text("base") || undefined, origin });
      deps.service.reconcile(0);
      if (!c.req.header("HX-Request")) return c.redirect(`/runs/${encodeURIComponent(r.runId)}`, 303);
      return fragment(
        c,
        <p role="status">
          Imported {r.kind === "adapter" ? `an adapter (${r.tensors} tensors)` : "a merged model"} as run <a href={`/runs/${encodeURIComponent(r.runId)}`}>{r.runId}</a>
          {r.events.length ? ` with ${r.events.length} TensorBoard event file${r.events.length === 1 ? "" : "s"}` : ""}.{" "}
          <a class="button" href={`/inference?model=${encodeURIComponent(`${r.runId}/final`)}`}>Chat with it</a>
        </p>,
      );
    } finally {
      if (upload) fs.rmSync(upload, { force: true });
    }
  });

  return app;
}
