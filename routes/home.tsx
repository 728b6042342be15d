/** `/`: what this is, recent runs, and the two ways in. */
import { Hono } from "hono";
import { Island, page } from "./_layout.tsx";
import { listRunSummaries, type RunSummary } from "./_runs.ts";
import type { AppDeps } from "./app.tsx";

export function RunTable(props: { runs: RunSummary[]; compare?: boolean }) {
  if (props.runs.length === 0) return <p class="muted">No runs yet. <a href="/create">Fine-tune a model</a> to start one.</p>;
  return (
    <table class="runs">
      <thead>
        <tr>
          {props.compare && <th scope="col"><span class="sr-only">Compare</span></th>}
          <th scope="col">Run</th>
          <th scope="col">State</th>
          <th scope="col">Model</th>
          <th scope="col">Method</th>
          <th scope="col">Dataset</th>
          <th scope="col">Step</th>
          <th scope="col">Train loss</th>
          <th scope="col">Eval loss</th>
        </tr>
      </thead>
      <tbody>
        {props.runs.map((r) => (
          <tr>
            {props.compare && (
              <td>
                <input type="checkbox" name="compare" value={r.id} aria-label={`Compare ${r.name}`} />
              </td>
            )}
            <td>
              <a href={`/runs/${encodeURIComponent(r.id)}`}>{r.name}</a>
            </td>
            <td>
              <span class={`state state-${r.state}`}>{r.state}</span>
            </td>
            <td>{r.model}</td>
            <td>{r.method}</td>
            <td>{r.dataset}</td>
            <td>{r.totalSteps ? `${r.step}/${r.totalSteps}` : r.step}</td>
            <td>{r.trainLoss?.toFixed(4) ?? "–"}</td>
            <td>{r.evalLoss?.toFixed(4) ?? "–"}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

export function homeRoutes(deps: AppDeps) {
  const app = new Hono();
  app.get("/", (c) => {
    const runs = listRunSummaries(deps.settings.dataDir).slice(0, 5);
    return page(
      c,
      "Home",
      <>
        <section class="hero">
          <h1>Fine-tune Gemma on your own data, on this machine</h1>
          <p>
            gemma-tuner trains Gemma 1, 2 and 3 models with LoRA or full fine-tuning on your CPU or GPU, shows the run live,
            and lets you chat with the result. Adapters are saved in PEFT format and metrics in TensorBoard format, so
            everything opens in the tools you already use.
          </p>
          <div class="actions">
            <a class="button primary" href="/create">Fine-tune a model</a>
            <a class="button" href="/inference">Try a model</a>
          </div>
        </section>
        <section aria-labelledby="recent">
          <h2 id="recent">Recent runs</h2>
          <RunTable runs={runs} />
          {runs.length > 0 && <p><a href="/runs">All runs</a></p>}
        </section>
        {runs[0] && (
          <section aria-labelledby="latest">
            <h2 id="latest">Latest run: {runs[0].name}</h2>
            <Island name="LossChart" props={{ runId: runs[0].id, title: "Training loss", tags: ["train/loss", "eval/loss"] }} />
          </section>
        )}
      </>,
    );
  });
  return app;
}
