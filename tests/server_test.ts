/** Routes through app.request(): every view, security headers, token, cross-site guard, errors. */
import * as fs from "node:fs";
import { createApp } from "../routes/app.tsx";
import { loadAppSettings, platformDataDir, resolveDataDir } from "../config/app.ts";
import { TrainingService } from "../trainer/service.ts";
import { assert } from "./_assert.ts";

function app(token?: string) {
  const dataDir = fs.mkdtempSync("/tmp/gt-srv-");
  const service = new TrainingService(dataDir, { intervalMs: 0 });
  return createApp({ settings: loadAppSettings({ host: "127.0.0.1", port: 0, data: dataDir, token }), service });
}

const VIEWS = ["/", "/create", "/runs", "/inference"];

Deno.test("every view renders with navigation and security headers", async () => {
  const a = app();
  for (const v of VIEWS) {
    const r = await a.request(v);
    assert(r.status === 200, `${v}: status ${r.status}`);
    const html = await r.text();
    assert(html.startsWith("<!doctype html>"), `${v}: not a page`);
    assert(html.includes('href="/static/app.js"') || html.includes('src="/static/app.js"'), `${v}: no bundle`);
    assert(html.includes('aria-label="Main"'), `${v}: no navigation landmark`);
    assert(r.headers.get("Content-Security-Policy")?.includes("script-src 'self'"), `${v}: no CSP`);
    assert(r.headers.get("X-Content-Type-Options") === "nosniff", `${v}: no nosniff`);
  }
});

Deno.test("healthz answers JSON; unknown pages and API routes are 404", async () => {
  const a = app();
  const h = await a.request("/healthz");
  assert(h.status === 200 && (await h.json()).ok === true, "healthz");
  const p = await a.request("/nope");
  assert(p.status === 404 && (await p.text()).includes("Not found"), "page 404");
  const j = await a.request("/api/nope");
  assert(j.status === 404 && typeof (await j.json()).error === "string", "api 404");
});

Deno.test("static files are served from static/ only", async () => {
  const a = app();
  const css = await a.request("/static/app.css");
  assert(css.status === 200 && css.headers.get("Content-Type")?.startsWith("text/css"), "css");
  for (const bad of ["/static/..%2Fdeno.json", "/static/%2e%2e%2fmain.ts", "/static/.hidden.js", "/static/main.ts"]) {
    const r = await a.request(bad);
    assert(r.status === 404, `${bad} gave ${r.status}`);
  }
});

Deno.test("with a token, every kind of route requires it; login sets a cookie", async () => {
  const token = "s3cret-token-0123456789";
  const a = app(token);
  for (const p of ["/", "/runs", "/static/app.css", "/healthz", "/api/runs"]) {
    const r = await a.request(p);
    assert(r.status === 401, `${p} without token gave ${r.status}`);
    const ok = await a.request(p, { headers: { Authorization: `Bearer ${token}` } });
    assert(ok.status !== 401, `${p} with token gave 401`);
  }
  const bad = await a.request("/login?token=wrong");
  assert(bad.status === 401, "wrong login accepted");
  const login = await a.request(`/login?token=${token}`);
  assert(login.status === 303, `login status ${login.status}`);
  const cookie = login.headers.get("Set-Cookie")!.split(";")[0];
  assert(cookie && /HttpOnly/i.test(login.headers.get("Set-Cookie")!), "cookie not HttpOnly");
  const viaCookie = await a.request("/runs", { headers: { Cookie: cookie } });
  assert(viaCookie.status === 200, "cookie rejected");
});

Deno.test("cross-site state changes are refused", async () => {
  const a = app();
  const cross = await a.request("http://127.0.0.1/api/runs", { method: "POST", headers: { Origin: "http://evil.example", "Content-Type": "application/json" }, body: "{}" });
  assert(cross.status === 403, `foreign Origin gave ${cross.status}`);
  const site = await a.request("http://127.0.0.1/api/runs", { method: "POST", headers: { "Sec-Fetch-Site": "cross-site" }, body: "{}" });
  assert(site.status === 403, `Sec-Fetch-Site cross-site gave ${site.status}`);
  const form = await a.request("http://127.0.0.1/api/runs", { method: "POST", headers: { "Content-Type": "application/x-www-form-urlencoded" }, body: "a=1" });
  assert(form.status === 403, `plain form post gave ${form.status}`);
  const same = await a.request("http://127.0.0.1/api/nothing", { method: "POST", headers: { Origin: "http://127.0.0.1", "Content-Type": "application/json" }, body: "{}" });
  assert(same.status === 404, `same-origin post gave ${same.status}`);
});

Deno.test("data dir: --data beats $GEMMA_TUNER_HOME beats the platform default", () => {
  const saved = Deno.env.get("GEMMA_TUNER_HOME");
  try {
    Deno.env.set("GEMMA_TUNER_HOME", "/tmp/gt-home");
    assert(resolveDataDir("/tmp/flag") === "/tmp/flag", "flag");
    assert(resolveDataDir() === "/tmp/gt-home", "env");
    Deno.env.delete("GEMMA_TUNER_HOME");
    assert(resolveDataDir() === platformDataDir(), "default");
    assert(platformDataDir("darwin").includes("Library/Application Support"), "mac");
    assert(platformDataDir("linux").endsWith("gemma-tuner"), "linux");
  } finally {
    if (saved) Deno.env.set("GEMMA_TUNER_HOME", saved);
    else Deno.env.delete("GEMMA_TUNER_HOME");
  }
});

Deno.test("settings: a non-loopback host without a token is refused naming --token; short tokens too", () => {
  let msg = "";
  try {
    loadAppSettings({ host: "0.0.0.0", port: 8080, data: "/tmp/x" });
  } catch (e) {
    msg = (e as Error).message;
  }
  assert(msg.includes("--token"), `message: ${msg}`);
  msg = "";
  try {
    loadAppSettings({ host: "0.0.0.0", port: 8080, data: "/tmp/x", token: "short" });
  } catch (e) {
    msg = (e as Error).message;
  }
  assert(msg.includes("16"), `message: ${msg}`);
  loadAppSettings({ host: "0.0.0.0", port: 8080, data: "/tmp/x", token: "long-enough-token-123" });
});
