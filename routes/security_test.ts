/** The host guard (DNS rebinding) and the cross-site guard, through the whole app. */
import * as fs from "node:fs";
import { createApp } from "./app.tsx";
import { isLoopbackHost } from "./security.ts";
import { loadAppSettings } from "../config/app.ts";
import { TrainingService } from "../trainer/service.ts";
import { assert } from "../tests/_assert.ts";

function app(token?: string) {
  const dataDir = fs.mkdtempSync("/tmp/gt-sec-");
  const service = new TrainingService(dataDir, { intervalMs: 0 });
  return createApp({ settings: loadAppSettings({ host: "127.0.0.1", port: 0, data: dataDir, token }), service });
}

Deno.test("isLoopbackHost: loopback names with or without a port, nothing else", () => {
  for (const ok of ["127.0.0.1", "127.0.0.1:8080", "localhost", "localhost:1", "LOCALHOST:8080", "[::1]", "[::1]:8080", "127.1.2.3:9"]) assert(isLoopbackHost(ok), `${ok} refused`);
  for (
    const bad of [
      "evil.example",
      "evil.example:8080",
      "localhost.evil.example",
      "127.0.0.1.nip.io",
      "0.0.0.0:8080",
      "[::]:8080",
      "",
      "localhost:8080:1",
      "192.168.1.2",
      "[::1]evil",
    ]
  ) {
    assert(!isLoopbackHost(bad), `${bad} accepted`);
  }
});

Deno.test("without a token, a rebound Host name is refused on every kind of route (421, says what to do)", async () => {
  const a = app();
  const form = new FormData();
  form.set("dataset_path", "/etc/hosts");
  const cases: [string, RequestInit][] = [
    ["/", {}],
    ["/api/runs", {}],
    ["/v1/models", {}],
    ["/healthz", {}],
    ["/api/runs", { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" }],
    ["/create/fragments/preview", { method: "POST", headers: { "HX-CSRF": "1" }, body: form }],
  ];
  for (const [p, init] of cases) {
    const headers = new Headers(init.headers);
    headers.set("Host", "evil.example:8080");
    const r = await a.request(`http://evil.example:8080${p}`, { ...init, headers });
    const text = await r.text();
    assert(r.status === 421, `${p}: status ${r.status}`);
    assert(text.includes("--token") && text.includes("evil.example"), `${p}: ${text}`);
  }
  const v1 = await a.request("http://evil.example/v1/models", { headers: { Host: "evil.example" } });
  assert((await v1.json()).error.code === "host_not_allowed", "v1 error shape");
  for (const h of ["127.0.0.1:8080", "localhost:8080", "[::1]:8080"]) {
    const r = await a.request(`http://${h}/api/runs`, { headers: { Host: h } });
    assert(r.status === 200, `${h}: status ${r.status}`);
  }
});

Deno.test("with a token, any Host name is served to a client that has the token", async () => {
  const token = "tok-0123456789abcdef";
  const a = app(token);
  const r = await a.request("http://tuner.lan:8080/api/runs", { headers: { Host: "tuner.lan:8080", Authorization: `Bearer ${token}` } });
  assert(r.status === 200, `status ${r.status}`);
  const none = await a.request("http://tuner.lan:8080/api/runs", { headers: { Host: "tuner.lan:8080" } });
  assert(none.status === 401, `no token: ${none.status}`);
});

Deno.test("posts without Origin in any form encoding need the app's header; JSON passes", async () => {
  const a = app();
  const multipart = new FormData();
  multipart.set("file", new File(["{}"], "x.jsonl"));
  const bodies: [string, BodyInit, Record<string, string>][] = [
    ["multipart", multipart, {}],
    ["urlencoded", "name=x", { "Content-Type": "application/x-www-form-urlencoded" }],
    ["text/plain", "name=x", { "Content-Type": "text/plain;charset=UTF-8" }],
  ];
  for (const [what, body, headers] of bodies) {
    const r = await a.request("http://127.0.0.1/create/upload", { method: "POST", body, headers });
    assert(r.status === 403, `${what} without Origin: ${r.status}`);
  }
  const ok = new FormData();
  ok.set("file", new File(['{"text":"hi"}\n'], "x.jsonl"));
  const withHeader = await a.request("http://127.0.0.1/create/upload", { method: "POST", body: ok, headers: { "HX-CSRF": "1" } });
  assert(withHeader.status === 200, `multipart with HX-CSRF: ${withHeader.status} ${await withHeader.text()}`);
  const json = await a.request("http://127.0.0.1/api/nothing", { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" });
  assert(json.status === 404, `JSON without Origin: ${json.status}`);
});
