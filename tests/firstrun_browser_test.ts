/**
 * The first run as a newcomer meets it (issue #17), in a real browser on a fresh data dir:
 * - the create form: the active preset marked and described, a preset keeping the model, name and
 *   dataset, LoRA fields hidden for full fine-tuning, Steps/Epochs enabling only one field, human
 *   validation messages, Start disabled (and saying why) while a setting needs fixing, help under
 *   every number field;
 * - the dashboard: a progress bar, chart titles in words, the state said once, step and loss above
 *   the fold at 390 px, one memory figure, "Aborted at step N" with no time left, a completed run's
 *   training time and export buttons;
 * - a queued run has no duration (runs page, home, dashboard), and the live one does.
 */
import type { Page } from "puppeteer-core";
import { browserTest, clickNow, focusNow } from "./_browser.ts";
import { assert } from "./_assert.ts";
import { TIMEOUTS, waitFor } from "./_timeouts.ts";

const text = (page: Page, sel: string) => page.$eval(sel, (e) => (e.textContent ?? "").replace(/\s+/g, " ").trim());
const visible = (page: Page, sel: string) => page.$eval(sel, (e) => e.checkVisibility());
const setValue = async (page: Page, sel: string, v: string) => {
  await page.$eval(sel, (e, x) => {
    (e as HTMLInputElement).value = x;
    e.dispatchEvent(new Event("change", { bubbles: true }));
  }, v);
};

browserTest(
  "browser first run: the create form's presets, help, hidden LoRA fields, one length field, human messages and a Start that waits for valid settings",
  "firstrun-create",
  async (w, base) => {
    const { page } = w;
    await page.goto(`${base}/create`, { waitUntil: "domcontentloaded" });
    await page.waitForSelector('#preview [data-preview="ok"]', { timeout: TIMEOUTS.process });
    // A fresh data dir opens on the Quick demo, marked and described.
    assert(await page.$eval('a[data-preset="quick-demo"]', (a) => a.getAttribute("aria-current")) === "true", "the Quick demo preset is not marked as chosen");
    assert(/^Quick demo: .*demo model/.test(await text(page, "[data-preset-note]")), `preset description: ${await text(page, "[data-preset-note]")}`);
    // Help under every number field, tied to it for screen readers.
    const unhelped = await page.$$eval("#create-form input[type=number]", (inputs) =>
      inputs.filter((i) => {
        const id = (i.getAttribute("aria-describedby") ?? "").split(" ").find((x) => x.startsWith("hint-"));
        return !id || !(document.getElementById(id)?.textContent ?? "").trim();
      }).map((i) => i.id));
    assert(unhelped.length === 0, `number fields without help: ${unhelped}`);

    // The Quick demo is full fine-tuning: no LoRA fields; LoRA shows them.
    assert(await page.$eval('input[name="method"][value="full"]', (e) => (e as HTMLInputElement).checked), "the Quick demo is not full fine-tuning");
    for (const sel of ["#f-lora_r", 'input[name="lora_rslora"]', 'input[name="lora_targets"]', 'select[name="base_precision"]']) {
      assert(!(await visible(page, sel)), `${sel} is shown for full fine-tuning`);
    }
    await page.click('input[name="method"][value="lora"]');
    assert(await visible(page, "#f-lora_r") && await visible(page, 'input[name="lora_targets"]'), "LoRA fields hidden for LoRA");

    // Steps or epochs: only the chosen field can be filled.
    const disabled = (sel: string) => page.$eval(sel, (e) => (e as HTMLInputElement).disabled);
    assert(!(await disabled("#f-maxSteps")) && await disabled("#f-epochs"), "with Steps chosen, Epochs is not the disabled one");
    await page.click('input[name="until"][value="epochs"]');
    assert(await disabled("#f-maxSteps") && !(await disabled("#f-epochs")), "with Epochs chosen, Max steps is still enabled");
    await page.click('input[name="until"][value="steps"]');

    // A bad value: a human message beside the field, and Start disabled with the reason beside it.
    await setValue(page, "#f-batchSize", "0");
    await page.waitForFunction(() => document.querySelector("#err-batchSize")?.textContent === "must be 1 or more", { timeout: TIMEOUTS.request });
    await page.waitForSelector("#start:disabled", { timeout: TIMEOUTS.request });
    assert(/Fix the setting marked above/.test(await text(page, "#start-why")), `Start's reason: ${await text(page, "#start-why")}`);
    await setValue(page, "#f-learningRate", "-1");
    await page.waitForFunction(() => document.querySelector("#err-learningRate")?.textContent === "must be greater than 0", { timeout: TIMEOUTS.request });
    await page.waitForFunction(() => /Fix the 2 settings/.test(document.querySelector("#start-why")?.textContent ?? ""), { timeout: TIMEOUTS.request });
    await w.screenshot("create-blocked");
    await setValue(page, "#f-batchSize", "4");
    await setValue(page, "#f-learningRate", "0.01");
    await page.waitForSelector("#start:not(:disabled)", { timeout: TIMEOUTS.request });
    assert(await text(page, "#err-batchSize") === "" && await text(page, "#start-why") === "", "the messages stayed after the fix");

    // Another preset keeps the run name and dataset, and is then the marked one.
    await page.$eval("#f-name", (e) => ((e as HTMLInputElement).value = "my-first"));
    await page.$eval("#f-dataset_path", (e) => ((e as HTMLInputElement).value = "/tmp/my-data.jsonl"));
    await Promise.all([page.waitForNavigation(), clickNow(page, 'a[data-preset="balanced-lora"]')]);
    assert(await page.$eval("#f-name", (e) => (e as HTMLInputElement).value) === "my-first", "the preset dropped the run name");
    assert(await page.$eval("#f-dataset_path", (e) => (e as HTMLInputElement).value) === "/tmp/my-data.jsonl", "the preset dropped the dataset");
    assert(await page.$eval('a[data-preset="balanced-lora"]', (a) => a.getAttribute("aria-current")) === "true", "the chosen preset is not marked");
    assert(await page.$eval('a[data-preset="quick-demo"]', (a) => a.getAttribute("aria-current")) === null, "two presets marked");
    // Balanced (LoRA) trains by epochs: Max steps is the disabled field from the first paint.
    assert(await disabled("#f-maxSteps") && !(await disabled("#f-epochs")), "an epochs preset leaves Max steps enabled");
    await w.screenshot("create-preset-kept");
  },
);

