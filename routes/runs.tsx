/** `/runs`: every run with its state, model, method, dataset, losses and duration; compare curves; delete. */
import { Hono } from "hono";
import { DeleteButton, formatDuration, Island, page } from "./_layout.tsx";
import type { AppDeps } from "./deps.ts";
import type { RunView } from "../trainer/service.ts";
import { isFinalState } from "../trainer/run_dir.ts";

function duration(v: RunView): string {
  const start = Date.parse(v.run.createdAt), end = isFinalState(v.status.state) ? Date.parse(v.status.updatedAt) : Date.now();
  return Number.isFinite(start) && Number.isFinite(end) ? formatDuration(end - start) : "–";
}

export function runsRoutes(deps: AppDeps) {
  const app = new Hono();
  app.get("/runs", (c) => {
    deps.service.reconcile();
    const runs = deps.service.list();
    const compare = c.req.queries("compare")?.filter((id) => runs.some((r) => r.id === id)) ?? [];
    return page(
      c,
      "Runs",
      <>
        <h1>Runs</h1>
        <p><a class="button" href="/import">Import a model trained elsewhere</a></p>
        {runs.length === 0 ? <p class="muted">No runs yet. <a href="/create">Fine-tune a model</a> to start one.</p> : (
          <form method="get" action="/runs">
            <div class="runs">
              <table>
                <thead>
                  <tr>
                    <th scope="col"><span class="sr-only">Compare</span></th>
                    <th scope="col">Run</th><th scope="col">State</th><th scope="col">Base model</th><th scope="col">Method</th>
                    <th scope="col">Dataset</th><th scope="col">Step</th><th scope="col">Train loss</th><th scope="col">Eval loss</th>
                    <th scope="col">Duration</th><th scope="col"><span class="sr-only">Actions</span></th>
                  </tr>
                </thead>
                <tbody>
                  {runs.map((r) => (
                    <tr data-run={r.id}>
                      <td><input type="checkbox" name="compare" value={r.id} checked={compare.includes(r.id)} aria-label={`Compare ${r.run.config.name}`} /></td>
                      <td><a href={`/runs/${encodeURIComponent(r.id)}`}>{r.run.config.name}</a><br /><small class="muted">{r.id}</small></td>
                      <td><span class={`state state-${r.status.state}`}>{r.orphan ? "orphan" : r.status.state}</span></td>
                      <td>{r.run.config.model}</td>
                      <td>{r.run.config.method === "lora" ? `LoRA r=${r.run.config.lora.r}` : "full"}</td>
                      <td>{r.run.config.dataset.path}</td>
                      <td>{r.status.totalSteps ? `${r.status.step}/${r.status.totalSteps}` : r.status.step}</td>
                      <td>{r.trainLoss?.toFixed(4) ?? "–"}</td>
                      <td>{r.evalLoss?.toFixed(4) ?? "–"}</td>
                      <td>{duration(r)}</td>
                      <td>
                        {isFinalState(r.status.state) && (
                          <DeleteButton url={`/api/runs/${encodeURIComponent(r.id)}`} confirm={`Delete run "${r.run.config.name}" and all its checkpoints? This cannot be undone.`} />
                        )}
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
            <p><button type="submit">Compare selected loss curves</button></p>
          </form>
        )}
        {compare.length > 0 && (
          <section aria-labelledby="cmp">
            <h2 id="cmp">Loss curves</h2>
            <Island name="MetricsChart" props={{ runIds: compare, tags: ["train/loss"], title: "train/loss", smoothing: 0.6, height: 360 }} />
          </section>
        )}
      </>,
    );
  });
  return app;
}
