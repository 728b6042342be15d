/**
 * Puppeteer helper for browser tests: Debian's chromium with the flags this machine needs, a page that
 * records console errors and failed requests, and screenshots into a test folder.
 */
import puppeteer, { type Browser, type Page } from "puppeteer-core";
import * as fs from "node:fs";
import * as path from "node:path";
import { withServer } from "./_server.ts";
import type { AppSettings } from "../config/app.ts";
import { TIMEOUTS } from "./_timeouts.ts";

export const CHROMIUM = "/usr/bin/chromium";

export async function launch(): Promise<Browser> {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`Browser tests need Debian's chromium at ${CHROMIUM} (apt-get install -y chromium)`);
  return await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    // A protocol call (e.g. a waitForSelector) may legitimately last as long as the longest wait of a
    // test: a training run reaching a state. Puppeteer's default of 180 s cut such waits short.
    protocolTimeout: TIMEOUTS.training + TIMEOUTS.request,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--no-first-run",
      "--disable-sync",
      "--disable-dev-shm-usage",
      `--user-data-dir=${fs.mkdtempSync("/tmp/gt-chrome-")}`,
    ],
  });
}

/**
 * Click or focus the element `selector` names inside one page task: finding it and acting on it
 * cannot be split by a polling htmx swap. Puppeteer's `page.click` finds the node, then scrolls and
 * clicks it in later protocol calls, and `page.focus` finds and focuses in two; when #control is
 * re-rendered between them they fail with "Node is detached from document" or act on a detached node.
 * Waits for the element first; a confirm() a click opens is answered by the page's dialog handler.
 */
async function actNow(page: Page, selector: string, action: "click" | "focus"): Promise<void> {
  await page.waitForSelector(selector);
  const done = await page.evaluate(
    (s, a) => {
      const el = document.querySelector(s);
      if (!(el instanceof HTMLElement)) return false;
      if (a === "click") {
        el.click();
        return true;
      }
      el.focus();
      return document.activeElement === el;
    },
    selector,
    action,
  ).catch((e: Error) => {
    // A click that navigated at once took its page task with it: the click happened.
    if (action === "click" && /Execution context was destroyed|Target closed/.test(e.message)) return true;
    throw e;
  });
  if (!done) throw new Error(`${action}Now: ${selector} is not on the page${action === "focus" ? " or cannot take focus" : ""}`);
}

/** Click `selector` inside one page task (see actNow). */
export function clickNow(page: Page, selector: string): Promise<void> {
  return actNow(page, selector, "click");
}

/** Focus `selector` inside one page task (see actNow). */
export function focusNow(page: Page, selector: string): Promise<void> {
  return actNow(page, selector, "focus");
}

/**
 * Wait until the text of `selector` passes `test` (a regular expression), and fail naming `what` and
 * the last text seen. For panels that poll on their own: after one panel shows a state, another
 * panel's next answer (within its poll interval) carries it, so read it by waiting, never at once.
 */
export async function waitForText(page: Page, selector: string, test: RegExp, what: string, limitMs = TIMEOUTS.request): Promise<string> {
  try {
    await page.waitForFunction(
      (s, src, flags) => new RegExp(src, flags).test(document.querySelector(s)?.textContent ?? ""),
      { timeout: limitMs },
      selector,
      test.source,
      test.flags,
    );
  } catch (e) {
    if (!(e instanceof Error) || e.name !== "TimeoutError") throw e;
    const last = await page.$eval(selector, (el) => el.textContent ?? "").catch(() => "(not on the page)");
    throw new Error(`${what}: ${selector} is "${last}" after ${limitMs} ms, expected ${test}`);
  }
  return await page.$eval(selector, (el) => el.textContent ?? "");
}

export interface WatchedPage {
  page: Page;
  /** Console errors, page errors and failed requests seen so far. */
  problems: string[];
  screenshot(name: string): Promise<string>;
}

export async function watchedPage(browser: Browser, shotDir: string): Promise<WatchedPage> {
  const page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 900 });
  // Navigations and waits without their own limit get the scaled one (puppeteer's 30 s default is too
  // short for a loaded 2-core machine).
  page.setDefaultTimeout(TIMEOUTS.browser);
  page.setDefaultNavigationTimeout(TIMEOUTS.browser);
  const problems: string[] = [];
  page.on("console", (m) => {
    // A 4xx answer to an htmx request is shown on the page (islands/_errors.ts), not a fault; Chromium
    // still logs it. Other 4xx responses are caught by the response hook below.
    if (m.type() === "error" && !/the server responded with a status of 4\d\d/.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`pageerror: ${(e as Error).message}`));
  page.on("requestfailed", (r) => {
    // An EventSource or fetch aborted by navigation is not a failure of the app.
    const why = r.failure()?.errorText ?? "";
    if (why !== "net::ERR_ABORTED") problems.push(`requestfailed: ${r.url()} ${why}`);
  });
  page.on("response", (r) => {
    const htmx = r.request().headers()["hx-request"] === "true";
    if (r.status() >= 500 || (r.status() >= 400 && !htmx)) problems.push(`HTTP ${r.status()}: ${r.url()}`);
  });
  fs.mkdirSync(shotDir, { recursive: true });
  return {
    page,
    problems,
    async screenshot(name: string) {
      const file = path.join(shotDir, `${name}.png`);
      await page.screenshot({ path: file as `${string}.png`, fullPage: true });
      return file;
    },
  };
}

/**
 * A browser test against a fresh server: `body` gets a watched page and the base URL; the test fails
 * on any console error or failed request seen by the end, and the browser is always closed.
 */
export function browserTest(
  name: string,
  shotPrefix: string,
  body: (w: WatchedPage, base: string, dataDir: string) => Promise<void>,
  opts: { settings?: Partial<AppSettings> } = {},
): void {
  Deno.test({
    name,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: () =>
      withServer(async (base, dataDir) => {
        const browser = await launch();
        try {
          const w = await watchedPage(browser, fs.mkdtempSync(`/tmp/gt-shots-${shotPrefix}-`));
          await body(w, base, dataDir);
          if (w.problems.length) throw new Error(`browser problems:\n${w.problems.join("\n")}`);
        } finally {
          await browser.close();
        }
      }, { settings: opts.settings }),
  });
}
