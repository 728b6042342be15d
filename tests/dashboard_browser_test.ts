/**
 * The dashboard in a real browser: a run started through the API trains on the demo model while
 * the page polls; the KPI numbers change, the loss chart draws, logs stream, the run completes and
 * the panels stop polling (286). Any console error or failed request fails the test.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { clickNow, launch, waitForText, watchedPage } from "./_browser.ts";
import { withServer } from "./_server.ts";
import { assert } from "./_assert.ts";
import { timeout } from "./_timeouts.ts";

const SHOTS = fs.mkdtempSync(path.join(Deno.env.get("TMPDIR") ?? "/tmp", "gt-dashboard-"));

/** Pixels of the chart's first series colour (#2563eb) on the canvas labelled `label`. */
function linePixels(label: string): number {
  const canvas = document.querySelector(`canvas[aria-label="${label}"]`) as HTMLCanvasElement | null;
  if (!canvas || !canvas.width) return 0;
  const d = canvas.getContext("2d")!.getImageData(0, 0, canvas.width, canvas.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) if (Math.abs(d[i] - 37) < 40 && Math.abs(d[i + 1] - 99) < 40 && Math.abs(d[i + 2] - 235) < 40 && d[i + 3] > 100) n++;
  return n;
}

Deno.test({
  name: "browser dashboard: KPIs change, the loss chart draws, logs stream, the run completes and polling stops",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    await withServer(async (base) => {
      const res = await fetch(`${base}/api/runs`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({
          name: "dash",
          model: "demo",
          dataset: { path: "sample" },
          maxSteps: 40,
          batchSize: 4,
          maxLength: 64,
          evalEvery: 10,
          saveEvery: 20,
          learningRate: 0.005,
          warmupSteps: 1,
        }),
      });
      const body = await res.text();
      assert(res.status === 201, `POST /api/runs gave ${res.status}: ${body}`);
      const { id } = JSON.parse(body) as { id: string };

      const browser = await launch();
      try {
        const w = await watchedPage(browser, SHOTS);
        const polls: { url: string; status: number }[] = [];
        w.page.on("response", (r) => {
          if (r.url().includes("/fragments/")) polls.push({ url: r.url(), status: r.status() });
        });
        await w.page.goto(`${base}/runs/${id}`, { waitUntil: "domcontentloaded" });
        await w.page.waitForSelector('[data-kpi="step"]', { timeout: timeout(120_000) });
        const first = await w.page.$eval('[data-kpi="step"]', (e) => e.textContent);
        await w.page.waitForFunction((s) => document.querySelector('[data-kpi="step"]')?.textContent !== s, { timeout: timeout(60_000) }, first);
        const loss = await w.page.$eval('[data-kpi="loss"]', (e) => Number(e.textContent));
        assert(Number.isFinite(loss) && loss > 0, `loss KPI is "${loss}"`);
        await w.page.waitForFunction(linePixels, { timeout: timeout(30_000) }, "Loss");
        await w.page.waitForFunction(() => (document.querySelector("#log-stdout")?.textContent ?? "").includes("step "), { timeout: timeout(30_000) });
        await w.screenshot("training");

        await w.page.waitForSelector('[data-state="completed"]', { timeout: timeout(300_000) });
        // The chart keeps drawing after the run is over, and the logs caught up to the end.
        await w.page.waitForFunction(linePixels, { timeout: timeout(10_000) }, "Loss");
        // #kpi polls apart from #control: its next answer (within a second) is the completed run's.
        await waitForText(w.page, '[data-kpi="step"]', /^40\b/, "final step KPI", timeout(10_000));
        await w.page.waitForFunction(() => (document.querySelector("#log-stdout")?.textContent ?? "").includes("step 40"), { timeout: timeout(10_000) });
        const errors = await w.page.$eval("#log-errors", (e) => Number((e as HTMLElement).dataset.errors));
        assert(errors === 0, `${errors} error lines counted in a clean run`);
        assert(await w.page.$('#control a.button.primary[href^="/inference?model="]'), "no Try it link");
        await w.screenshot("completed");

        // Each panel got a 286 and then stopped asking.
        await new Promise((r) => setTimeout(r, 2500));
        for (const panel of ["control", "kpi", "logs"]) {
          const mine = polls.filter((p) => p.url.includes(`/fragments/${panel}`));
          const stop = mine.findIndex((p) => p.status === 286);
          assert(stop >= 0, `the ${panel} panel never got 286 (${mine.length} polls)`);
          assert(mine.length - stop <= 1, `the ${panel} panel kept polling after 286 (${mine.length - stop - 1} more)`);
        }

        // TensorBoard: not installed here, so the page says what to run.
        await clickNow(w.page, "#tensorboard button");
        await w.page.waitForSelector("[data-tensorboard]", { timeout: timeout(10_000) });
        const tb = await w.page.$eval("[data-tensorboard]", (e) => e.textContent ?? "");
        assert(/tensorboard --logdir/.test(tb) || /running/.test(tb), tb);
        assert(w.problems.length === 0, `browser problems:\n${w.problems.join("\n")}`);
      } finally {
        await browser.close();
      }
    });
  },
});
