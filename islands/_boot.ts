/**
 * Client boot: finds `[data-island]` elements rendered by the server, hydrates each with its
 * component and JSON props, and does it again for content that htmx swaps in.
 */
import { h, render } from "preact";
import type { ComponentType } from "preact";

const hydrated = new WeakSet<Element>();

export function boot(registry: Record<string, ComponentType<Record<string, unknown>>>, root: ParentNode = document) {
  root.querySelectorAll<HTMLElement>("[data-island]").forEach((el) => {
    if (hydrated.has(el)) return;
    const Comp = registry[el.dataset.island ?? ""];
    if (!Comp) {
      console.warn(`Unknown island "${el.dataset.island}"`);
      return;
    }
    let props: Record<string, unknown> = {};
    try {
      props = JSON.parse(el.dataset.props ?? "{}");
    } catch {
      console.warn(`Island "${el.dataset.island}" has unreadable props`);
    }
    hydrated.add(el);
    el.dataset.hydrated = "1";
    render(h(Comp, props), el);
  });
}

export function installBoot(registry: Record<string, ComponentType<Record<string, unknown>>>) {
  const run = (root?: ParentNode) => boot(registry, root);
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", () => run());
  else run();
  // htmx fires htmx:load on every element it swaps in.
  document.addEventListener("htmx:load", (e) => run((e.target as Element) ?? document));
}
