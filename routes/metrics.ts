/** `/metrics`: Prometheus text format (runs by state, current step, loss, tokens/s of live runs). */
import { Hono } from "hono";
import type { TrainingService } from "../trainer/service.ts";
import { RUN_STATES } from "../trainer/run_dir.ts";

function esc(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

export function metricsRoutes(service: TrainingService) {
  const app = new Hono();
  app.get("/metrics", (c) => {
    const runs = service.list();
    const lines: string[] = [];
    lines.push("# HELP gemma_tuner_runs Runs by state.", "# TYPE gemma_tuner_runs gauge");
    for (const s of RUN_STATES) lines.push(`gemma_tuner_runs{state="${s}"} ${runs.filter((r) => r.status.state === s).length}`);
    const live = runs.filter((r) => r.status.state === "training" || r.status.state === "initializing");
    lines.push("# HELP gemma_tuner_run_step Current step of live runs.", "# TYPE gemma_tuner_run_step gauge");
    for (const r of live) lines.push(`gemma_tuner_run_step{run="${esc(r.id)}"} ${r.status.step}`);
    lines.push("# HELP gemma_tuner_run_loss Latest training loss of live runs.", "# TYPE gemma_tuner_run_loss gauge");
    for (const r of live) if (r.trainLoss !== undefined) lines.push(`gemma_tuner_run_loss{run="${esc(r.id)}"} ${r.trainLoss}`);
    lines.push("# HELP gemma_tuner_run_tokens_per_second Latest throughput of live runs.", "# TYPE gemma_tuner_run_tokens_per_second gauge");
    for (const r of live) {
      const t = service.metricsOf(r.id).last("train/tokens_per_second");
      if (t) lines.push(`gemma_tuner_run_tokens_per_second{run="${esc(r.id)}"} ${t[1]}`);
    }
    return c.text(lines.join("\n") + "\n", 200, { "Content-Type": "text/plain; version=0.0.4; charset=utf-8" });
  });
  return app;
}
