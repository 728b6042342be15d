/**
 * The Gemma 4 journey in a real browser: a tiny random Gemma 4 (init-model "tiny-4": per-layer
 * embeddings, KV sharing, double-wide MLP) sits in a Hugging Face cache; the create form lists it,
 * shows its model info and the Gemma 4 chat rendering of the sample; a LoRA run started from the form
 * completes on the dashboard; "Try it" opens the playground, where the tuned model answers. Any console
 * error or failed request fails the test.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { clickNow, launch, watchedPage } from "./_browser.ts";
import { withServer } from "./_server.ts";
import { assert } from "./_assert.ts";
import { timeout } from "./_timeouts.ts";
import { initModel } from "../engine/init_model.ts";

const SHOTS = fs.mkdtempSync(path.join(Deno.env.get("TMPDIR") ?? "/tmp", "gt-journey4-"));

Deno.test({
  name: "browser journey, Gemma 4: HF-cache model in the create form → LoRA run completes → chat in the playground",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const hub = fs.mkdtempSync("/tmp/gt-hub4-");
    const dir = path.join(hub, "models--google--gemma-4-tiny", "snapshots", "0123456789abcdef");
    await initModel({ preset: "tiny-4", out: dir, seed: 11 });
    const before = Deno.env.get("HF_HUB_CACHE");
    Deno.env.set("HF_HUB_CACHE", hub);
    try {
      await withServer(async (base) => {
        const browser = await launch();
        try {
          const w = await watchedPage(browser, SHOTS);
          await w.page.goto(base + "/create", { waitUntil: "load", timeout: timeout(180_000) });
          await w.page.waitForSelector('#preview [data-preview="ok"]', { timeout: timeout(180_000) });
          // The cached Gemma 4 is listed; choosing it shows its model info and a Gemma 4 preview.
          const value = await w.page.$$eval("#f-model option", (os) => os.map((o) => [(o as HTMLOptionElement).value, o.textContent ?? ""]));
          const listed = value.find(([, label]) => label.includes("google/gemma-4-tiny"));
          assert(listed && listed[0] === dir, `the HF-cache model is not listed: ${JSON.stringify(value)}`);
          await w.page.select("#f-model", dir);
          await w.page.waitForFunction(() => (document.querySelector("#check")?.textContent ?? "").includes("Gemma4ForCausalLM"), { timeout: timeout(120_000) });
          const info = await w.page.$eval("#check", (e) => e.textContent ?? "");
          assert(/KV-shared/.test(info), `no KV-sharing note in the model info: ${info.slice(0, 600)}`);
          // The preview re-renders with the chosen model's tokenizer: Gemma 4 turns.
          await w.page.$eval("#f-format", (e) => e.dispatchEvent(new Event("change", { bubbles: true })));
          await w.page.waitForFunction(() => (document.querySelector("#preview")?.textContent ?? "").includes("<|turn>user"), { timeout: timeout(120_000) });
          await w.page.$eval("#f-name", (e) => ((e as HTMLInputElement).value = "gemma4"));
          await w.page.$eval("#f-maxSteps", (e) => ((e as HTMLInputElement).value = "6"));
          await w.page.$eval("#f-saveEvery", (e) => ((e as HTMLInputElement).value = "3"));
          await w.page.$eval("#f-evalEvery", (e) => ((e as HTMLInputElement).value = "3"));
          await w.page.$eval("#f-validation", (e) => ((e as HTMLInputElement).value = "0.1"));
          await w.page.$eval("#f-batchSize", (e) => e.dispatchEvent(new Event("change", { bubbles: true })));
          await w.screenshot("01-create-gemma4");
          await Promise.all([w.page.waitForNavigation({ timeout: timeout(60_000) }), clickNow(w.page, "#start")]);
          assert(w.page.url().includes("/runs/gemma4-"), `not on the dashboard: ${w.page.url()}`);

          await w.page.waitForSelector('[data-state="completed"]', { timeout: timeout(600_000) });
          await w.screenshot("02-completed-gemma4");

          await Promise.all([w.page.waitForNavigation(), clickNow(w.page, "#control a.button.primary")]);
          assert(w.page.url().includes("/inference"), `"Try it" went to ${w.page.url()}`);
          await w.page.waitForSelector('[data-island="Chat"][data-hydrated="1"]', { timeout: timeout(30_000) });
          await w.page.type("#chat-input", "What is the capital of Canada?");
          await w.page.click('[data-chat="send"]');
          await w.page.waitForFunction(() => (document.querySelector('[data-chat-stats="0"]')?.textContent ?? "").includes("tokens/s"), { timeout: timeout(180_000) });
          const reply = await w.page.$eval('[data-chat-column="0"] [data-role="assistant"]', (e) => e.textContent ?? "");
          assert(reply.length > 0, "the chat reply is empty");
          await w.screenshot("03-playground-gemma4");
          assert(w.problems.length === 0, `browser problems:\n${w.problems.join("\n")}`);
        } finally {
          await browser.close();
        }
      });
    } finally {
      if (before === undefined) Deno.env.delete("HF_HUB_CACHE");
      else Deno.env.set("HF_HUB_CACHE", before);
      fs.rmSync(hub, { recursive: true, force: true });
    }
  },
});
