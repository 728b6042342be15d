/**
 * Fragment cost with a big run: an event file of 100 000 steps (7 scalars each) and a 50 MB stdout
 * log. Measures the first (cold) KPI request, then steady-state KPI and logs fragments while the run
 * keeps appending, which must cost O(new bytes), not O(file). Prints one JSON line.
 *
 *   deno run -A scripts/bench_dashboard.ts
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { createApp } from "../routes/app.tsx";
import { loadAppSettings } from "../config/app.ts";
import { TrainingService } from "../trainer/service.ts";
import { createRun, writeStatus } from "../trainer/run_dir.ts";
import { parseRunConfig } from "../config/training.ts";
import { EventWriter } from "../trainer/tfevents.ts";

const STEPS = 100_000;
const dataDir = fs.mkdtempSync("/tmp/gt-benchdash-");
const runDir = createRun(parseRunConfig({ name: "big", model: "demo", dataset: { path: "sample" }, maxSteps: STEPS * 2 }), dataDir);
const id = path.basename(runDir);
const ev = new EventWriter(runDir);
const t0 = performance.now();
const scalars = (s: number) => ({
  "train/loss": 3 + Math.sin(s / 100),
  "train/learning_rate": 1e-4,
  "train/grad_norm": 1,
  "train/tokens_per_second": 900,
  "train/step_time_ms": 50,
  "train/epoch": s / 1000,
  "system/rss_mb": 1200,
});
for (let s = 1; s <= STEPS; s++) ev.scalars(s, scalars(s), 1_700_000_000 + s * 0.05);
const logLine = "step 12345/200000 | loss 3.1234 | lr 1.00e-4 | grad_norm 1.000 | 900 tok/s | 50 ms | epoch 12.34\n";
const log = fs.openSync(path.join(runDir, "trainer_stdout.log"), "w");
const block = logLine.repeat(Math.ceil((1 << 20) / logLine.length));
for (let i = 0; i < 50; i++) fs.writeSync(log, block);
const writeMs = performance.now() - t0;
// A live-looking status: a stand-in process with "train" on its command line plays the trainer.
const trainer = new Deno.Command("/bin/sh", { args: ["-c", "sleep 600; :", "sh", "train", "--run", runDir], stdout: "null", stderr: "null" }).spawn();
writeStatus(runDir, { state: "training", message: "Training", step: STEPS, totalSteps: STEPS * 2, epoch: 100, pid: trainer.pid });

const service = new TrainingService(dataDir, { intervalMs: 0 });
const app = createApp({ settings: loadAppSettings({ host: "127.0.0.1", port: 0, data: dataDir }), service });

async function time(url: string): Promise<number> {
  const t = performance.now();
  const r = await app.request(url);
  await r.text();
  return performance.now() - t;
}

const coldKpi = await time(`/runs/${id}/fragments/kpi`);
if ((await app.request(`/runs/${id}/fragments/kpi`)).status !== 200) {
  throw new Error("bench_dashboard: the stand-in run is not live; the numbers would not be those of a training run");
}
const kpi: number[] = [], logs: number[] = [], scalarsMs: number[] = [];
let offset = fs.statSync(path.join(runDir, "trainer_stdout.log")).size;
for (let i = 1; i <= 50; i++) {
  // The trainer appends one step per poll.
  ev.scalars(STEPS + i, scalars(STEPS + i));
  fs.writeSync(log, logLine);
  // A distinct URL per request: polls within 0.5 s share one answer, which would hide the cost.
  kpi.push(await time(`/runs/${id}/fragments/kpi?n=${i}`));
  logs.push(await time(`/runs/${id}/fragments/logs?out=${offset}&err=0&errors=0`));
  offset += logLine.length;
  scalarsMs.push(await time(`/api/runs/${id}/scalars?tag=train/loss&after=${STEPS + i - 1}`));
}
const med = (a: number[]) => a.sort((x, y) => x - y)[Math.floor(a.length / 2)];
console.log(JSON.stringify({
  steps: STEPS,
  event_file_mb: +(fs.statSync(ev.path).size / 2 ** 20).toFixed(1),
  log_mb: +(fs.statSync(path.join(runDir, "trainer_stdout.log")).size / 2 ** 20).toFixed(1),
  setup_ms: Math.round(writeMs),
  kpi_cold_ms: +coldKpi.toFixed(1),
  kpi_median_ms: +med(kpi).toFixed(2),
  logs_median_ms: +med(logs).toFixed(2),
  scalars_after_median_ms: +med(scalarsMs).toFixed(2),
}));
ev.close();
fs.closeSync(log);
await service.stop();
trainer.kill("SIGKILL");
await trainer.status;
fs.rmSync(dataDir, { recursive: true, force: true });
