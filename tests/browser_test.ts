/**
 * The app shell in a real browser (puppeteer-core + Debian's chromium): every view loads without
 * console errors or failed requests, htmx is loaded, islands hydrate, keyboard focus starts at the
 * skip link, and the layout holds on a narrow window. (Training live on the dashboard:
 * dashboard_browser_test.ts; the whole journey: journey_browser_test.ts.)
 */
import { browserTest } from "./_browser.ts";
import { assert } from "./_assert.ts";

browserTest("browser: every view loads with htmx and no console errors, at 1280 px and on a narrow window", "views", async (w, base) => {
  for (const width of [1280, 390]) {
    await w.page.setViewport({ width, height: 900 });
    for (const [name, url] of [["home", "/"], ["create", "/create"], ["runs", "/runs"], ["inference", "/inference"]]) {
      await w.page.goto(base + url, { waitUntil: "networkidle0" });
      assert(await w.page.evaluate(() => typeof (globalThis as unknown as { htmx?: unknown }).htmx === "object"), `${url}: htmx did not load`);
      const overflow = await w.page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
      assert(overflow <= 1, `${url} at ${width}px scrolls sideways by ${overflow}px`);
      await w.screenshot(`${name}-${width}`);
    }
  }
  await w.page.waitForSelector('[data-island="Chat"][data-hydrated="1"]');
  await w.page.keyboard.press("Tab");
  assert(await w.page.evaluate(() => document.activeElement?.classList.contains("skip")), "the skip link is not first in tab order");
});