async function post(base: string, url: string, body?: unknown): Promise<Record<string, unknown>> {
  const r = await fetch(`${base}${url}`, { method: "POST", headers: { "Content-Type": "application/json" }, body: body === undefined ? undefined : JSON.stringify(body) });
  const t = await r.text();
  assert(r.ok, `POST ${url} gave ${r.status}: ${t}`);
  return t ? JSON.parse(t) : {};
}

async function state(base: string, id: string): Promise<{ state: string; step: number }> {
  const r = await (await fetch(`${base}/api/runs/${encodeURIComponent(id)}`)).json();
  return { state: r.status?.state ?? r.state, step: r.status?.step ?? r.step };
}

const RUN = { model: "demo", dataset: { path: "sample", validation: 0 }, method: "full", batchSize: 2, maxLength: 48, evalEvery: 0, learningRate: 0.01, warmupSteps: 1 };

browserTest(
  "browser first run: dashboard progress, chart titles, 390 px fold, one memory figure, aborted and completed wording; a queued run has no duration",
  "firstrun-dash",
  async (w, base) => {
    const { page } = w;
    const long = String((await post(base, "/api/runs", { ...RUN, name: "long", maxSteps: 400, saveEvery: 0 })).id);
    const queued = String((await post(base, "/api/runs", { ...RUN, name: "next", maxSteps: 3, saveEvery: 3 })).id);

    // A phone: the state, the progress bar, step and loss are all in the first screen.
    await page.setViewport({ width: 390, height: 844 });
    await page.goto(`${base}/runs/${long}`, { waitUntil: "domcontentloaded" });
    await page.waitForFunction(() => Number(document.querySelector("[data-kpi=step]")?.textContent?.split("/")[0]) >= 2, { timeout: TIMEOUTS.training });
    await page.reload({ waitUntil: "domcontentloaded" });
    await page.waitForSelector("[data-kpi=loss]");
    const fold = await page.evaluate(() =>
      ["[data-kpi=step]", "[data-kpi=loss]", "progress[data-progress]"].map((s) => {
        const r = document.querySelector(s)!.getBoundingClientRect();
        return { s, bottom: r.bottom, height: r.height };
      })
    );
    for (const f of fold) assert(f.height > 0 && f.bottom <= 844, `${f.s} is below the fold at 390 px (bottom ${Math.round(f.bottom)} px)`);
    await w.screenshot("dash-390");
    const control = await text(page, "#control [role=status]");
    assert(/^Training/.test(control) && !/^Training: Training/.test(control), `the control panel says "${control}"`);
    assert(Number(await page.$eval("progress[data-progress]", (e) => (e as HTMLProgressElement).value)) >= 2, "the progress bar does not move");
    assert(/Step \d+ of 400 · \d+%/.test(await text(page, ".run-progress")), `progress words: ${await text(page, ".run-progress")}`);
    assert(/^\d+s$|^\d+m \d+s$/.test(await text(page, "[data-kpi=elapsed]")), `training time "${await text(page, "[data-kpi=elapsed]")}"`);
    assert(/^about /.test(await text(page, "[data-kpi=eta]")), `time left "${await text(page, "[data-kpi=eta]")}"`);

    // A laptop: chart titles in words, in the page's text.
    await page.setViewport({ width: 1280, height: 900 });
    const titles = await page.$$eval(".chart-title", (els) => els.map((e) => e.textContent));
    assert(["Loss", "Learning rate", "Gradient norm", "Tokens per second"].every((t) => titles.includes(t)), `chart titles ${titles}`);
    // One memory figure: what the trainer uses, no second estimate beside it.
    const memory = await page.$$eval(".kpi dt", (dts) => dts.map((d) => d.textContent ?? "").filter((t) => /memory/i.test(t)));
    assert(memory.length === 1 && memory[0] === "Memory", `memory figures: ${memory}`);
    assert(/ in use$/.test(await text(page, "[data-kpi=memory]")), `memory "${await text(page, "[data-kpi=memory]")}"`);

    // Keyboard focus on Abort survives the control panel's polling swaps (htmx refocuses by id). The long
    // run is still training here (the abort below requires it), so Abort is on the page for two polls.
    await focusNow(page, "#run-abort");
    for (let i = 0; i < 2; i++) await page.waitForResponse((r) => r.url().includes("/fragments/control"), { timeout: TIMEOUTS.process });
    const focused = await page.evaluate(() => document.activeElement?.id ?? "");
    assert(focused === "run-abort", `focus moved off Abort after two polls of #control: "${focused}"`);

    // The queued run: no duration on the runs page, home or its dashboard; the live one has one.
    assert((await state(base, queued)).state === "queued", "the second run is not queued");
    await page.goto(`${base}/runs`, { waitUntil: "domcontentloaded" });
    assert(await text(page, `tr[data-run="${queued}"] [data-duration]`) === "–", `the queued run's duration: ${await text(page, `tr[data-run="${queued}"] [data-duration]`)}`);
    assert(/\d+s$/.test(await text(page, `tr[data-run="${long}"] [data-duration]`)), "the training run has no duration");
    await page.goto(`${base}/`, { waitUntil: "domcontentloaded" });
    const homeQueued = await page.$eval(`li:has(a[href="/runs/${queued}"])`, (li) => ({ t: li.textContent ?? "", d: !!li.querySelector("[data-duration]") }));
    assert(/waiting to start/.test(homeQueued.t) && !homeQueued.d, `home lists the queued run as "${homeQueued.t}"`);
    assert(
      await page.$eval(`li:has(a[href="/runs/${long}"])`, (li) => !!li.querySelector("[data-duration]") && li.getAttribute("data-live") === "1"),
      "home: the live run has no duration or is not marked",
    );
    await page.goto(`${base}/runs/${queued}`, { waitUntil: "domcontentloaded" });
    assert(!(await page.$("[data-kpi=elapsed]")) && /Queued \(position 1\)/.test(await text(page, "#control")), "the queued run's dashboard shows a duration");

    // Abort: "Aborted at step N", no time left.
    await post(base, `/api/runs/${long}/abort`);
    const aborted = await waitFor(
      "the long run to stop",
      async () => {
        const s = await state(base, long);
        return s.state === "aborted" ? s : null;
      },
      TIMEOUTS.process,
      200,
    ) as { state: string; step: number };
    await page.goto(`${base}/runs/${long}`, { waitUntil: "domcontentloaded" });
    await page.waitForSelector('[data-state="aborted"]');
    // Stopped in time, the worker says only the step; killed after the grace period, the reason follows once.
    const said = await text(page, "#control [role=status]");
    assert(new RegExp(`^Aborted at step ${aborted.step}( \\((?!Aborted).+\\))?$`).test(said), `the control panel says "${said}"`);
    assert(!(await page.$("[data-kpi=eta]")) && !/ETA|done/.test(await text(page, "#kpi")), "a stopped run shows a time left");
    await w.screenshot("dash-aborted");

    // The queued run starts after it and completes: its training time, the export buttons, no time left.
    await page.goto(`${base}/runs/${queued}`, { waitUntil: "domcontentloaded" });
    await page.waitForSelector('[data-state="completed"]', { timeout: TIMEOUTS.training });
    await page.waitForSelector("[data-kpi=step]");
    assert(/^Completed 3 steps in (\d+m )?\d+s\./.test(await text(page, "#control [role=status]")), `completed: "${await text(page, "#control [role=status]")}"`);
    assert(
      await page.$('#control a.button[href^="/exports?model="]') && await page.$('#control a.button.primary[href^="/inference?model="]'),
      "no Try it or Export on a completed run",
    );
    // #kpi polls apart from #control: its next answer (within a second) is the completed run's.
    await page.waitForFunction(() => !document.querySelector("[data-kpi=eta]"), { timeout: TIMEOUTS.request })
      .catch(() => {
        throw new Error("a completed run shows a time left");
      });
    await w.screenshot("dash-completed");
  },
);
