/** `/inference`: the playground (Chat island), the models to try, and their actions (unload, delete, export). */
import { Hono } from "hono";
import * as fs from "node:fs";
import * as path from "node:path";
import { DeleteButton, Island, page } from "./_layout.tsx";
import type { AppDeps } from "./app.tsx";
import type { ModelCache } from "../engine/model_cache.ts";
import { isFinalState } from "../trainer/run_dir.ts";
import { ServiceError } from "../trainer/service.ts";
import { exportAdapter, exportMerged, zipFiles } from "../engine/export.ts";

export function inferenceRoutes(deps: AppDeps) {
  const app = new Hono();
  const models = () => deps.models as ModelCache;

  app.get("/inference", (c) => {
    const list = models().list();
    const asked = c.req.query("model");
    const model = list.some((m) => m.id === asked) ? asked! : list.find((m) => m.kind !== "base")?.id ?? "demo";
    return page(
      c,
      "Playground",
      <>
        <h1>Playground</h1>
        <p class="muted">Chat with a base model or one you tuned. Tick “side by side” to send the same conversation to two models.</p>
        <Island name="Chat" props={{ models: list.map((m) => ({ id: m.id, label: m.label })), model, compare: model === "demo" ? undefined : "demo" }} />
        <h2>Models</h2>
        <table>
          <thead>
            <tr><th scope="col">Model</th><th scope="col">Kind</th><th scope="col">Loaded</th><th scope="col"><span class="sr-only">Actions</span></th></tr>
          </thead>
          <tbody>
            {list.map((m) => (
              <tr>
                <td>{m.label}<br /><small class="muted">{m.id}</small></td>
                <td>{m.kind}</td>
                <td>{models().isLoaded(m.id) ? "yes" : "no"}</td>
                <td class="actions">
                  {models().isLoaded(m.id) && <button type="button" hx-post={`/api/models/unload?id=${encodeURIComponent(m.id)}`} hx-swap="none">Unload</button>}
                  {m.runId && <a class="button" href={`/api/export?model=${encodeURIComponent(m.id)}&as=adapter`}>Adapter (zip)</a>}
                  {m.runId && <a class="button" href={`/api/export?model=${encodeURIComponent(m.id)}&as=merged`}>Merged model (zip)</a>}
                  {m.kind === "checkpoint" && (
                    <DeleteButton url={`/api/runs/${encodeURIComponent(m.runId!)}/checkpoints/checkpoint-${m.step}`} confirm={`Delete checkpoint at step ${m.step}?`} />
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </>,
    );
  });

  app.get("/api/export", async (c) => {
    const id = c.req.query("model") ?? "";
    const as = c.req.query("as") === "merged" ? "merged" : "adapter";
    const m = /^([A-Za-z0-9][A-Za-z0-9_.-]{0,127})\/(final|checkpoint-\d+)$/.exec(id);
    if (!m) throw new ServiceError(400, `"${id}" is not a run model (expected <run>/final or <run>/checkpoint-<step>)`);
    const v = deps.service.get(m[1]);
    const tmp = fs.mkdtempSync(path.join(deps.settings.dataDir, ".export-"));
    try {
      const out = path.join(tmp, "out");
      const src = { runDir: v.dir, checkpoint: m[2], dataDir: deps.settings.dataDir };
      if (as === "adapter" && v.run.config.method === "lora") exportAdapter(src, out);
      else await exportMerged(src, out);
      const files = fs.readdirSync(out).map((name) => ({ name, data: fs.readFileSync(path.join(out, name)) }));
      const zip = zipFiles(files);
      const fname = `${v.id}-${m[2]}-${as === "adapter" && v.run.config.method === "lora" ? "adapter" : "merged"}.zip`;
      return new Response(zip as Uint8Array<ArrayBuffer>, { headers: { "Content-Type": "application/zip", "Content-Disposition": `attachment; filename="${fname}"` } });
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  app.post("/api/models/unload", (c) => {
    const id = c.req.query("id") ?? "";
    const ok = models().unload(id);
    if (c.req.header("HX-Request")) c.header("HX-Refresh", "true");
    return c.json({ unloaded: ok });
  });

  app.delete("/api/runs/:id/checkpoints/:name", (c) => {
    const v = deps.service.get(c.req.param("id"));
    const name = c.req.param("name");
    if (!/^checkpoint-\d+$/.test(name)) throw new ServiceError(400, `"${name}" is not a checkpoint name`);
    if (!isFinalState(v.status.state)) throw new ServiceError(409, "The run is still going: its checkpoints are in use");
    const dir = path.join(v.dir, "checkpoints", name);
    if (!fs.existsSync(dir)) throw new ServiceError(404, `No checkpoint ${name}`);
    if (!v.hasFinal && v.checkpoints.length === 1) throw new ServiceError(409, "This is the run's only checkpoint; it is kept");
    models().unload(`${v.id}/${name}`);
    fs.rmSync(dir, { recursive: true, force: true });
    if (c.req.header("HX-Request")) c.header("HX-Refresh", "true");
    return c.json({ deleted: name });
  });

  app.onError((err, c) => {
    if (err instanceof ServiceError) return c.json({ error: err.message }, err.status);
    throw err;
  });
  return app;
}
