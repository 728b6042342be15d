/** The JSON API of DESIGN.md over TrainingService. Bodies are validated with zod; errors are 4xx JSON. */
import { Hono } from "hono";
import type { Context } from "hono";
import { z } from "zod";
import * as path from "node:path";
import { formatIssues, RunConfigSchema } from "../config/training.ts";
import { ServiceError, type TrainingService } from "../trainer/service.ts";
import { readLogChunk } from "../trainer/logs.ts";
import { downsample } from "../trainer/metrics.ts";
import { STDERR_LOG, STDOUT_LOG } from "../trainer/process.ts";
import { isFinalState } from "../trainer/run_dir.ts";

const MAX_BODY = 1024 * 1024;

/** Reads a JSON body with a size limit; a clear 400/413 otherwise. */
export async function jsonBody(c: Context): Promise<unknown> {
  const len = Number(c.req.header("Content-Length") ?? 0);
  if (len > MAX_BODY) throw new ServiceError(400, `Request body is ${len} bytes; the limit is ${MAX_BODY}`);
  const text = await c.req.text();
  if (text.length > MAX_BODY) throw new ServiceError(400, `Request body is over ${MAX_BODY} bytes`);
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

export function apiRoutes(service: TrainingService) {
  const app = new Hono();
  app.onError((err, c) => {
    if (err instanceof ServiceError) return c.json({ error: err.message }, err.status);
    throw err;
  });

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
    return c.json({ id: v.id, status: v.status, config: v.run.config, modelInfo: v.run.modelInfo ?? null, orphan: v.orphan, queuePosition: v.queuePosition ?? null, checkpoints: v.checkpoints.map((k) => ({ step: k.step, name: path.basename(k.dir) })), hasFinal: v.hasFinal });
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
    const dir = service.runDir(c.req.param("id"));
    const q = ScalarQuery.safeParse(c.req.query());
    if (!q.success) return c.json({ error: formatIssues(q.error) }, 400);
    const points = downsample(service.metrics.scalars(dir, q.data.tag, q.data.after), q.data.max);
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

  return app;
}
