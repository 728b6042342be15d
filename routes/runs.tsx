/**
 * `/runs`: every run with its state, model, method, dataset, losses and duration; compare the
 * selected runs' train and eval loss curves (legend by run name) and the settings that differ; delete.
 * Below 640 px each run is a card (static/app.css), so nothing scrolls sideways.
 */
import { Hono } from "hono";
import * as fs from "node:fs";
import * as path from "node:path";
import { DeleteButton, formatDuration, Island, page } from "./_layout.tsx";
import type { AppDeps } from "./deps.ts";
import type { RunView } from "../trainer/service.ts";
import { isFinalState } from "../trainer/run_dir.ts";

const ACTIVE = new Set(["initializing", "training"]);

/**
 * Milliseconds a trainer has worked on the run: the time spent initializing or training, summed over
 * every start (a resumed run counts its time before the abort and after the resume, not the pause;
 * a queued run none). Read from status.log, which has one line per state change; NaN when the run
 * never started here (queued, cancelled, or imported).
 */
export function trainingMs(v: RunView, now = Date.now()): number {
  let text = "";
  try {
    text = fs.readFileSync(path.join(v.dir, "status.log"), "utf8");
  } catch { /* no log yet: not started */ }
  let total = 0, since = NaN, any = false;
  for (const line of text.split("\n")) {
    const m = /^(\S+) \[(\w+)\]/.exec(line);
    if (!m) continue;
    const t = Date.parse(m[1]), active = ACTIVE.has(m[2]);
    if (!Number.isFinite(t)) continue;
    if (active && !Number.isFinite(since)) since = t;
    else if (!active && Number.isFinite(since)) {
      total += t - since;
      since = NaN;
      any = true;
    }
  }
  if (Number.isFinite(since)) {
    // Still active by the log: a live run runs to now; one the server found dead ends at its last status.
    const end = isFinalState(v.status.state) || v.status.state === "queued" ? Date.parse(v.status.updatedAt) : now;
    if (Number.isFinite(end) && end >= since) total += end - since;
    any = true;
  }
  return any ? total : NaN;
}

/** The run's training time in words: "–" for a run that has not started (queued, or never trained here); a re-queued one keeps what it trained. */
export function runDuration(v: RunView, now = Date.now()): string {
  return formatDuration(trainingMs(v, now));
}

/** A model as a person names it: "demo", ORG/NAME for a Hub cache folder, else the folder's name. */
export function modelLabel(model: string): string {
  if (model === "demo") return "demo";
  const hub = /models--([^/]+?)--([^/]+)/.exec(model);
  if (hub) return `${hub[1]}/${hub[2]}`;
  return path.basename(model.replace(/\/+$/, "")) || model;
}

function datasetLabel(p: string): string {
  return p === "sample" ? "sample" : path.basename(p);
}

/** The run's id without the name it starts with: its creation time and a random suffix. */
function shortId(v: RunView): string {
  const m = /(\d{8}-\d{6}-[0-9a-f]{4})$/.exec(v.id);
  return m ? m[1] : v.id;
}

function whenCreated(v: RunView): string {
  const d = new Date(v.run.createdAt);
  return Number.isFinite(d.getTime()) ? d.toISOString().slice(0, 16).replace("T", " ") : "";
}

/** The names of the compared runs as their legends show them: the name, with the id's time when two share it. */
function legendNames(runs: RunView[]): Record<string, string> {
  const count = new Map<string, number>();
  for (const r of runs) count.set(r.run.config.name, (count.get(r.run.config.name) ?? 0) + 1);
  return Object.fromEntries(runs.map((r) => [r.id, count.get(r.run.config.name)! > 1 ? `${r.run.config.name} (${shortId(r)})` : r.run.config.name]));
}

type Flat = Record<string, string>;

function flatten(o: unknown, prefix = "", out: Flat = {}): Flat {
  if (o && typeof o === "object" && !Array.isArray(o)) {
    for (const [k, v] of Object.entries(o)) flatten(v, prefix ? `${prefix}.${k}` : k, out);
  } else {
    out[prefix] = Array.isArray(o) ? o.join(", ") : o === undefined ? "–" : String(o);
  }
  return out;
}

/** The settings whose values differ between the runs (LoRA settings only when one of them is LoRA). */
export function settingsDiff(runs: RunView[]): { key: string; values: string[] }[] {
  const flat = runs.map((r) => {
    const f = flatten({ ...r.run.config, name: undefined });
    delete f.name;
    f.model = modelLabel(r.run.config.model);
    return f;
  });
  const anyLora = runs.some((r) => r.run.config.method === "lora");
  const keys = [...new Set(flat.flatMap((f) => Object.keys(f)))].filter((k) => anyLora || !k.startsWith("lora."));
  return keys.map((key) => ({ key, values: flat.map((f) => f[key] ?? "–") })).filter((d) => new Set(d.values).size > 1);
}

