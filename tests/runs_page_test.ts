/** `/runs` history: every run listed, loss-curve comparison, delete only finished runs. */
import * as fs from "node:fs";
import * as path from "node:path";
import { createApp } from "../routes/app.tsx";
import { runDuration } from "../routes/runs.tsx";
import { loadAppSettings } from "../config/app.ts";
import { TrainingService } from "../trainer/service.ts";
import { createRun, writeStatus } from "../trainer/run_dir.ts";
import { parseRunConfig } from "../config/training.ts";
import { assert } from "./_assert.ts";

Deno.test("runs page lists runs, overlays selected curves, and deletes only finished runs", async () => {
  const dataDir = fs.mkdtempSync("/tmp/gt-runs-");
  const service = new TrainingService(dataDir, { intervalMs: 0 });
  const app = createApp({ settings: loadAppSettings({ host: "127.0.0.1", port: 0, data: dataDir }), service });
  // The live run's trainer: a stand-in with "train" on its command line (the service checks that a pid is a trainer).
  const trainer = new Deno.Command("/bin/sh", { args: ["-c", "sleep 60; :", "sh", "train"], stdout: "null", stderr: "null" }).spawn();
  const mk = (name: string, state: "completed" | "training") => {
    const dir = createRun(parseRunConfig({ name, dataset: { path: "sample" }, maxSteps: 3 }), dataDir);
    writeStatus(dir, { state, message: state, step: 3, totalSteps: 3, epoch: 0, pid: trainer.pid });
    return path.basename(dir);
  };
  const a = mk("alpha", "completed"), b = mk("beta", "completed"), live = mk("gamma", "training");
  const html = await (await app.request(`/runs?compare=${a}&compare=${b}`)).text();
  for (const n of ["alpha", "beta", "gamma"]) assert(html.includes(n), `${n} missing`);
  assert(html.includes('data-island="MetricsChart"') && html.includes(a) && html.includes("runIds"), "no comparison chart");
  // A run that is training has a duration; a queued one (the service would start it here, so its view) has none.
  const cell = (id: string) => new RegExp(`data-run="${id}"[\\s\\S]*?data-duration="?[^>]*>([^<]*)<`).exec(html)?.[1];
  assert(/^\d+s$/.test(cell(live) ?? ""), `the training run's duration is "${cell(live)}"`);
  const view = service.list().find((v) => v.id === live)!;
  // The duration counts the time a trainer worked on the run (status.log), not the time since creation:
  // a run queued for 10 minutes, trained 65 s, aborted, re-queued, then trained 90 s more took 2m 35s.
  const at = (s: number) => new Date(Date.parse("2026-01-01T00:00:00Z") + s * 1000).toISOString();
  const logged = (lines: [number, string][], status: Partial<typeof view.status>) => {
    const dir = fs.mkdtempSync("/tmp/gt-runlog-");
    fs.writeFileSync(path.join(dir, "status.log"), lines.map(([t, st]) => `${at(t)} [${st}] ${st}\n`).join(""));
    return { ...view, dir, run: { ...view.run, createdAt: at(0) }, status: { ...view.status, ...status } };
  };
  const waiting = logged([[0, "queued"]], { state: "queued", step: 0, updatedAt: at(0) });
  assert(runDuration(waiting, Date.parse(at(600))) === "–", `a queued run shows a duration: ${runDuration(waiting, Date.parse(at(600)))}`);
  const started = logged([[0, "queued"], [600, "initializing"], [605, "training"]], { state: "training", updatedAt: at(620) });
  assert(runDuration(started, Date.parse(at(690))) === "1m 30s", `a training run queued for 10 minutes: ${runDuration(started, Date.parse(at(690)))}, not 1m 30s`);
  const resumed = logged([[0, "queued"], [600, "initializing"], [605, "training"], [665, "aborted"], [900, "queued"], [1000, "initializing"], [1010, "training"], [
    1090,
    "completed",
  ]], {
    state: "completed",
    updatedAt: at(1090),
  });
  assert(runDuration(resumed, Date.parse(at(5000))) === "2m 35s", `an aborted and resumed run: ${runDuration(resumed, Date.parse(at(5000)))}, not 2m 35s`);
  const requeued = logged([[0, "queued"], [600, "initializing"], [605, "training"], [665, "aborted"], [900, "queued"]], { state: "queued", updatedAt: at(900) });
  assert(
    runDuration(requeued, Date.parse(at(5000))) === "1m 5s",
    `a resumed run waiting in the queue keeps its time and does not run on: ${runDuration(requeued, Date.parse(at(5000)))}`,
  );
  // The same settings: the comparison says so, and its legends are the run names.
  assert(html.includes("data-no-diff") && html.includes(`&quot;${a}&quot;:&quot;alpha&quot;`), "comparison: no settings note or no legend names");
  // Home highlights the run a trainer is working on, not the newest (the queued one).
  const home = await (await app.request("/")).text();
  assert(home.includes(`data-highlight="${live}"`) && /Training now/.test(home), "home does not highlight the training run");
  assert(new RegExp(`data-live="1"><a href="/runs/${live}"`).test(home), "the training run is not marked in the recent list");
  const del = await app.request(`/api/runs/${a}`, { method: "DELETE" });
  assert(del.status === 200 && !fs.existsSync(path.join(dataDir, "runs", a)), `delete gave ${del.status}`);
  const refused = await app.request(`/api/runs/${live}`, { method: "DELETE" });
  assert(refused.status === 409 && fs.existsSync(path.join(dataDir, "runs", live)), `deleting a running run gave ${refused.status}`);
  trainer.kill("SIGKILL");
  await trainer.status;
  await service.stop();
});
