/**
 * Builds the Hono app: middleware (token, cross-site guard, headers), static assets, and one sub-app
 * per view. Adding a view is one `app.route` line.
 */
import { devicesRoutes } from "./devices.tsx";
import { probeDevices } from "../engine/mod.ts";
import { Hono } from "hono";
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { ServiceError } from "../trainer/service.ts";
import { z } from "zod";
import * as path from "node:path";
import { VERSION } from "../config/app.ts";
import { crossSiteGuard, hostGuard, requireToken, securityHeaders } from "./security.ts";
import { homeRoutes } from "./home.tsx";
import { runsRoutes } from "./runs.tsx";
import { createRoutes } from "./create.tsx";
import { inferenceRoutes } from "./inference.tsx";
import { fragment, page } from "./_layout.tsx";
import { apiRoutes, MAX_JSON_BODY } from "./api.ts";
import { bodyLimit } from "hono/body-limit";
import type { MiddlewareHandler } from "hono";
import { dashboardRoutes } from "./dashboard.tsx";
import { metricsRoutes } from "./metrics.ts";
import { chatBodyTooLarge, MAX_CHAT_BODY, oaiError, openaiErrorShape, openaiRoutes } from "./openai.ts";
import { exportsRoutes } from "./exports.tsx";
import { handoffRoutes } from "./handoff.tsx";
import { hubRoutes } from "./hub.tsx";
import { type AppDeps, modelCacheFor } from "./deps.ts";

const STATIC_TYPES: Record<string, string> = {
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".map": "application/json",
};

const STATIC_NAME = /^[A-Za-z0-9_-][A-Za-z0-9_.-]*$/;

/** Files under static/ only; names are checked, so no path can leave the folder. */
async function serveStatic(name: string): Promise<Response | null> {
  if (!STATIC_NAME.test(name) || name.includes("..")) return null;
  const type = STATIC_TYPES[path.extname(name)];
  if (!type) return null;
  try {
    const data = await Deno.readFile(new URL(`../static/${name}`, import.meta.url));
    return new Response(data, { headers: { "Content-Type": type, "Cache-Control": "no-cache" } });
  } catch {
    return null;
  }
}

export function createApp(deps: AppDeps): Hono {
  deps.models ??= modelCacheFor(deps);
  const app = new Hono();
  // First, so it reshapes every /v1 error below it (guards, unknown routes, onError) for OpenAI clients.
  app.use("/v1/*", openaiErrorShape());
  app.use("*", securityHeaders());
  app.use("*", hostGuard(deps.settings.token));
  app.use("*", requireToken(deps.settings.token));
  app.use("*", crossSiteGuard());
  app.use("*", bodyLimits());

  app.get("/healthz", (c) => c.json({ ok: true, version: VERSION }));
  app.get("/static/:name", async (c) => (await serveStatic(c.req.param("name"))) ?? c.notFound());
  app.get("/favicon.ico", (c) => c.redirect("/static/favicon.svg", 301));

  app.route("/", homeRoutes(deps));
  app.route("/", runsRoutes(deps));
  app.route("/", createRoutes(deps));
  app.route("/", devicesRoutes(deps.probeDevices ?? probeDevices));
  app.route("/", inferenceRoutes(deps));
  app.route("/", dashboardRoutes(deps.service));
  app.route("/", apiRoutes(deps));
  app.route("/", metricsRoutes(deps.service));
  app.route("/", openaiRoutes(deps.models));
  app.route("/", exportsRoutes(deps));
  app.route("/", handoffRoutes(deps));
  app.route("/", hubRoutes(deps));

  app.notFound((c) => {
    if (c.req.path.startsWith("/api/") || c.req.path.startsWith("/v1/")) return c.json({ error: `No route for ${c.req.method} ${c.req.path}` }, 404);
    return page(c, "Not found", <NotFound path={c.req.path} />, 404);
  });
  // The one error handler: every route module throws and this answers (JSON for the APIs, a fragment
  // for htmx, a page otherwise).
  app.onError((err, c) => {
    const api = c.req.path.startsWith("/api/") || c.req.path.startsWith("/v1/");
    const { status, message } = errorStatus(err);
    if (status >= 500) console.error(`${c.req.method} ${c.req.path}:`, err);
    if (api) return c.json({ error: message }, status as 400);
    // An htmx request swaps the answer into the page (islands/_errors.ts): a fragment, not a whole page.
    if (c.req.header("HX-Request")) return fragment(c, <p class="field-error" role="alert">{message}</p>, status);
    return page(c, "Error", <ErrorPage status={status} message={message} />, status);
  });
  return app;
}

/** The largest form post (the create form's fields); an upload has its own limit (routes/_upload.ts). */
const MAX_FORM_BODY = 1024 * 1024;

/**
 * Every request body is bounded before a route reads it: 413 with the limit in the answer. The JSON
 * API and /v1 answer JSON (OpenAI's shape for /v1); the upload streams to disk under its own limit.
 */
function bodyLimits(): MiddlewareHandler {
  const api = bodyLimit({ maxSize: MAX_JSON_BODY, onError: (c) => c.json({ error: `Request body is over the limit of ${MAX_JSON_BODY} bytes (1 MiB)` }, 413) });
  const v1 = bodyLimit({ maxSize: MAX_CHAT_BODY, onError: (c) => oaiError(c, 413, chatBodyTooLarge()) });
  const form = bodyLimit({ maxSize: MAX_FORM_BODY, onError: (c) => c.json({ error: `Request body is over the limit of ${MAX_FORM_BODY} bytes (1 MiB)` }, 413) });
  return (c, next) => {
    if (c.req.method === "GET" || c.req.method === "HEAD") return next();
    if (c.req.path.startsWith("/api/")) return api(c, next);
    if (c.req.path.startsWith("/v1/")) return v1(c, next);
    if (c.req.path === "/create/upload") return next();
    return form(c, next);
  };
}

const UNEXPECTED = "Something went wrong on the server; the details are in the server log.";

/**
 * The status and message for an error a route threw. Expected errors carry their status
 * (ServiceError, HTTPException) or are bad input by type: a ZodError, and the engine's RangeError
 * (a value out of range: no such file, unknown preset) and SyntaxError (a file that cannot be
 * parsed), whose messages name the file and the fix. Anything else (a TypeError is a bug) is a 500
 * with the details in the server log, not in the answer.
 */
export function errorStatus(err: unknown): { status: ContentfulStatusCode; message: string } {
  if (err instanceof ServiceError) return { status: err.status, message: err.message };
  if (err instanceof HTTPException) return { status: err.status as ContentfulStatusCode, message: err.message };
  if (err instanceof z.ZodError) return { status: 400, message: err.issues.map((i) => `${i.path.join(".") || "(body)"}: ${i.message}`).join("; ") };
  if (err instanceof RangeError || err instanceof SyntaxError) return { status: 400, message: err.message };
  return { status: 500, message: UNEXPECTED };
}

function NotFound(props: { path: string }) {
  return (
    <>
      <h1>Not found</h1>
      <p>
        There is nothing at <code>{props.path}</code>. <a href="/">Back to the start</a>.
      </p>
    </>
  );
}

function ErrorPage(props: { status: number; message: string }) {
  return (
    <>
      <h1>Error {props.status}</h1>
      <p>{props.message}</p>
    </>
  );
}
