/**
 * The Hub page in a browser, against the stand-in Hub (tests/_hub.ts via HF_ENDPOINT): from the create
 * view's "Download from the Hub…" link, an unknown repo's message beside the form (announced), then
 * List files → Download → the progress fragment polls to "Downloaded", and the create view lists it.
 */
import * as fs from "node:fs";
import { browserTest, clickNow } from "./_browser.ts";
import { startFakeHub } from "./_hub.ts";
import { assert } from "./_assert.ts";
import { timeout } from "./_timeouts.ts";

const WAIT = timeout(60_000);

browserTest("browser: Hub page lists a repo's files, downloads it with progress, the create view lists it; an unknown repo is explained", "hub", async (w, base) => {
  const { page } = w;
  const hub = await startFakeHub();
  const saved = Object.fromEntries(["HF_ENDPOINT", "HF_HUB_CACHE", "HF_TOKEN"].map((k) => [k, Deno.env.get(k)]));
  Deno.env.set("HF_ENDPOINT", hub.url);
  Deno.env.set("HF_HUB_CACHE", fs.mkdtempSync("/tmp/gt-hubbrowser-cache-"));
  Deno.env.delete("HF_TOKEN");
  try {
    await page.goto(`${base}/create`, { waitUntil: "domcontentloaded" });
    await Promise.all([page.waitForNavigation({ waitUntil: "domcontentloaded" }), clickNow(page, 'a[href="/hub"]:not(nav a)')]);
    await page.waitForSelector("#hub-form");

    await page.type("#hub-repo", "google/no-such-model");
    await clickNow(page, '#hub-form button[type="submit"]');
    await page.waitForFunction(() => /No model "google\/no-such-model"/.test(document.querySelector("#hub-error")?.textContent ?? ""), { timeout: WAIT });
    assert(await page.$eval("#hub-error", (e) => e.getAttribute("role") === "alert"), "the error is announced");

    await page.$eval("#hub-repo", (e) => ((e as HTMLInputElement).value = ""));
    await page.type("#hub-repo", "google/tiny-gemma");
    await clickNow(page, '#hub-form button[type="submit"]');
    await page.waitForSelector("#hub-plan table.hub-files", { timeout: WAIT });
    assert(await page.$eval("#hub-error", (e) => e.textContent === ""), "a later request clears the old error");
    await w.screenshot("plan");
    await clickNow(page, '#hub-plan button[hx-post="/hub/download"]');
    await page.waitForSelector('#hub-job[data-state="completed"]', { timeout: WAIT });
    const done = await page.$eval("#hub-job", (e) => e.textContent ?? "");
    assert(done.includes("Downloaded google/tiny-gemma") && done.includes(hub.sha), done);
    await w.screenshot("done");

    await clickNow(page, '#hub-job a[href="/create"]');
    await page.waitForSelector("#f-model");
    const options = await page.$$eval("#f-model option", (os) => os.map((o) => o.textContent ?? ""));
    assert(options.some((o) => o.startsWith("google/tiny-gemma (")), `create view models: ${options}`);
  } finally {
    for (const [k, v] of Object.entries(saved)) v === undefined ? Deno.env.delete(k) : Deno.env.set(k, v);
    await hub.close();
  }
});
