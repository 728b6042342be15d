/** `/`: what this is, recent runs, and the two ways in. */
import { Hono } from "hono";
import { Island, page } from "./_layout.tsx";
import type { RunView } from "../trainer/service.ts";
import type { AppDeps } from "./deps.ts";

function RecentRuns(props: { runs: RunView[] }) {
  if (props.runs.length === 0) return <p class="muted">No runs yet. <a href="/create">Fine-tune a model</a> to start one.</p>;
  return (
    <ul class="recent">
      {props.runs.map((r) => (
        <li>
          <a href={`/runs/${encodeURIComponent(r.id)}`}>{r.run.config.name}</a> <span class={`state state-${r.status.state}`}>{r.status.state}</span>{" "}
          <span class="muted">
            {r.run.config.method} on {r.run.config.dataset.path}, step {r.status.step}
            {r.trainLoss !== undefined ? `, loss ${r.trainLoss.toFixed(3)}` : ""}
          </span>
        </li>
      ))}
    </ul>
  );
}

export function homeRoutes(deps: AppDeps) {
  const app = new Hono();
  app.get("/", (c) => {
    const runs = deps.service.list().slice(0, 5);
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
          <RecentRuns runs={runs} />
          {runs.length > 0 && <p><a href="/runs">All runs</a></p>}
        </section>
        {runs[0] && (
          <section aria-labelledby="latest">
            <h2 id="latest">Latest run: {runs[0].run.config.name}</h2>
            <Island name="MetricsChart" props={{ runId: runs[0].id, title: "Training loss", tags: ["train/loss", "eval/loss"] }} />
          </section>
        )}
      </>,
    );
  });
  return app;
}
