/** `/runs`: the history of every run. */
import { Hono } from "hono";
import { page } from "./_layout.tsx";
import { listRunSummaries } from "./_runs.ts";
import { RunTable } from "./home.tsx";
import type { AppDeps } from "./app.tsx";

export function runsRoutes(deps: AppDeps) {
  const app = new Hono();
  app.get("/runs", (c) => {
    const runs = listRunSummaries(deps.settings.dataDir);
    return page(
      c,
      "Runs",
      <>
        <h1>Runs</h1>
        <RunTable runs={runs} />
      </>,
    );
  });
  return app;
}
