/**
 * The app in a real browser (puppeteer-core + Debian's chromium): every view without console errors,
 * htmx loaded, islands hydrated; then a run started through the API trains live on the dashboard
 * (KPIs change, the chart draws, logs stream) and completes.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { launch, watchedPage } from "./_browser.ts";
import { withServer } from "./_server.ts";

function assert(cond: unknown, msg: string) {
  if (!cond) throw new Error(msg);
}

const SHOTS = fs.mkdtempSync("/tmp/gt-shots-");

Deno.test({
  name: "browser: every view loads with htmx and no console errors; a run trains live on its dashboard",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    await withServer(async (base) => {
      const browser = await launch();
      try {
        const w = await watchedPage(browser, SHOTS);
        for (const [name, url] of [["home", "/"], ["create", "/create"], ["runs", "/runs"], ["inference", "/inference"]]) {
          await w.page.goto(base + url, { waitUntil: "networkidle0" });
          assert(await w.page.evaluate(() => typeof (globalThis as unknown as { htmx?: unknown }).htmx === "object"), `${url}: htmx did not load`);
          await w.screenshot(name);
        }
        // Keyboard: the skip link is the first focusable element.
        await w.page.keyboard.press("Tab");
        assert(await w.page.evaluate(() => document.activeElement?.classList.contains("skip")), "skip link is not first in tab order");

        const res = await fetch(`${base}/api/runs`, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ name: "browser-run", model: "demo", dataset: { path: "sample" }, maxSteps: 40, batchSize: 4, learningRate: 0.002, warmupSteps: 2, evalEvery: 20, saveEvery: 20 }),
        });
        const created = await res.text();
        assert(res.status === 201, `POST /api/runs gave ${res.status}: ${created}`);
        const { id } = JSON.parse(created);
        await w.page.goto(`${base}/runs/${id}`, { waitUntil: "domcontentloaded" });
        await w.page.waitForSelector('[data-island="LossChart"][data-hydrated="1"]', { timeout: 30_000 });
        // KPIs appear and change while it trains.
        await w.page.waitForSelector('[data-kpi="step"]', { timeout: 240_000 });
        const first = await w.page.$eval('[data-kpi="step"]', (e) => e.textContent);
        await w.page.waitForFunction((f) => document.querySelector('[data-kpi="step"]')?.textContent !== f, { timeout: 120_000 }, first);
        await w.screenshot("dashboard-training");
        await w.page.waitForSelector('[data-state="completed"]', { timeout: 300_000 });
        // The chart has drawn points and the logs streamed.
        await w.page.waitForFunction(() => (document.querySelector("#log-stdout")?.textContent ?? "").includes("step 40/40"), { timeout: 30_000 });
        const chartPixels = await w.page.$eval('[data-island="LossChart"] canvas', (c) => {
          const ctx = (c as HTMLCanvasElement).getContext("2d")!;
          const d = ctx.getImageData(0, 0, (c as HTMLCanvasElement).width, (c as HTMLCanvasElement).height).data;
          let n = 0;
          for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
          return n;
        });
        assert(chartPixels > 500, `the loss chart drew nothing (${chartPixels} pixels)`);
        await w.screenshot("dashboard-completed");
        assert(w.problems.length === 0, `browser problems:\n${w.problems.join("\n")}`);
        assert(fs.existsSync(path.join(SHOTS, "dashboard-completed.png")), "no screenshot");
      } finally {
        await browser.close();
      }
    });
  },
});
