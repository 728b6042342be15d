/**
 * The Hub page against the stand-in Hub (tests/_hub.ts, via HF_ENDPOINT): list files, download in the
 * background to completion (polled), the model then in the create form's list; cancel mid-file leaves
 * no partial file and no snapshot; gated, unknown, not-a-Gemma and disk-full refusals are 4xx fragments
 * in plain words; the token never comes back in any answer.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { createApp } from "../routes/app.tsx";
import { loadAppSettings } from "../config/app.ts";
import { TrainingService } from "../trainer/service.ts";
import { GOOD_TOKEN, startFakeHub } from "./_hub.ts";
import { assert, assertEquals } from "./_assert.ts";
import { TIMEOUTS, waitFor } from "./_timeouts.ts";

const HX = { "HX-Request": "true", "HX-CSRF": "1" };

/** Every file under `dir`, relative, links included. */
function tree(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return (fs.readdirSync(dir, { recursive: true }) as string[]).sort();
}

Deno.test({
  name: "Hub page: list, background download with progress, create form lists it; cancel, gated, unknown, not Gemma, disk full",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  const hub = await startFakeHub();
  const dataDir = fs.mkdtempSync("/tmp/gt-hubroute-");
  const cache = fs.mkdtempSync("/tmp/gt-hubroute-cache-");
  const saved = Object.fromEntries(["HF_ENDPOINT", "HF_HUB_CACHE", "HF_HOME", "HF_TOKEN"].map((k) => [k, Deno.env.get(k)]));
  Deno.env.set("HF_ENDPOINT", hub.url);
  Deno.env.set("HF_HUB_CACHE", cache);
  Deno.env.set("HF_HOME", path.join(dataDir, "hf-home"));
  Deno.env.delete("HF_TOKEN");
  const service = new TrainingService(dataDir, { intervalMs: 0 });
  let free = Number.MAX_SAFE_INTEGER;
  try {
    const app = createApp({ settings: loadAppSettings({ host: "127.0.0.1", port: 0, data: dataDir }), service, probeDevices: () => Promise.resolve([]), hubFreeBytes: () => free });
    const post = async (url: string, body: Record<string, string>) => {
      const r = await app.request(url, { method: "POST", body: new URLSearchParams(body), headers: HX });
      // Entities decoded, so messages read as written (the attributes checked below hold none).
      const html = (await r.text()).replaceAll("&quot;", '"').replaceAll("&#39;", "'").replaceAll("&amp;", "&");
      return { status: r.status, html };
    };
    const job = async (id: string) => (await app.request(`/hub/jobs/${id}`, { headers: HX })).text();
    const jobId = (html: string) => /hx-get="\/hub\/jobs\/([0-9a-f-]+)"/.exec(html)?.[1];

    // The page, and the way to it from the create view and the nav.
    const pageHtml = await (await app.request("/hub")).text();
    assert(pageHtml.includes('id="hub-form"') && pageHtml.includes('data-error-target="#hub-error"') && pageHtml.includes('type="password"'), "the Hub form");
    const create0 = await (await app.request("/create")).text();
    assert(create0.includes('href="/hub"') && create0.includes("Download from the Hub…"), "the create view links to the Hub page");
    assert(!create0.includes(hub.sha.slice(0, 7)), "nothing downloaded yet");

    // List files: names, sizes, what is left, the free space; the safetensors weights but no other formats.
    const plan = await post("/hub/plan", { repo: "google/tiny-gemma", revision: "", token: "" });
    assertEquals(plan.status, 200, plan.html);
    for (const f of hub.files) assert(plan.html.includes(`<code>${f.path}</code>`), `plan lists ${f.path}: ${plan.html}`);
    assert(plan.html.includes(hub.sha.slice(0, 7)) && plan.html.includes('id="hub-free"') && plan.html.includes('hx-post="/hub/download"'), plan.html);

    // Refusals, each a 4xx fragment in words (the error rule shows it beside the form).
    const unknown = await post("/hub/plan", { repo: "google/no-such-model" });
    assert(unknown.status === 404 && unknown.html.includes('No model "google/no-such-model"') && unknown.html.includes("check the spelling"), `${unknown.status} ${unknown.html}`);
    const badName = await post("/hub/plan", { repo: "gemma" });
    assert(badName.status === 404 && badName.html.includes("ORG/NAME"), `${badName.status} ${badName.html}`);
    const llama = await post("/hub/plan", { repo: "org/tiny-llama" });
    assert(llama.status === 422 && llama.html.includes("not a Gemma model"), `${llama.status} ${llama.html}`);
    const gated = await post("/hub/plan", { repo: "google/gated-gemma" });
    assert(
      gated.status === 403 && /accept the licen[cs]e/.test(gated.html) && gated.html.includes("Token field") && gated.html.includes("Access Tokens"),
      `${gated.status} ${gated.html}`,
    );
    const wrong = await post("/hub/plan", { repo: "google/gated-gemma", token: "hf_not_the_right_one" });
    assert(wrong.status === 403 && wrong.html.includes("has not been accepted for this account") && !wrong.html.includes("hf_not_the_right_one"), `${wrong.status} ${wrong.html}`);
    const allowed = await post("/hub/plan", { repo: "google/gated-gemma", token: GOOD_TOKEN });
    assert(allowed.status === 200 && allowed.html.includes("gated") && !allowed.html.includes(GOOD_TOKEN), `${allowed.status} ${allowed.html}`);
    free = 1024;
    const full = await post("/hub/download", { repo: "google/tiny-gemma" });
    assert(full.status === 400 && full.html.includes("is free: free some space"), `${full.status} ${full.html}`);
    assertEquals(tree(cache), [], "refusals write nothing into the cache");
    free = Number.MAX_SAFE_INTEGER;

    // Cancel while a file is half-fetched: the download answers at once (not awaited), progress shows
    // the file, and after Cancel neither the partial file nor a snapshot is left.
    const weights = hub.files.reduce((a, b) => (b.data.length > a.data.length ? b : a));
    hub.stallOnce = { file: weights.path, bytes: weights.data.length >> 1 };
    const started = await post("/hub/download", { repo: "google/tiny-gemma" });
    const id = jobId(started.html);
    assert(started.status === 200 && id && started.html.includes('hx-trigger="every 1s"'), started.html);
    const blobs = path.join(cache, "models--google--tiny-gemma", "blobs");
    await waitFor("the weights file half-written", () => fs.existsSync(blobs) && fs.readdirSync(blobs).some((n) => n.endsWith(".incomplete")), TIMEOUTS.request);
    const mid = await job(id!);
    assert(mid.includes(`<code>${weights.path}</code>`) && mid.includes("%)") && mid.includes("Cancel"), mid);
    await post(`/hub/jobs/${id}/cancel`, {});
    await waitFor("the download cancelled", async () => (await job(id!)).includes('data-state="cancelled"'), TIMEOUTS.request);
    const after = tree(path.join(cache, "models--google--tiny-gemma"));
    assert(!after.some((n) => n.endsWith(".incomplete") || n.startsWith("snapshots")), `nothing half-written: ${after}`);
    assert(!(await (await app.request("/create")).text()).includes(hub.sha.slice(0, 7)), "a cancelled download is not a model");

    // Download to completion, polled as the page does; then the create form offers it.
    const again = await post("/hub/download", { repo: "google/tiny-gemma", revision: "main" });
    const id2 = jobId(again.html);
    assert(again.status === 200 && id2, again.html);
    let last = "";
    await waitFor("the download done", async () => !(last = await job(id2!)).includes('data-state="running"'), TIMEOUTS.request);
    const snap = path.join(cache, "models--google--tiny-gemma", "snapshots", hub.sha);
    assert(last.includes('data-state="completed"') && last.includes(snap) && last.includes('value="100.0"') && !last.includes("hx-trigger"), last);
    for (const f of hub.files) assertEquals(fs.readFileSync(path.join(snap, f.path)).length, f.data.length, f.path);
    assertEquals(fs.readFileSync(path.join(cache, "models--google--tiny-gemma", "refs", "main"), "utf8"), hub.sha);
    const create = await (await app.request("/create")).text();
    assert(create.includes(`value="${snap}"`) && create.includes(`google/tiny-gemma (${hub.sha.slice(0, 7)})`), "the create form lists the downloaded model");

    // The gated one with the token typed in the form: downloads, and the token is in no answer.
    const g = await post("/hub/download", { repo: "google/gated-gemma", token: GOOD_TOKEN });
    assert(g.status === 200 && !g.html.includes(GOOD_TOKEN), g.html);
    await waitFor("the gated download done", async () => !(last = await job(jobId(g.html)!)).includes('data-state="running"'), TIMEOUTS.request);
    assert(last.includes('data-state="completed"') && !last.includes(GOOD_TOKEN), last);
    const missing = await app.request("/hub/jobs/nope", { headers: HX });
    assert(missing.status === 404 && (await missing.text()).includes("start it again"), "unknown job");
  } finally {
    for (const [k, v] of Object.entries(saved)) v === undefined ? Deno.env.delete(k) : Deno.env.set(k, v);
    await service.stop();
    await hub.close();
  }
});