function Comparison(props: { runs: RunView[] }) {
  const names = legendNames(props.runs);
  const diff = settingsDiff(props.runs);
  const loss = (n?: number) => n?.toFixed(4) ?? "–";
  return (
    <section aria-labelledby="cmp" data-compare>
      <h2 id="cmp">Comparison</h2>
      <Island
        name="MetricsChart"
        props={{ runIds: props.runs.map((r) => r.id), labels: names, tags: ["train/loss", "eval/loss"], title: "Training and evaluation loss", smoothing: 0.6, height: 360 }}
      />
      <div class="scroll-x">
        <table class="compare" data-settings-diff>
          <thead>
            <tr>
              <th scope="col">Setting</th>
              {props.runs.map((r) => <th scope="col">{names[r.id]}</th>)}
            </tr>
          </thead>
          <tbody>
            <tr>
              <th scope="row">Train loss (last)</th>
              {props.runs.map((r) => <td>{loss(r.trainLoss)}</td>)}
            </tr>
            <tr>
              <th scope="row">Eval loss (last)</th>
              {props.runs.map((r) => <td data-eval-loss={r.id}>{loss(r.evalLoss)}</td>)}
            </tr>
            {diff.map((d) => (
              <tr data-diff={d.key}>
                <th scope="row">
                  <code>{d.key}</code>
                </th>
                {d.values.map((v) => <td>{v}</td>)}
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {diff.length === 0 && <p class="muted" data-no-diff>The compared runs have the same settings.</p>}
    </section>
  );
}

export function runsRoutes(deps: AppDeps) {
  const app = new Hono();
  app.get("/runs", (c) => {
    deps.service.reconcile();
    const runs = deps.service.list();
    const compare = c.req.queries("compare")?.filter((id) => runs.some((r) => r.id === id)) ?? [];
    const compared = compare.map((id) => runs.find((r) => r.id === id)!);
    return page(
      c,
      "Runs",
      <>
        <h1>Runs</h1>
        <p>
          <a class="button" href="/import">Import a model trained elsewhere</a>
        </p>
        {runs.length === 0
          ? (
            <p class="muted">
              No runs yet. <a href="/create">Fine-tune a model</a> to start one.
            </p>
          )
          : (
            <form method="get" action="/runs">
              <table class="runs">
                <thead>
                  <tr>
                    <th scope="col">
                      <span class="sr-only">Compare</span>
                    </th>
                    <th scope="col">Run</th>
                    <th scope="col">State</th>
                    <th scope="col">Model</th>
                    <th scope="col">Dataset</th>
                    <th scope="col">Step</th>
                    <th scope="col">Train loss</th>
                    <th scope="col">Eval loss</th>
                    <th scope="col">Duration</th>
                    <th scope="col">
                      <span class="sr-only">Actions</span>
                    </th>
                  </tr>
                </thead>
                <tbody>
                  {runs.map((r) => (
                    <tr data-run={r.id} data-state={r.status.state}>
                      <td>
                        <input type="checkbox" name="compare" value={r.id} checked={compare.includes(r.id)} aria-label={`Compare ${r.run.config.name}`} />
                      </td>
                      <td class="run-name">
                        <a href={`/runs/${encodeURIComponent(r.id)}`}>{r.run.config.name}</a>
                        <small class="muted run-id" title={r.id}>
                          {whenCreated(r)} · <code>{shortId(r)}</code>
                        </small>
                      </td>
                      <td data-label="State">
                        <span class={`state state-${r.status.state}`}>{r.orphan ? "orphan" : r.status.state}</span>
                      </td>
                      <td data-label="Model" title={r.run.config.model}>
                        {modelLabel(r.run.config.model)}, {r.run.config.method === "lora" ? `LoRA r=${r.run.config.lora.r}` : "full"}
                      </td>
                      <td data-label="Dataset" title={r.run.config.dataset.path}>{datasetLabel(r.run.config.dataset.path)}</td>
                      <td data-label="Step" class="num">{r.status.totalSteps ? `${r.status.step}/${r.status.totalSteps}` : r.status.step}</td>
                      <td data-label="Train loss" class="num">{r.trainLoss?.toFixed(4) ?? "–"}</td>
                      <td data-label="Eval loss" class="num">{r.evalLoss?.toFixed(4) ?? "–"}</td>
                      <td data-label="Duration" class="num" data-duration>{runDuration(r)}</td>
                      <td class="row-actions">
                        {isFinalState(r.status.state) && (
                          <DeleteButton
                            url={`/api/runs/${encodeURIComponent(r.id)}`}
                            confirm={`Delete run "${r.run.config.name}" and all its checkpoints? This cannot be undone.`}
                          />
                        )}
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
              <p>
                <button type="submit">Compare selected runs</button>
              </p>
            </form>
          )}
        {compared.length > 0 && <Comparison runs={compared} />}
      </>,
    );
  });
  return app;
}
