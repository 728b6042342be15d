/**
 * Errors reach the page. htmx swaps nothing for a 4xx/5xx by default, so a form's "Choose a file to
 * upload" (400) or a button's "Run is not running" (409, JSON from the API) would vanish. The page's
 * htmx config (routes/_layout.tsx) swaps 4xx and 5xx; this rule decides where and what:
 *
 * - where: the element named by the closest `data-error-target` (a CSS selector), else the request's
 *   own swap target when it has one, else an alert slot created right after the element that made the
 *   request (buttons with `hx-swap="none"`). Slots are `role="alert"`, so screen readers announce them.
 * - what: an HTML fragment as the server sent it (its out-of-band parts still land beside their fields);
 *   a JSON `{"error": …}` or plain text becomes one escaped error line.
 *
 * A later request from the same element clears its slot, so a fixed mistake stops being shown.
 */

interface BeforeSwapDetail {
  xhr: XMLHttpRequest;
  elt: Element;
  target: Element;
  requestConfig?: { elt?: Element };
  shouldSwap: boolean;
  isError: boolean;
  serverResponse: string;
  swapOverride?: string;
}

const SLOT = "data-error-slot";

/** The text of an error response that is not HTML: `{"error": "…"}`, `{"error": {"message": "…"}}` or text. */
export function errorMessage(body: string, contentType: string, status: number): string {
  if (contentType.includes("json")) {
    try {
      const j = JSON.parse(body);
      const e = j?.error;
      const msg = typeof e === "string" ? e : typeof e?.message === "string" ? e.message : undefined;
      const issues = Array.isArray(j?.issues) ? `: ${j.issues.join("; ")}` : "";
      if (msg) return msg + issues;
    } catch { /* fall through to the text */ }
  }
  const text = body.trim();
  return text ? text.slice(0, 500) : `The server answered ${status} without a message.`;
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
}

/** The slot after `elt` for its errors, created on first use. */
function slotAfter(elt: Element): Element {
  const next = elt.nextElementSibling;
  if (next?.hasAttribute(SLOT)) return next;
  const slot = elt.ownerDocument.createElement("div");
  slot.setAttribute(SLOT, "");
  slot.setAttribute("role", "alert");
  slot.className = "error-slot";
  elt.after(slot);
  return slot;
}

function hasOwnTarget(elt: Element): boolean {
  const swap = elt.closest("[hx-swap]")?.getAttribute("hx-swap") ?? "";
  return !swap.startsWith("none") && elt.closest("[hx-target]") !== null;
}

export function installErrorDisplay(doc: Document = document): void {
  doc.addEventListener("htmx:beforeSwap", (ev) => {
    const d = (ev as CustomEvent<BeforeSwapDetail>).detail;
    const status = d.xhr.status;
    if (status < 400) return;
    const elt = d.requestConfig?.elt ?? d.elt;
    const named = elt.closest("[data-error-target]")?.getAttribute("data-error-target");
    const target = (named && doc.querySelector(named)) || (hasOwnTarget(elt) ? d.target : slotAfter(elt));
    const type = d.xhr.getResponseHeader("Content-Type") ?? "";
    const html = type.includes("text/html") && d.serverResponse.trim()
      ? d.serverResponse
      : `<p class="field-error" role="alert">${escapeHtml(errorMessage(d.serverResponse, type, status))}</p>`;
    d.target = target;
    d.serverResponse = html;
    d.shouldSwap = true;
    d.swapOverride = "innerHTML";
    // A 4xx is an answer the page shows; only a 5xx is a fault worth htmx's error event and log.
    d.isError = status >= 500;
  });
  doc.addEventListener("htmx:beforeRequest", (ev) => {
    const elt = (ev as CustomEvent<{ elt: Element }>).detail.elt;
    const next = elt.nextElementSibling;
    if (next?.hasAttribute(SLOT)) next.replaceChildren();
  });
}
