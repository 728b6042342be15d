/**
 * Every page of the app at a phone width (390 px) and a laptop width (1280 px): nothing scrolls
 * sideways and no button is cut off (outside the window, clipped by a box around it, or its label
 * overflowing it). Two real runs (a full fine-tune and a LoRA one) give the pages their content; the
 * same server then checks the runs comparison (legends by name, settings diff, eval loss) and the
 * playground's models table (live "Loaded", no adapter for a full fine-tune, final not listed twice).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { Page } from "puppeteer-core";
import { clickNow, launch, watchedPage } from "./_browser.ts";
import { withServer } from "./_server.ts";
import { assert } from "./_assert.ts";
import { TIMEOUTS, waitFor } from "./_timeouts.ts";

const WIDTHS = [390, 1280];

/** What is wrong with the layout of the page as shown now (empty when nothing is). Runs in the page. */
function layoutProblems(): string[] {
  const vw = document.documentElement.clientWidth;
  const out: string[] = [];
  const name = (e: Element) => {
    const text = (e.textContent ?? "").trim().replace(/\s+/g, " ").slice(0, 40);
    return `<${e.tagName.toLowerCase()}${e.id ? `#${e.id}` : ""}${e.className && typeof e.className === "string" ? `.${e.className.trim().split(/\s+/).join(".")}` : ""}>${
      text ? ` "${text}"` : ""
    }`;
  };
  if (document.documentElement.scrollWidth > vw + 1) {
    const wide = [...document.querySelectorAll("body *")].filter((e) => {
      const r = e.getBoundingClientRect();
      return r.width > 0 && r.right > vw + 1 && e.checkVisibility();
    });
    // The innermost ones are the cause; their ancestors only contain them.
    const leaves = wide.filter((e) => !wide.some((o) => o !== e && e.contains(o))).slice(0, 5);
    out.push(`the page scrolls sideways (${document.documentElement.scrollWidth} px in a ${vw} px window) because of ${leaves.map(name).join(", ")}`);
  }
  for (const b of document.querySelectorAll("button, a.button, input[type=submit], input[type=button], summary")) {
    if (!b.checkVisibility({ visibilityProperty: true } as CheckVisibilityOptions)) continue;
    const r = b.getBoundingClientRect();
    if (!r.width || !r.height) continue;
    if (r.left < -0.5 || r.right > vw + 0.5) out.push(`${name(b)} reaches outside the window (${Math.round(r.left)}–${Math.round(r.right)} of ${vw} px)`);
    if (b.tagName !== "SUMMARY" && b.scrollWidth > b.clientWidth + 1) out.push(`${name(b)}: its label overflows it (${b.scrollWidth} > ${b.clientWidth} px)`);
    for (let p = b.parentElement; p && p !== document.body; p = p.parentElement) {
      const cs = getComputedStyle(p);
      if (cs.overflowX === "visible" && cs.overflowY === "visible") continue;
      const pr = p.getBoundingClientRect();
      if (r.left < pr.left - 0.5 || r.right > pr.right + 0.5 || r.top < pr.top - 0.5 || r.bottom > pr.bottom + 0.5) {
        out.push(`${name(b)} is clipped by ${name(p).slice(0, 60)} (overflow ${cs.overflowX}/${cs.overflowY})`);
      }
    }
  }
  return out;
}

async function settle(page: Page) {
  await page.waitForFunction(() => document.readyState === "complete" && !document.querySelector('[data-island]:not([data-hydrated="1"])'));
  // Charts size themselves to their box on the next frames.
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
}

async function post(base: string, url: string, body: unknown): Promise<Record<string, unknown>> {
  const r = await fetch(`${base}${url}`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const text = await r.text();
  assert(r.ok, `POST ${url} gave ${r.status}: ${text}`);
  return JSON.parse(text);
}

const RUN = { model: "demo", dataset: { path: "sample", validation: 0.1 }, maxSteps: 4, batchSize: 2, maxLength: 48, evalEvery: 2, saveEvery: 2, warmupSteps: 1 };

Deno.test({
  name: "browser layout: every page at 390 and 1280 px has no sideways scroll and no clipped button; runs comparison and playground models table",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () =>
    withServer(async (base) => {
      const full = String((await post(base, "/api/runs", { ...RUN, name: "alpha-full", method: "full", learningRate: 0.01 })).id);
      const lora = String((await post(base, "/api/runs", { ...RUN, name: "beta-lora", method: "lora", learningRate: 0.005 })).id);
      await waitFor(
        "both runs to complete",
        async () => {
          const runs = (await (await fetch(`${base}/api/runs`)).json()).runs as { id: string; state: string }[];
          const failed = runs.find((r) => r.state === "failed" || r.state === "aborted");
          if (failed) throw new Error(`run ${failed.id} ended ${failed.state}`);
          return runs.filter((r) => r.state === "completed").length === 2;
        },
        TIMEOUTS.training,
        500,
      );

      const browser = await launch();
      try {
        const w = await watchedPage(browser, fs.mkdtempSync(path.join(Deno.env.get("TMPDIR") ?? "/tmp", "gt-layout-")));
        const pages: [string, string, ((p: Page) => Promise<void>)?][] = [
          ["home", "/"],
          ["create", "/create"],
          // The device choice after the probe: the reasons each unavailable device gives.
          ["devices", "/create", async (p) => {
            await clickNow(p, '#device-choice button[hx-get^="/create/devices"]');
            await p.waitForFunction(() => !document.querySelector('#device-choice button[hx-get^="/create/devices"]'), { timeout: TIMEOUTS.process });
          }],
          ["dashboard", `/runs/${full}`],
          ["runs", `/runs?compare=${full}&compare=${lora}`],
          ["playground", "/inference"],
          ["import", "/import"],
          ["hub", "/hub"],
        ];
        const found: string[] = [];
        for (const width of WIDTHS) {
          await w.page.setViewport({ width, height: 900 });
          for (const [label, url, act] of pages) {
            await w.page.goto(`${base}${url}`, { waitUntil: "load" });
            await settle(w.page);
            if (act) await act(w.page);
            await settle(w.page);
            const problems = await w.page.evaluate(layoutProblems);
            await w.screenshot(`${label}-${width}`);
            found.push(...problems.map((p) => `${label} at ${width} px: ${p}`));
          }
        }
        assert(found.length === 0, `layout problems:\n${found.join("\n")}`);

        // The comparison: legends by run name, train and eval loss, the settings that differ.
        await w.page.goto(`${base}/runs?compare=${full}&compare=${lora}`, { waitUntil: "load" });
        await settle(w.page);
        const cmp = await w.page.$eval("[data-settings-diff]", (t) => ({
          heads: [...t.querySelectorAll("thead th")].map((e) => e.textContent),
          diff: [...t.querySelectorAll("tr[data-diff]")].map((e) => e.getAttribute("data-diff")),
          evals: [...t.querySelectorAll("td[data-eval-loss]")].map((e) => Number(e.textContent)),
        }));
        assert(cmp.heads.includes("alpha-full") && cmp.heads.includes("beta-lora"), `comparison headings ${cmp.heads}`);
        assert(cmp.diff.includes("method") && cmp.diff.includes("learningRate") && !cmp.diff.includes("maxSteps"), `settings diff ${cmp.diff}`);
        assert(cmp.evals.length === 2 && cmp.evals.every((x) => Number.isFinite(x) && x > 0), `eval losses ${cmp.evals}`);
        const island = await w.page.$eval('[data-island="MetricsChart"]', (e) => JSON.parse(e.getAttribute("data-props")!));
        assert(island.labels[full] === "alpha-full" && island.tags.includes("eval/loss"), `chart props ${JSON.stringify(island)}`);

        // The playground's models table.
        await w.page.goto(`${base}/inference`, { waitUntil: "load" });
        await settle(w.page);
        const rows = await w.page.$$eval("#models tr[data-model]", (trs) =>
          trs.map((tr) => ({ id: tr.getAttribute("data-model")!, loaded: tr.querySelector("[data-loaded]")!.getAttribute("data-loaded"), text: tr.textContent ?? "" })));
        const ids = rows.map((r) =>
          r.id
        );
        assert(ids.includes(`${full}/final`) && ids.includes(`${full}/checkpoint-2`) && !ids.includes(`${full}/checkpoint-4`), `final and its checkpoint listed twice: ${ids}`);
        assert(!rows.find((r) => r.id === `${full}/final`)!.text.includes("Adapter (zip)"), "a full fine-tune is offered as an adapter");
        assert(rows.find((r) => r.id === `${lora}/final`)!.text.includes("Adapter (zip)"), "the LoRA run has no adapter download");
        assert(rows.find((r) => r.id === "demo")!.loaded === "no", "the demo model is loaded before any chat");
        // A chat (here through the API, as another client would) loads the model; the open page shows it without a reload.
        await w.page.evaluate(() => ((globalThis as unknown as { marker: number }).marker = 1));
        await post(base, "/v1/chat/completions", { model: "demo", messages: [{ role: "user", content: "hi" }], max_tokens: 2 });
        await w.page.waitForSelector('#models tr[data-model="demo"] [data-loaded="yes"]', { timeout: TIMEOUTS.request });
        assert(await w.page.evaluate(() => (globalThis as unknown as { marker?: number }).marker === 1), "the page was reloaded");
        if (w.problems.length) throw new Error(`browser problems:\n${w.problems.join("\n")}`);
      } finally {
        await browser.close();
      }
    }),
});
