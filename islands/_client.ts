/** The browser bundle: htmx, then the islands' boot. Built by `deno task bundle` into static/app.js. */
import htmx from "htmx.org";
import { installBoot } from "./_boot.ts";
import LossChart from "./LossChart.tsx";

(globalThis as unknown as { htmx: typeof htmx }).htmx = htmx;
// deno-lint-ignore no-explicit-any
installBoot({ LossChart: LossChart as any });
