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

  // A message longer than the model's context: the server's reason shown, the text kept in the box.
  const long = "hello ".repeat(2100).trim();
  await w.page.evaluate((text) => {
    const box = document.querySelector("#chat-input") as HTMLTextAreaElement;
    box.value = text;
    box.dispatchEvent(new Event("input", { bubbles: true }));
  }, long);
  const before = await w.page.$$eval('[data-chat-column="0"] [data-role="user"]', (els) => els.length);
  await w.page.click('[data-chat="send"]');
  await w.page.waitForFunction(() => /context is \d+ tokens/.test(document.querySelector('[role="alert"]')?.textContent ?? ""), { timeout: timeout(120_000) });
  assert((await w.page.$eval("#chat-input", (el) => (el as HTMLTextAreaElement).value)) === long, "the refused message was not put back in the box");
  const after = await w.page.$$eval('[data-chat-column="0"] [data-role="user"]', (els) => els.length);
  assert(after === before, `the refused turn stayed in the conversation (${before} → ${after} user messages)`);
  // That 400 was the point; any other problem still fails the test.
  const expected = w.problems.findIndex((p) => /^HTTP 400: .*\/v1\/chat\/completions$/.test(p));
  assert(expected >= 0, `the refusal was not a 400: ${w.problems.join("; ")}`);
  w.problems.splice(expected, 1);
});
