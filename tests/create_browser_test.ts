/**
 * The create workflow in a real browser: fill the form with the demo model and the sample dataset,
 * see the preview with highlighted trained tokens, start, land on the dashboard of the new run.
 */
import { browserTest, clickNow } from "./_browser.ts";
import { assert } from "./_assert.ts";
import { timeout } from "./_timeouts.ts";

browserTest("browser: create a run from the form and land on its dashboard", "create", async (w, base) => {
  await w.page.goto(`${base}/create?preset=quick-lora`, { waitUntil: "domcontentloaded" });
  await w.page.waitForSelector('#preview [data-preview="ok"] .tok.trained', { timeout: timeout(120_000) });
  const trained = await w.page.$$eval(".tok.trained", (els) => els.length);
  assert(trained > 0, "no trained tokens highlighted");
  await w.page.waitForSelector("#check [data-memory]", { timeout: timeout(60_000) });
  // Edit a field: an invalid value shows its message next to the field.
  await w.page.$eval("#f-batchSize", (e) => ((e as HTMLInputElement).value = "0"));
  await w.page.$eval("#f-batchSize", (e) => e.dispatchEvent(new Event("change", { bubbles: true })));
  await w.page.waitForFunction(() => (document.querySelector("#err-batchSize")?.textContent ?? "").length > 0, { timeout: timeout(30_000) });
  await w.page.$eval("#f-batchSize", (e) => ((e as HTMLInputElement).value = "4"));
  await w.page.$eval("#f-maxSteps", (e) => ((e as HTMLInputElement).value = "12"));
  await w.page.$eval("#f-name", (e) => ((e as HTMLInputElement).value = "from-the-form"));
  await w.page.$eval("#f-batchSize", (e) => e.dispatchEvent(new Event("change", { bubbles: true })));
  await w.page.waitForFunction(() => (document.querySelector("#err-batchSize")?.textContent ?? "") === "", { timeout: timeout(30_000) });
  await w.screenshot("create-filled");
  await Promise.all([w.page.waitForNavigation({ timeout: timeout(60_000) }), clickNow(w.page, "#start")]);
  assert(/\/runs\/from-the-form-/.test(w.page.url()), `did not land on the dashboard: ${w.page.url()}`);
  await w.page.waitForSelector('[data-state="completed"]', { timeout: timeout(240_000) });
  await w.screenshot("create-run-completed");
});
