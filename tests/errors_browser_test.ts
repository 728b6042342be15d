/**
 * Server-side errors reach the page (islands/_errors.ts): each 4xx a person can cause on the create
 * page and from a button shows beside the field or button it concerns, in an element screen readers
 * announce (role="alert"). Before the rule, htmx dropped every one of these silently.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { Page } from "puppeteer-core";
import { browserTest, clickNow } from "./_browser.ts";
import { createRun, writeStatus } from "../trainer/run_dir.ts";
import { parseRunConfig } from "../config/training.ts";
import { assert } from "./_assert.ts";
import { timeout } from "./_timeouts.ts";

const WAIT = timeout(60_000);

/** Waits until the element at `sel` shows text matching `re`, and says whether it is announced. */
async function shown(page: Page, sel: string, re: RegExp): Promise<{ text: string; announced: boolean }> {
  await page.waitForFunction((s, src) => new RegExp(src).test(document.querySelector(s)?.textContent ?? ""), { timeout: WAIT }, sel, re.source);
  return await page.$eval(sel, (e) => ({
    text: e.textContent ?? "",
    announced: e.closest('[role="alert"], [aria-live]') !== null || e.querySelector('[role="alert"]') !== null,
  }));
}

async function upload(page: Page, name: string, bytes: number) {
  const file = path.join(fs.mkdtempSync("/tmp/gt-upload-"), name);
  fs.writeFileSync(file, '{"text": "hello"}\n'.repeat(Math.ceil(bytes / 18)));
  const input = await page.$("#f-upload");
  await (input as unknown as { uploadFile(f: string): Promise<void> }).uploadFile(file);
  await clickNow(page, 'button[form="upload-form"]');
}

browserTest("browser: upload and start errors show beside their field, announced", "errors", async (w, base) => {
  const { page } = w;
  await page.goto(`${base}/create`, { waitUntil: "domcontentloaded" });
  await page.waitForSelector('#preview [data-preview="ok"]', { timeout: WAIT });

  // No file chosen: 400 "Choose a file to upload" under the Upload button.
  await clickNow(page, 'button[form="upload-form"]');
  let r = await shown(page, "#upload-result", /Choose a file to upload/);
  assert(r.announced, "the no-file message is not announced");

  // Wrong kind of file: 400 naming the file.
  await upload(page, "notes.txt", 20);
  r = await shown(page, "#upload-result", /"notes\.txt" is not a JSONL, JSON, CSV or Parquet file/);
  assert(r.announced, "the wrong-kind message is not announced");

  // Over the size limit (8 KB in this server): 413 naming the limit and what to do instead.
  await upload(page, "big.jsonl", 200_000);
  r = await shown(page, "#upload-result", /limit/);
  assert(/8\.0 KB|8 KB/.test(r.text) && /local path/.test(r.text), `the size message does not name the limit and the way out: ${r.text}`);
  await w.screenshot("upload-too-big");

  // A dataset that does not exist: Start refuses (422); the message is beside the dataset field and the button.
  await page.$eval("#f-dataset_path", (e) => ((e as HTMLInputElement).value = "/nonexistent/data.jsonl"));
  await clickNow(page, "#start");
  r = await shown(page, "#err-dataset_path", /does not exist/);
  assert(r.announced, "the dataset message is not announced");
  r = await shown(page, "#start-result", /Not started: .*does not exist/);
  assert(page.url().endsWith("/create"), `the page moved on: ${page.url()}`);
  await w.screenshot("start-missing-dataset");
}, { settings: { maxUploadBytes: 8 * 1024 } });

browserTest("browser: a refused button action (JSON error from the API) shows beside the button", "errors-api", async (w, base, dataDir) => {
  const dir = createRun(parseRunConfig({ name: "gone", dataset: { path: "sample" }, maxSteps: 3 }), dataDir);
  writeStatus(dir, { state: "completed", message: "completed", step: 3, totalSteps: 3, epoch: 0, pid: 0 });
  const id = path.basename(dir);
  const { page } = w;
  page.on("dialog", (d) => void d.accept());
  await page.goto(`${base}/runs`, { waitUntil: "domcontentloaded" });
  // Deleted elsewhere (another tab, the CLI) after this page loaded: the button's DELETE gets a 404.
  const del = await fetch(`${base}/api/runs/${id}`, { method: "DELETE" });
  assert(del.status === 200, `setup delete gave ${del.status}`);
  await clickNow(page, `tr[data-run="${id}"] button.danger`);
  const r = await shown(page, `tr[data-run="${id}"] [data-error-slot]`, /gone|not found|No run/i);
  assert(r.announced, "the refusal is not announced");
  await w.screenshot("delete-refused");
});

browserTest("browser: a check sent before Start and answered after it does not undo Start's refusal", "errors-order", async (w, base) => {
  const { page } = w;
  await page.goto(`${base}/create`, { waitUntil: "domcontentloaded" });
  await page.waitForSelector("#check [data-memory]", { timeout: WAIT });
  await page.evaluate(() => {
    const g = globalThis as unknown as { checksEnded: number };
    g.checksEnded = 0;
    document.addEventListener("htmx:afterRequest", (e) => {
      if ((e as CustomEvent<{ elt: Element }>).detail.elt.matches("[data-superseded-by]")) g.checksEnded++;
    });
  });
  // Hold the next check at the browser's edge: it was sent with the settings before the bad path.
  await page.setRequestInterception(true);
  let held: { continue(): Promise<void> } | undefined;
  const heldNow = new Promise<void>((resolve) => {
    page.on("request", (req) => {
      if (!held && req.url().endsWith("/create/fragments/check")) {
        held = req;
        resolve();
      } else void req.continue().catch(() => {});
    });
  });
  await page.$eval("#f-name", (e) => {
    (e as HTMLInputElement).value = "order-test";
    e.dispatchEvent(new Event("change", { bubbles: true }));
  });
  await heldNow;
  await page.$eval("#f-dataset_path", (e) => ((e as HTMLInputElement).value = "/nonexistent/data.jsonl"));
  await clickNow(page, "#start");
  await shown(page, "#start-result", /Not started: .*does not exist/);
  await held!.continue(); // answered now, after Start: it must not swap in
  await page.waitForFunction(() => (globalThis as unknown as { checksEnded: number }).checksEnded >= 1, { timeout: WAIT });
  const r = await page.$eval("#err-dataset_path", (e) => ({ text: e.textContent ?? "", role: e.getAttribute("role") }));
  assert(/does not exist/.test(r.text) && r.role === "alert", `the late check undid Start's message: ${JSON.stringify(r)}`);
  await w.screenshot("late-check-kept-refusal");
});
