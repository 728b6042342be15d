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
