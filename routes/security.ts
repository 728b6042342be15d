/**
 * Security middleware: token check on every request when a token is set, cross-site protection of
 * state-changing requests, and security headers.
 */
import type { MiddlewareHandler } from "hono";
import { getCookie, setCookie } from "hono/cookie";

const COOKIE = "gemma_tuner_token";

function safeEqual(a: string, b: string): boolean {
  const x = new TextEncoder().encode(a), y = new TextEncoder().encode(b);
  let diff = x.length ^ y.length;
  for (let i = 0; i < Math.max(x.length, y.length); i++) diff |= (x[i % (x.length || 1)] ?? 0) ^ (y[i % (y.length || 1)] ?? 0);
  return diff === 0 && x.length === y.length;
}

/** With a token, every route (pages, static, API, SSE) needs it: Bearer header or the login cookie. */
export function requireToken(token: string | undefined): MiddlewareHandler {
  // deno-lint-ignore require-await
  return async (c, next) => {
    if (!token) return next();
    if (c.req.path === "/login") {
      const given = c.req.query("token") ?? "";
      if (!safeEqual(given, token)) return c.text("Wrong or missing token. Open /login?token=YOUR_TOKEN.", 401);
      setCookie(c, COOKIE, token, { httpOnly: true, sameSite: "Strict", path: "/" });
      return c.redirect("/", 303);
    }
    const auth = c.req.header("Authorization") ?? "";
    const bearer = auth.startsWith("Bearer ") ? auth.slice(7) : "";
    const cookie = getCookie(c, COOKIE) ?? "";
    if (safeEqual(bearer, token) || safeEqual(cookie, token)) return next();
    return c.json({ error: "This server requires a token: send 'Authorization: Bearer <token>' or open /login?token=<token> once." }, 401);
  };
}

/** Loopback names a tokenless server answers to; a DNS-rebound name (evil.example → 127.0.0.1) is none of them. */
export function isLoopbackHost(hostHeader: string): boolean {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:\[\]]+)(?::(\d{1,5}))?$/.exec(hostHeader);
  if (!m) return false;
  const name = m[1].toLowerCase();
  return name === "localhost" || name === "[::1]" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(name);
}

/**
 * DNS rebinding: a page on any site can rebind its name to 127.0.0.1 and then talk to this server as
 * same-origin. Without a token the Host header is the one thing such a request cannot fake, so only
 * loopback names are served (with a token, the token is the defence and any name may be used).
 */
export function hostGuard(token: string | undefined): MiddlewareHandler {
  // deno-lint-ignore require-await
  return async (c, next) => {
    if (token) return next();
    const host = c.req.header("Host") ?? new URL(c.req.url).host;
    if (isLoopbackHost(host)) return next();
    const message = `This server answers only to 127.0.0.1, localhost or [::1] (the request was for "${
      host.slice(0, 100)
    }"). To reach it under another name, start it with --token`;
    if (c.req.path.startsWith("/v1/")) return c.json({ error: { message, type: "invalid_request_error", param: null, code: "host_not_allowed" } }, 421);
    return c.json({ error: message }, 421);
  };
}

const UNSAFE = new Set(["POST", "PUT", "PATCH", "DELETE"]);
const FORM_TYPES = /^\s*(application\/x-www-form-urlencoded|multipart\/form-data|text\/plain)\b/i;

/**
 * Refuses cross-site state changes: a browser's cross-site request carries Sec-Fetch-Site
 * "cross-site" or a foreign Origin. Non-browser clients (no Origin) with a token are allowed.
 */
export function crossSiteGuard(): MiddlewareHandler {
  // deno-lint-ignore require-await
  return async (c, next) => {
    if (!UNSAFE.has(c.req.method)) return next();
    const site = c.req.header("Sec-Fetch-Site");
    const origin = c.req.header("Origin");
    const host = c.req.header("Host") ?? new URL(c.req.url).host;
    if (site === "cross-site" || site === "same-site") return c.json({ error: "Cross-site requests are not allowed" }, 403);
    if (origin && origin !== "null") {
      let ok = false;
      try {
        ok = new URL(origin).host === host;
      } catch {
        ok = false;
      }
      if (!ok) return c.json({ error: `Cross-site request from ${origin} refused` }, 403);
    } else if (origin === "null") {
      return c.json({ error: "Requests from opaque origins are refused" }, 403);
    }
    // HTML forms cannot set custom headers: a post without Origin in any of the three encodings a form
    // can send (urlencoded, multipart, text/plain) must carry HX-CSRF; JSON needs a script, and scripts send Origin.
    if (!origin && FORM_TYPES.test(c.req.header("Content-Type") ?? "") && !c.req.header("HX-CSRF")) {
      return c.json({ error: "Form posts must come from the app's own pages" }, 403);
    }
    return next();
  };
}

export function securityHeaders(): MiddlewareHandler {
  return async (c, next) => {
    await next();
    c.header("X-Content-Type-Options", "nosniff");
    c.header("Referrer-Policy", "no-referrer");
    c.header("X-Frame-Options", "DENY");
    c.header("Cross-Origin-Opener-Policy", "same-origin");
    c.header(
      "Content-Security-Policy",
      "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    );
  };
}
