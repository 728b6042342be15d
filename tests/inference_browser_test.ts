/** The playground in a real browser: chat with the demo model, streamed text, side by side, stop and clear. */
import { browserTest } from "./_browser.ts";
import { assert } from "./_assert.ts";
import { timeout } from "./_timeouts.ts";

browserTest("browser: chat with the demo model streams a reply; side by side answers in both columns", "chat", async (w, base) => {
  await w.page.goto(`${base}/inference`, { waitUntil: "networkidle0" });
  await w.page.waitForSelector('[data-island="Chat"][data-hydrated="1"]');
  // Count how the reply grows: more than one update means it streamed.
  await w.page.evaluate(() => {
    (globalThis as unknown as { lengths: number[] }).lengths = [];
    new MutationObserver(() => {
      const t = document.querySelector('[data-chat-column="0"] [data-role="assistant"]')?.textContent ?? "";
      (globalThis as unknown as { lengths: number[] }).lengths.push(t.length);
    }).observe(document.body, { subtree: true, characterData: true, childList: true });
  });
  await w.page.type("#chat-input", "Reverse these words: cat dog");
  await w.page.click('[data-chat="send"]');
  await w.page.waitForFunction(() => (document.querySelector('[data-chat-stats="0"]')?.textContent ?? "").includes("tokens/s"), { timeout: timeout(120_000) });
  const lengths = await w.page.evaluate(() => new Set((globalThis as unknown as { lengths: number[] }).lengths).size);
  assert(lengths > 2, `the reply did not stream (${lengths} distinct lengths)`);
  await w.page.click('input[type="checkbox"]');
  await w.page.type("#chat-input", "Again?");
  await w.page.click('[data-chat="send"]');
  await w.page.waitForFunction(() => (document.querySelector('[data-chat-stats="1"]')?.textContent ?? "").includes("tokens/s"), { timeout: timeout(120_000) });
  const both = await w.page.$$eval('[data-role="assistant"]', (els) => els.length);
  assert(both >= 2, "no side-by-side reply");
  await w.screenshot("chat");
});
