/**
 * The app in process (`app.request`, no socket): the fragments' 286 contract (a finished run's
 * panels answer 286 so htmx stops polling; a live run's answer 200) and the one error path.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { Hono } from "hono";
import { createApp, errorStatus } from "./app.tsx";
import { loadAppSettings } from "../config/app.ts";
import { ServiceError, TrainingService } from "../trainer/service.ts";
import { createRun, writeStatus } from "../trainer/run_dir.ts";
import { parseRunConfig } from "../config/training.ts";
import { z } from "zod";
import { assert } from "../tests/_assert.ts";

Deno.test("fragments: 286 for a finished run (htmx stops polling), 200 while it trains; 404 for an unknown run", async () => {
  const dataDir = fs.mkdtempSync("/tmp/gt-app-");
  const service = new TrainingService(dataDir, { intervalMs: 0 });
  const app = createApp({ settings: loadAppSettings({ host: "127.0.0.1", port: 0, data: dataDir }), service });
  // The live run's trainer: a stand-in with "train" on its command line (the service checks that a pid is a trainer).
  const trainer = new Deno.Command("/bin/sh", { args: ["-c", "sleep 60; :", "sh", "train"], stdout: "null", stderr: "null" }).spawn();
  try {
    const mk = (name: string, state: "completed" | "training") => {
      const dir = createRun(parseRunConfig({ name, dataset: { path: "sample" }, maxSteps: 3 }), dataDir);
      writeStatus(dir, { state, message: state, step: 1, totalSteps: 3, epoch: 0, pid: trainer.pid });
      return path.basename(dir);
    };
    const done = mk("done", "completed"), live = mk("live", "training");
    const hx = { headers: { "HX-Request": "true" } };
    for (const panel of ["control", "kpi"]) {
      const a = await app.request(`/runs/${done}/fragments/${panel}`, hx);
      assert(a.status === 286, `${panel} of a completed run: ${a.status}`);
      assert(!(await a.text()).includes("<html"), `${panel}: a fragment, not a page`);
      const b = await app.request(`/runs/${live}/fragments/${panel}`, hx);
      assert(b.status === 200, `${panel} of a training run: ${b.status}`);
      await b.body?.cancel();
    }
    const missing = await app.request(`/api/runs/nope-1`);
    assert(missing.status === 404 && (await missing.json()).error.includes("nope-1"), "unknown run over the API");
    const page = await app.request(`/runs/nope-1`);
    assert(page.status === 404, `unknown run page: ${page.status}`);
    await page.body?.cancel();
  } finally {
    trainer.kill("SIGKILL");
    await trainer.status;
    await service.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
});

Deno.test("errors: one mapping; expected errors keep their status and message, a TypeError is a logged 500", async () => {
  assert(errorStatus(new ServiceError(409, "busy")).status === 409, "ServiceError");
  assert(errorStatus(new RangeError("no such file")).status === 400, "RangeError");
  assert(errorStatus(new SyntaxError("bad json")).status === 400, "SyntaxError");
  const zod = z.object({ a: z.number() }).safeParse({ a: "x" });
  assert(!zod.success && errorStatus(zod.error).status === 400 && errorStatus(zod.error).message.startsWith("a:"), "ZodError");
  const bug = errorStatus(new TypeError("x is undefined"));
  assert(bug.status === 500 && !bug.message.includes("undefined"), `TypeError gave ${JSON.stringify(bug)}`);

  // Through the app: a route module's throw reaches the one onError (the details go to the log only).
  const dataDir = fs.mkdtempSync("/tmp/gt-app-");
  const service = new TrainingService(dataDir, { intervalMs: 0 });
  const app = createApp({ settings: loadAppSettings({ host: "127.0.0.1", port: 0, data: dataDir }), service });
  const logged: unknown[] = [];
  const error = console.error;
  console.error = (...a: unknown[]) => logged.push(a);
  try {
    const sub = new Hono();
    sub.get("/api/boom", () => {
      throw new TypeError("secret detail");
    });
    app.route("/", sub);
    const r = await app.request("/api/boom");
    const body = await r.json();
    assert(r.status === 500 && !JSON.stringify(body).includes("secret"), `boom: ${r.status} ${JSON.stringify(body)}`);
    assert(logged.length === 1 && String(logged[0]).includes("/api/boom"), "the 500 was not logged");
    const bad = await app.request("/api/runs", { method: "POST", body: "{", headers: { "Content-Type": "application/json" } });
    assert(bad.status === 400 && (await bad.json()).error.includes("not valid JSON"), "bad JSON body");
  } finally {
    console.error = error;
    await service.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
});
