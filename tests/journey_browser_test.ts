/**
 * The whole journey in a real browser, as a person clicks it: welcome → create (demo model, sample
 * dataset) → dashboard trains live → abort with confirmation → aborted → resume → completes →
 * "Try it" opens the playground. Screenshots of each view go to a folder under the temp dir; any
 * console error or failed request fails the test.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { clickNow, launch, watchedPage } from "./_browser.ts";
import { withServer } from "./_server.ts";
import { assert } from "./_assert.ts";
import { timeout } from "./_timeouts.ts";

const SHOTS = fs.mkdtempSync(path.join(Deno.env.get("TMPDIR") ?? "/tmp", "gt-journey-"));

Deno.test({
  name: "browser journey: create → train → abort (confirmed) → resume → complete → try it",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    await withServer(async (base) => {
      const browser = await launch();
      try {
        const w = await watchedPage(browser, SHOTS);
        const dialogs: string[] = [];
        w.page.on("dialog", async (d) => {
          dialogs.push(d.message());
          await d.accept();
        });
        await w.page.goto(base + "/", { waitUntil: "networkidle0" });
        await w.screenshot("01-welcome");
        await Promise.all([w.page.waitForNavigation(), w.page.click('a[href="/create"].button')]);
        await w.page.waitForSelector('#preview [data-preview="ok"]', { timeout: timeout(120_000) });
        await w.page.$eval("#f-name", (e) => ((e as HTMLInputElement).value = "journey"));
        // Long enough to be still training when the abort is clicked (after the first checkpoint, step 10),
        // short enough that the resumed run completes within the wait below on a loaded machine (~1 s a step).
        await w.page.$eval("#f-maxSteps", (e) => ((e as HTMLInputElement).value = "150"));
        await w.page.$eval("#f-saveEvery", (e) => ((e as HTMLInputElement).value = "10"));
        await w.page.$eval("#f-evalEvery", (e) => ((e as HTMLInputElement).value = "20"));
        // The Quick demo preset trains on the whole sample (validation 0); evaluation needs a split.
        await w.page.$eval("#f-validation", (e) => ((e as HTMLInputElement).value = "0.1"));
        await w.page.$eval("#f-batchSize", (e) => e.dispatchEvent(new Event("change", { bubbles: true })));
        await w.screenshot("02-create");
        await Promise.all([w.page.waitForNavigation({ timeout: timeout(60_000) }), clickNow(w.page, "#start")]);
        assert(w.page.url().includes("/runs/journey-"), `not on the dashboard: ${w.page.url()}`);

        // Training: KPIs change, the chart draws, logs stream.
        await w.page.waitForSelector('[data-kpi="step"]', { timeout: timeout(120_000) });
        const s1 = await w.page.$eval('[data-kpi="step"]', (e) => e.textContent);
        await w.page.waitForFunction((s) => document.querySelector('[data-kpi="step"]')?.textContent !== s, { timeout: timeout(60_000) }, s1);
        await w.page.waitForFunction(() => (document.querySelector("#log-stdout")?.textContent ?? "").includes("step "), { timeout: timeout(60_000) });
        // Wait for a checkpoint so the abort has something to keep.
        await w.page.waitForFunction(() => (document.querySelector("#log-stdout")?.textContent ?? "").includes("Saved"), { timeout: timeout(120_000) });
        await w.screenshot("03-training");

        // The confirmed abort reloads the page (HX-Refresh) once the run has stopped.
        await Promise.all([w.page.waitForNavigation({ timeout: timeout(90_000) }), clickNow(w.page, "#run-abort")]);
        await w.page.waitForSelector('[data-state="aborted"]', { timeout: timeout(60_000) });
        assert(dialogs.some((d) => /Abort this run/.test(d)), `no confirmation was asked: ${dialogs}`);
        await w.screenshot("04-aborted");

        await Promise.all([w.page.waitForNavigation({ timeout: timeout(60_000) }), clickNow(w.page, "#control button.primary")]);
        await w.page.waitForSelector('[data-state="training"], [data-state="initializing"], [data-state="completed"]', { timeout: timeout(60_000) });
        await w.page.waitForSelector('[data-state="completed"]', { timeout: timeout(400_000) });
        await w.screenshot("05-completed");

        await Promise.all([w.page.waitForNavigation(), clickNow(w.page, "#control a.button.primary")]);
        assert(w.page.url().includes("/inference"), `"Try it" went to ${w.page.url()}`);
        // Chat with the tuned model: the reply streams in and its stats appear.
        await w.page.waitForSelector('[data-island="Chat"][data-hydrated="1"]', { timeout: timeout(30_000) });
        await w.page.type("#chat-input", "What is the capital of Canada?");
        await w.page.click('[data-chat="send"]');
        await w.page.waitForFunction(() => (document.querySelector('[data-chat-stats="0"]')?.textContent ?? "").includes("tokens/s"), { timeout: timeout(120_000) });
        const reply = await w.page.$eval('[data-chat-column="0"] [data-role="assistant"]', (e) => e.textContent ?? "");
        assert(reply.length > 0, "the chat reply is empty");
        await w.screenshot("06-playground");
        assert(w.problems.length === 0, `browser problems:\n${w.problems.join("\n")}`);
        for (const s of ["01-welcome", "03-training", "05-completed"]) assert(fs.existsSync(path.join(SHOTS, `${s}.png`)), `missing ${s}`);
      } finally {
        await browser.close();
      }
    });
  },
});
