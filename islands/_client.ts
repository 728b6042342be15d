/** The browser bundle: htmx, then the islands' boot. Built by `deno task bundle` into static/app.js. */
import htmx from "htmx.org";
import { installBoot } from "./_boot.ts";
import MetricsChart from "./MetricsChart.tsx";
import Chat from "./Chat.tsx";
import { installErrorDisplay } from "./_errors.ts";
import { installCreateForm, installSupersede } from "./_form.ts";

(globalThis as unknown as { htmx: typeof htmx }).htmx = htmx;
// deno-lint-ignore no-explicit-any
installBoot({ MetricsChart: MetricsChart as any, Chat: Chat as any });
installErrorDisplay();
installCreateForm();
installSupersede();

// Log panes follow new output unless the reader scrolled up.
document.addEventListener("htmx:oobBeforeSwap", (e) => {
  const target = (e as CustomEvent).detail?.target as HTMLElement | undefined;
  if (target?.tagName === "PRE") target.dataset.stick = String(target.scrollTop + target.clientHeight >= target.scrollHeight - 8);
});
document.addEventListener("htmx:oobAfterSwap", (e) => {
  const target = (e as CustomEvent).detail?.target as HTMLElement | undefined;
  if (target?.tagName === "PRE" && target.dataset.stick !== "false") target.scrollTop = target.scrollHeight;
});

// Log panes open at their newest lines.
const toBottom = () => document.querySelectorAll<HTMLElement>(".logs pre").forEach((p) => (p.scrollTop = p.scrollHeight));
if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", toBottom);
else toBottom();
