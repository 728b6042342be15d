/**
 * The create form's behaviour in the page: Steps/Epochs enables only the chosen field, and a preset
 * link carries the model, run name and dataset chosen so far (GET /create keeps them).
 */

function syncUntil(form: HTMLFormElement) {
  const until = form.querySelector<HTMLInputElement>('input[name="until"]:checked')?.value ?? "steps";
  for (const [id, mode] of [["f-maxSteps", "steps"], ["f-epochs", "epochs"]] as const) {
    const input = form.querySelector<HTMLInputElement>(`#${id}`);
    if (input) input.disabled = until !== mode;
  }
}

/** The preset link's address with the form's model, name and dataset added. */
export function presetHref(href: string, form: HTMLFormElement): string {
  const url = new URL(href, location.href);
  const value = (sel: string) => form.querySelector<HTMLInputElement | HTMLSelectElement>(sel)?.value.trim() ?? "";
  const model = value("#f-model_path") || value("#f-model");
  for (const [k, v] of [["name", value("#f-name")], ["model", model], ["dataset", value("#f-dataset_path")]]) {
    if (v) url.searchParams.set(k, v);
  }
  return url.pathname + url.search;
}

export function installCreateForm() {
  const form = () => document.getElementById("create-form") as HTMLFormElement | null;
  document.addEventListener("change", (e) => {
    const t = e.target as HTMLInputElement | null;
    const f = form();
    if (f && t?.name === "until") syncUntil(f);
  });
  document.addEventListener("click", (e) => {
    const a = (e.target as Element | null)?.closest?.("a[data-preset]") as HTMLAnchorElement | null;
    const f = form();
    if (a && f) a.href = presetHref(a.getAttribute("href") ?? a.href, f);
  });
  const init = () => {
    const f = form();
    if (f) syncUntil(f);
  };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
}

/**
 * An element marked `data-superseded-by="<selector>"` (the create form's check) gives way to requests
 * from the element the selector names (the form's Start): an answer to a request sent before the latest
 * of those began is not swapped in. Without this, a check sent before Start and answered after it
 * cleared the field error Start had just shown (seen in CI on a busy machine). The request is left to
 * finish rather than aborted: htmx logs an abort as an error in the console.
 */
export function installSupersede(doc: Document = document) {
  let seq = 0;
  const sentAt = new WeakMap<XMLHttpRequest, number>();
  const lastRequest = new WeakMap<Element, number>();
  doc.addEventListener("htmx:beforeRequest", (ev) => {
    const d = (ev as CustomEvent<{ elt: Element; xhr: XMLHttpRequest }>).detail;
    const n = ++seq;
    sentAt.set(d.xhr, n);
    lastRequest.set(d.elt, n);
  });
  doc.addEventListener("htmx:beforeSwap", (ev) => {
    const d = (ev as CustomEvent<{ elt: Element; xhr: XMLHttpRequest; requestConfig?: { elt?: Element }; shouldSwap: boolean }>).detail;
    const elt = d.requestConfig?.elt ?? d.elt;
    const sel = elt.getAttribute?.("data-superseded-by");
    const by = sel ? doc.querySelector(sel) : null;
    if (by && (lastRequest.get(by) ?? 0) > (sentAt.get(d.xhr) ?? 0)) d.shouldSwap = false;
  });
}
