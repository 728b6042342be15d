/** The page shell (navigation, landmarks, assets) and the one render helper every view uses. */
import type { Context } from "hono";
import type { ComponentChildren, VNode } from "preact";
import { renderToString } from "preact-render-to-string";

const NAV = [
  { href: "/", label: "Home" },
  { href: "/create", label: "Fine-tune" },
  { href: "/runs", label: "Runs" },
  { href: "/inference", label: "Playground" },
  { href: "/hub", label: "Hub" },
];

export function Layout(props: { title: string; path: string; children: ComponentChildren }) {
  return (
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <meta name="htmx-config" content='{"includeIndicatorStyles":false,"allowScriptTags":false,"selfRequestsOnly":true}' />
        <title>{`${props.title} · gemma-tuner`}</title>
        <link rel="icon" href="/static/favicon.svg" type="image/svg+xml" />
        <link rel="stylesheet" href="/static/app.css" />
        <script src="/static/app.js" defer></script>
      </head>
      <body hx-headers='{"HX-CSRF": "1"}'>
        <a class="skip" href="#main">Skip to content</a>
        <header class="top">
          <a class="brand" href="/">gemma-tuner</a>
          <nav aria-label="Main">
            <ul>
              {NAV.map((n) => (
                <li>
                  <a href={n.href} aria-current={isCurrent(props.path, n.href) ? "page" : undefined}>{n.label}</a>
                </li>
              ))}
            </ul>
          </nav>
        </header>
        <main id="main" tabIndex={-1}>{props.children}</main>
        <footer class="foot">gemma-tuner · local fine-tuning of Gemma models · runs on this machine only</footer>
      </body>
    </html>
  );
}

function isCurrent(path: string, href: string): boolean {
  return href === "/" ? path === "/" : path === href || path.startsWith(href + "/");
}

/** Renders a full page. */
export function page(c: Context, title: string, body: VNode, status = 200): Response {
  const html = "<!doctype html>" + renderToString(<Layout title={title} path={c.req.path}>{body}</Layout>);
  return c.html(html, status as 200);
}

/** Renders a fragment (htmx swap target); `status` 286 stops an htmx poll. */
export function fragment(c: Context, body: VNode, status = 200): Response {
  c.header("Vary", "HX-Request");
  return c.html(renderToString(body), status as 200);
}

/** Server-side marker that islands/_boot.ts hydrates: the component name and its JSON props. */
export function Island(props: { name: string; props: Record<string, unknown>; class?: string }) {
  return <div class={props.class ?? "island"} data-island={props.name} data-props={JSON.stringify(props.props)}></div>;
}

export function formatBytes(n: number): string {
  if (!Number.isFinite(n)) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) (n /= 1024), i++;
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function formatCount(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} K`;
  return String(n);
}

export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return "–";
  const s = Math.round(ms / 1000);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return h ? `${h}h ${m}m` : m ? `${m}m ${sec}s` : `${sec}s`;
}

/** A confirmed DELETE through htmx (the API answers HX-Refresh, so the page reloads). */
export function DeleteButton(props: { url: string; confirm: string; label?: string }) {
  return (
    <button type="button" class="danger" hx-delete={props.url} hx-confirm={props.confirm} hx-swap="none">
      {props.label ?? "Delete"}
    </button>
  );
}
