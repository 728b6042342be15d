/** `/`: what this is, recent runs, and the two ways in. */
import { Hono } from "hono";
import { formatDuration, Island, page } from "./_layout.tsx";
import { trainingMs } from "./runs.tsx";
import type { RunView } from "../trainer/service.ts";
import type { AppDeps } from "./deps.ts";

/** The run a trainer is working on now (initializing or training), if any. */
export function liveRun(runs: RunView[]): RunView | undefined {
  return runs.find((r) => !r.orphan && (r.status.state === "training" || r.status.state === "initializing"));
}

function RecentRuns(props: { runs: RunView[]; live?: string }) {
  if (props.runs.length === 0) {
    return (
      <p class="muted">
        No runs yet. <a href="/create">Fine-tune a model</a> to start one.
      </p>
    );
  }
  return (
    <ul class="recent">
      {props.runs.map((r) => (
        <li class={r.id === props.live ? "live" : undefined} data-live={r.id === props.live ? "1" : undefined}>
          <a href={`/runs/${encodeURIComponent(r.id)}`}>{r.run.config.name}</a> <span class={`state state-${r.status.state}`}>{r.status.state}</span>{" "}
          <span class="muted">
            {r.run.config.method} on {r.run.config.dataset.path}
            {r.status.state === "queued" && r.status.step === 0 ? ", waiting to start" : `, step ${r.status.step}`}
            {r.trainLoss !== undefined ? `, loss ${r.trainLoss.toFixed(3)}` : ""}
            {Number.isFinite(trainingMs(r)) ? <span data-duration>, {formatDuration(trainingMs(r))} of training</span> : ""}
          </span>
        </li>
      ))}
    </ul>
  );
}

export function homeRoutes(deps: AppDeps) {
  const app = new Hono();
  app.get("/", (c) => {
    const all = deps.service.list();
    const live = liveRun(all);
    // The live run is always among those listed, even when newer runs wait in the queue.
    const runs = all.slice(0, 5);
    if (live && !runs.includes(live)) runs.splice(4, 1, live);
    const shown = live ?? runs[0];
    return page(
      c,
      "Home",
      <>
        <section class="hero">
          <h1>Fine-tune Gemma on your own data, on this machine</h1>
          <p>
            gemma-tuner trains Gemma 1, 2 and 3 models with LoRA or full fine-tuning on your CPU or GPU, shows the run live, and lets you chat with the result. Adapters are saved
            in PEFT format and metrics in TensorBoard format, so everything opens in the tools you already use.
          </p>
          <div class="actions">
            <a class="button primary" href="/create">Fine-tune a model</a>
            <a class="button" href="/inference">Try a model</a>
          </div>
        </section>
        <section aria-labelledby="recent">
          <h2 id="recent">Recent runs</h2>
          <RecentRuns runs={runs} live={live?.id} />
          {runs.length > 0 && (
            <p>
              <a href="/runs">All runs</a>
            </p>
          )}
        </section>
        {shown && (
          <section aria-labelledby="latest" class={live ? "panel live" : undefined} data-highlight={shown.id}>
            <h2 id="latest">
              {live ? "Training now" : "Latest run"}: <a href={`/runs/${encodeURIComponent(shown.id)}`}>{shown.run.config.name}</a>
            </h2>
            {live && (
              <p>
                Step {live.status.step}
                {live.status.totalSteps ? ` of ${live.status.totalSteps}` : ""}. <a href={`/runs/${encodeURIComponent(live.id)}`}>Open its dashboard</a> to follow it live.
              </p>
            )}
            <Island name="MetricsChart" props={{ runId: shown.id, title: "Training loss", tags: ["train/loss", "eval/loss"] }} />
          </section>
        )}
      </>,
    );
  });
  return app;
}
