/** The JSON API of DESIGN.md over TrainingService. Bodies are validated with zod; errors are 4xx JSON. */
import { Hono } from "hono";
import type { Context } from "hono";
import { z } from "zod";
import * as fs from "node:fs";
import * as path from "node:path";
import { formatIssues, RunConfigSchema } from "../config/training.ts";
import { ServiceError } from "../trainer/service.ts";
import { exportAdapter, exportMerged, type ModelCache, zipFiles } from "../engine/mod.ts";
import type { AppDeps } from "./deps.ts";
import { readLogChunk } from "../trainer/logs.ts";
import { downsample } from "../trainer/metrics.ts";
import { STDERR_LOG, STDOUT_LOG } from "../trainer/process.ts";
import { isFinalState } from "../trainer/run_dir.ts";

/** The largest JSON body the API reads (a RunConfig is a few hundred bytes); app.tsx enforces it as a 413. */
export const MAX_JSON_BODY = 1024 * 1024;

/** Reads a JSON body with a size limit; a clear 400/413 otherwise. */
export async function jsonBody(c: Context): Promise<unknown> {
  const len = Number(c.req.header("Content-Length") ?? 0);
  if (len > MAX_JSON_BODY) throw new ServiceError(413, `Request body is ${len} bytes; the limit is ${MAX_JSON_BODY} bytes (1 MiB)`);
  const text = await c.req.text();
  if (text.length > MAX_JSON_BODY) throw new ServiceError(413, `Request body is over the limit of ${MAX_JSON_BODY} bytes (1 MiB)`);
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ServiceError(400, `Request body is not valid JSON: ${(e as Error).message}`);
  }
}

const ScalarQuery = z.object({
  tag: z.string().min(1).max(200).default("train/loss"),
  after: z.coerce.number().finite().default(-1),
  max: z.coerce.number().int().min(10).max(100_000).default(5000),
});

const LogQuery = z.object({
  stream: z.enum(["stdout", "stderr"]).default("stdout"),
  offset: z.coerce.number().int().min(-1).max(Number.MAX_SAFE_INTEGER).default(-1),
});

export function apiRoutes(deps: AppDeps) {
  const { service } = deps;
  const models = () => deps.models as ModelCache;
  const app = new Hono();

  app.get("/api/runs", (c) => {
    service.reconcile();
    return c.json({
      runs: service.list().map((v) => ({
        id: v.id,
        name: v.run.config.name,
        state: v.status.state,
        step: v.status.step,
        totalSteps: v.status.totalSteps,
        model: v.run.config.model,
        method: v.run.config.method,
        dataset: v.run.config.dataset.path,
        createdAt: v.run.createdAt,
        trainLoss: v.trainLoss ?? null,
        evalLoss: v.evalLoss ?? null,
        orphan: v.orphan,
      })),
    });
  });

  app.post("/api/runs", async (c) => {
    const body = await jsonBody(c);
    const r = RunConfigSchema.safeParse(body);
    if (!r.success) return c.json({ error: "Invalid run config", issues: formatIssues(r.error).split("\n") }, 400);
    const created = service.create(r.data);
    return c.json(created, 201);
  });

  app.get("/api/runs/:id", (c) => {
    const v = service.get(c.req.param("id"));
    return c.json({
      id: v.id,
      status: v.status,
      config: v.run.config,
      modelInfo: v.run.modelInfo ?? null,
      orphan: v.orphan,
      queuePosition: v.queuePosition ?? null,
      checkpoints: v.checkpoints.map((k) => ({ step: k.step, name: path.basename(k.dir) })),
      damagedCheckpoints: v.damagedCheckpoints.map((k) => ({ step: k.step, name: path.basename(k.dir), problem: k.damaged })),
      hasFinal: v.hasFinal,
    });
  });

  // From the dashboard (htmx), a state change reloads the page so its panels poll again.
  const refresh = (c: Context) => {
    if (c.req.header("HX-Request")) c.header("HX-Refresh", "true");
  };
  app.post("/api/runs/:id/abort", async (c) => {
    const status = await service.abort(c.req.param("id"));
    refresh(c);
    return c.json({ status });
  });
  app.post("/api/runs/:id/resume", (c) => {
    const status = service.resume(c.req.param("id"));
    refresh(c);
    return c.json({ status });
  });
  app.post("/api/runs/:id/cancel", (c) => {
    const status = service.cancel(c.req.param("id"));
    refresh(c);
    return c.json({ status });
  });
  app.post("/api/runs/:id/restart", (c) => {
    const status = service.restart(c.req.param("id"));
    refresh(c);
    return c.json({ status });
  });
  app.delete("/api/runs/:id", (c) => {
    const id = c.req.param("id");
    service.delete(id);
    // Deleted from its own dashboard: that page is gone, go to the history instead.
    const from = c.req.header("HX-Current-URL");
    if (from && new URL(from, "http://x").pathname === `/runs/${encodeURIComponent(id)}`) c.header("HX-Redirect", "/runs");
    else refresh(c);
    return c.json({ deleted: id });
  });

  app.get("/api/runs/:id/scalars", (c) => {
    const metrics = service.metricsOf(c.req.param("id"));
    const q = ScalarQuery.safeParse(c.req.query());
    if (!q.success) return c.json({ error: formatIssues(q.error) }, 400);
    const points = downsample(metrics.scalars(q.data.tag, q.data.after), q.data.max);
    const st = service.get(c.req.param("id")).status;
    return c.json({ tag: q.data.tag, points, live: !isFinalState(st.state) });
  });

  app.get("/api/runs/:id/logs", (c) => {
    const dir = service.runDir(c.req.param("id"));
    const q = LogQuery.safeParse(c.req.query());
    if (!q.success) return c.json({ error: formatIssues(q.error) }, 400);
    const file = path.join(dir, q.data.stream === "stdout" ? STDOUT_LOG : STDERR_LOG);
    // Once the trainer has ended, a last line without a newline is complete too.
    const ended = isFinalState(service.get(c.req.param("id")).status.state);
    return c.json(readLogChunk(file, q.data.offset, { partial: ended }));
  });

  // The playground's models: a zip of a run model, unload, checkpoint delete.
  app.get("/api/export", async (c) => {
    const id = c.req.query("model") ?? "";
    const as = c.req.query("as") === "merged" ? "merged" : "adapter";
    const m = /^([A-Za-z0-9][A-Za-z0-9_.-]{0,127})\/(final|checkpoint-\d+)$/.exec(id);
    if (!m) throw new ServiceError(400, `"${id}" is not a run model (expected <run>/final or <run>/checkpoint-<step>)`);
    const v = service.get(m[1]);
    const tmp = fs.mkdtempSync(path.join(deps.settings.dataDir, ".export-"));
    try {
      const out = path.join(tmp, "out");
      const src = { runDir: v.dir, checkpoint: m[2], dataDir: deps.settings.dataDir };
      if (as === "adapter" && v.run.config.method === "lora") await exportAdapter(src, out);
      else await exportMerged(src, out);
      const files = fs.readdirSync(out).map((name) => ({ name, data: fs.readFileSync(path.join(out, name)) }));
      const zip = await zipFiles(files);
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
    const v = service.get(c.req.param("id"));
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

  return app;
}
