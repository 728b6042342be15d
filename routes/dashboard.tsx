/**
 * `/runs/:id`: the training dashboard. Three panels (control, KPIs, logs) are htmx fragments polled
 * every second; each answers 286 once the run is over, which stops its poll. A stable outer element
 * holds an inner polled one so swaps settle without flicker. Charts are the MetricsChart island.
 */
import { Hono } from "hono";
import type { Context } from "hono";
import * as path from "node:path";
import { formatBytes, formatCount, formatDuration, fragment, Island, page } from "./_layout.tsx";
import type { RunView, TrainingService } from "../trainer/service.ts";
import { isFinalState } from "../trainer/run_dir.ts";
import { countErrorLines, readLogChunk } from "../trainer/logs.ts";
import { STDERR_LOG, STDOUT_LOG } from "../trainer/process.ts";
import { ClusterForm } from "./handoff.tsx";
import { trainingMs } from "./runs.tsx";

const STOP_POLLING = 286;

function poll(v: RunView, c: Context, body: preact.JSX.Element) {
  return fragment(c, body, isFinalState(v.status.state) && !v.orphan ? STOP_POLLING : 200);
}

/** "Aborted at step N", with the reason when it is more than the signal that stopped it. */
function abortedText(s: RunView["status"]): string {
  if (s.step === 0 && /^Cancelled/.test(s.message)) return s.message;
  const plain = /^Stopped by \S+ at step \d+$/.test(s.message);
  // "Aborted (the trainer was stopped before it could save)" from the server: the reason without the word again.
  const why = s.message.replace(/^Aborted\s*/, "").replace(/^\((.*)\)$/, "$1").trim();
  return `Aborted at step ${s.step}${plain || !why ? "" : ` (${why})`}`;
}

/** The run's progress bar: steps done of the total, with the numbers in words beside it. */
function RunProgress(props: { v: RunView }) {
  const s = props.v.status;
  if (!s.totalSteps) return null;
  const pct = Math.min(100, Math.floor((100 * s.step) / s.totalSteps));
  return (
    <div class="run-progress">
      <progress data-progress={s.step} max={s.totalSteps} value={s.step} aria-label="Training progress">{pct}%</progress>
      <span class="muted">
        Step {s.step} of {s.totalSteps} · {pct}%
      </span>
    </div>
  );
}

function Control(props: { v: RunView }) {
  const { v } = props;
  const s = v.status;
  const id = encodeURIComponent(v.id);
  const latest = v.checkpoints.at(-1);
  const tryModel = v.hasFinal ? `${v.id}/final` : latest ? `${v.id}/${path.basename(latest.dir)}` : "";
  // Ids on the controls of a polled panel: htmx moves keyboard focus to the element with the same id
  // after each swap, so a keyboard user on Abort keeps it while #control re-renders every second.
  const abort = (
    <button
      type="button"
      id="run-abort"
      class="danger"
      hx-post={`/api/runs/${id}/abort`}
      hx-confirm="Abort this run? It stops after the current step and keeps its checkpoints."
      hx-swap="none"
    >
      Abort
    </button>
  );
  let body: preact.JSX.Element;
  if (v.orphan) {
    body = (
      <>
        <p>
          <strong>Training in a process this server did not start</strong> (pid {s.pid}). It is monitored here; you can abort it.
        </p>
        <p>{s.message}</p>
        <div class="actions">{abort}</div>
      </>
    );
  } else if (s.state === "queued") {
    body = (
      <>
        <p>Queued{v.queuePosition ? ` (position ${v.queuePosition})` : ""}: it starts when the current run finishes.</p>
        <div class="actions">
          <button type="button" id="run-cancel" hx-post={`/api/runs/${id}/cancel`} hx-confirm="Cancel this queued run?" hx-swap="none">Cancel</button>
        </div>
      </>
    );
  } else if (s.state === "initializing" || s.state === "training") {
    const word = s.state === "initializing" ? "Initializing" : "Training";
    // The worker's message often is the state itself ("Training"): say it once.
    const detail = s.message && s.message.toLowerCase() !== word.toLowerCase() ? s.message : "";
    body = (
      <>
        <p role="status">{word}{detail ? `: ${detail}` : ""}</p>
        <RunProgress v={v} />
        <div class="actions">{abort}</div>
      </>
    );
  } else if (s.state === "completed") {
    body = (
      <>
        <p role="status">
          Completed {s.step} step{s.step === 1 ? "" : "s"}
          {Number.isFinite(trainingMs(v)) ? ` in ${formatDuration(trainingMs(v))}` : ""}. {latest ? `Latest checkpoint: step ${latest.step}.` : ""}
        </p>
        <div class="actions">
          {tryModel && <a class="button primary" href={`/inference?model=${encodeURIComponent(tryModel)}`}>Try it</a>}
          {tryModel && <a class="button" href={`/exports?model=${encodeURIComponent(tryModel)}`}>Export (GGUF, ONNX, …)</a>}
          <a class="button" href="/create">New model</a>
        </div>
      </>
    );
  } else {
    body = (
      <>
        <p role="status">{s.state === "failed" ? `Failed: ${s.message}` : abortedText(s)}</p>
        <RunProgress v={v} />
        {s.error && <pre class="error">{s.error}</pre>}
        {v.damagedCheckpoints.map((d) => <p class="warning" data-damaged={d.step}>Checkpoint {path.basename(d.dir)} is damaged and is not offered: {d.damaged}.</p>)}
        {!latest && (
          <p class="warning">
            {v.damagedCheckpoints.length ? "No intact checkpoint" : "No checkpoint was saved"}: nothing to resume or try. Start it again from the beginning, or start a new run.
          </p>
        )}
        <div class="actions">
          {latest && <button type="button" class="primary" hx-post={`/api/runs/${id}/resume`} hx-swap="none">Resume from step {latest.step}</button>}
          {latest && <a class="button" href={`/inference?model=${encodeURIComponent(tryModel)}`}>Try the checkpoint</a>}
          {!latest && <button type="button" class="primary" hx-post={`/api/runs/${id}/restart`} hx-swap="none">Start again</button>}
          <a class="button" href="/create">New model</a>
          <button
            type="button"
            class="danger"
            hx-delete={`/api/runs/${id}`}
            hx-confirm={`Reset: delete run "${v.run.config.name}" with its logs${latest ? " and checkpoints" : ""}? This cannot be undone.`}
            hx-swap="none"
          >
            Reset (delete run)
          </button>
        </div>
      </>
    );
  }
  return (
    <div>
      <p>
        <span class={`state state-${s.state}`} data-state={s.state}>{v.orphan ? "orphan" : s.state}</span>
      </p>
      {body}
    </div>
  );
}

function Kpi(props: { v: RunView; service: TrainingService }) {
  const { v, service } = props;
  const m = service.metricsOf(v.id);
  const info = v.run.modelInfo ?? {};
  const s = v.status;
  const cache = m.state();
  const lastLoss = m.last("train/loss");
  const damaged = m.stats().errors;
  if (!lastLoss) {
    return (
      <div>
        <p class="muted" data-kpi="waiting" data-cache={cache}>
          Waiting for the first training step… ({s.message || s.state})
          {info.memoryEstimateMb ? ` It should need about ${formatBytes(Number(info.memoryEstimateMb) * 2 ** 20)} of memory.` : ""}
        </p>
        {damaged.map((e) => <p key={e} class="error">{e}</p>)}
      </div>
    );
  }
  const live = !isFinalState(s.state);
  const evalSecs = m.lastEvalSeconds();
  const tps = m.mean("train/tokens_per_second", 10);
  const stepMs = m.mean("train/step_time_ms", 20);
  const remaining = s.totalSteps > s.step && stepMs ? (s.totalSteps - s.step) * stepMs : 0;
  const evalLoss = m.last("eval/loss");
  const rss = m.last("system/rss_mb");
  const gpuMem = m.last("system/gpu_mem_mb");
  const epoch = m.last("train/epoch");
  return (
    <div>
      <div class="grid">
        <section class="kpi" aria-label="Progress">
          <h3>Progress</h3>
          <dl>
            <dt>Step</dt>
            <dd data-kpi="step">{s.totalSteps ? `${lastLoss[0]} / ${s.totalSteps}` : lastLoss[0]}</dd>
            <dt>Loss</dt>
            <dd data-kpi="loss">{lastLoss[1].toFixed(4)}</dd>
            <dt>Eval loss</dt>
            <dd>{evalLoss ? evalLoss[1].toFixed(4) : "–"}</dd>
            <dt>Epoch</dt>
            <dd>{epoch ? epoch[1].toFixed(2) : "–"}</dd>
            <dt>Training time</dt>
            <dd data-kpi="elapsed">{formatDuration(trainingMs(v))}</dd>
            {live && (
              <>
                <dt>Time left</dt>
                <dd data-kpi="eta">{remaining ? `about ${formatDuration(remaining)}` : "–"}</dd>
              </>
            )}
          </dl>
        </section>
        <section class="kpi" aria-label="Performance">
          <h3>Performance</h3>
          <dl>
            <dt>Tokens/s</dt>
            <dd data-kpi="tps">{tps ? tps.toFixed(0) : "–"}</dd>
            <dt>Step time</dt>
            <dd>{stepMs ? `${stepMs.toFixed(0)} ms` : "–"}</dd>
            <dt>Eval time</dt>
            <dd>{evalSecs === undefined ? "–" : evalSecs < 60 ? `${evalSecs.toFixed(1)} s` : formatDuration(evalSecs * 1000)}</dd>
            <dt>Memory</dt>
            <dd data-kpi="memory" title="The trainer process's resident memory, measured at the last step">
              {rss ? `${formatBytes(rss[1] * 2 ** 20)} in use` : info.memoryEstimateMb ? `about ${formatBytes(Number(info.memoryEstimateMb) * 2 ** 20)} (estimate)` : "–"}
            </dd>
            {gpuMem && (
              <>
                <dt>GPU memory</dt>
                <dd>{formatBytes(gpuMem[1] * 2 ** 20)}</dd>
              </>
            )}
          </dl>
        </section>
        <section class="kpi" aria-label="Model">
          <h3>Model</h3>
          <dl>
            <dt>Architecture</dt>
            <dd>{String(info.architecture ?? "–")}</dd>
            <dt>Layers</dt>
            <dd>{String(info.layers ?? "–")}</dd>
            <dt>Parameters</dt>
            <dd>{info.parameters ? formatCount(Number(info.parameters)) : "–"}</dd>
            <dt>Trainable</dt>
            <dd>{info.trainableParameters ? formatCount(Number(info.trainableParameters)) : "–"}</dd>
            <dt>Device</dt>
            <dd data-kpi="device">{v.run.config.device}</dd>
          </dl>
        </section>
      </div>
      <p class="muted small" data-cache={cache}>
        Metrics {cache === "stale" ? "updated just now" : "up to date"} · {m.stats().bytesRead.toLocaleString("en")} bytes of events read
      </p>
      {damaged.map((e) => <p key={e} class="error">{e}</p>)}
    </div>
  );
}

function LogsPoller(props: { id: string; out: number; err: number; errors: number }) {
  const q = `out=${props.out}&err=${props.err}&errors=${props.errors}`;
  return <div id="logs-poller" hx-get={`/runs/${encodeURIComponent(props.id)}/fragments/logs?${q}`} hx-trigger="every 1s" hx-swap="outerHTML"></div>;
}

/**
 * Many tabs poll the same fragment every second; an answer is reused for half a second, so twenty
 * viewers cost about as much as one (they share the CPU with the trainer).
 */
const SHARED_MS = 500;
const shared = new Map<string, { at: number; status: number; body: string }>();

async function sharedFragment(c: Context, make: () => Response | Promise<Response>): Promise<Response> {
  const key = c.req.url;
  const hit = shared.get(key);
  if (hit && Date.now() - hit.at < SHARED_MS) {
    c.header("Vary", "HX-Request");
    return c.html(hit.body, hit.status as 200);
  }
  const res = await make();
  const body = await res.clone().text();
  if (shared.size > 2000) shared.clear();
  shared.set(key, { at: Date.now(), status: res.status, body });
  return res;
}

export function dashboardRoutes(service: TrainingService) {
  const app = new Hono();

  const view = (c: Context): RunView | Response => {
    service.reconcile();
    try {
      return service.get(c.req.param("id") ?? "");
    } catch {
      return c.notFound() as Response;
    }
  };

  app.get("/runs/:id", (c) => {
    const v = view(c);
    if (v instanceof Response) return v;
    const id = encodeURIComponent(v.id);
    const live = !isFinalState(v.status.state) || v.orphan;
    // The page carries the logs' tail; the poller continues from these offsets.
    const out = readLogChunk(path.join(v.dir, STDOUT_LOG), -1, { partial: !live });
    const err = readLogChunk(path.join(v.dir, STDERR_LOG), -1, { partial: !live });
    const errors = countErrorLines(out.text) + countErrorLines(err.text);
    return page(
      c,
      v.run.config.name,
      <>
        <h1>{v.run.config.name}</h1>
        <p class="muted">
          {v.run.config.method === "lora" ? `LoRA r=${v.run.config.lora.r}` : "Full fine-tuning"} of <code>{v.run.config.model}</code> on <code>{v.run.config.dataset.path}</code>
          {" "}
          · run <code>{v.id}</code>
        </p>
        <section class="panel" aria-label="Control">
          <div id="control" hx-get={`/runs/${id}/fragments/control`} hx-trigger={live ? "every 1s" : "none"}>
            <Control v={v} />
          </div>
        </section>
        <section class="panel" aria-label="Key figures">
          <div id="kpi" hx-get={`/runs/${id}/fragments/kpi`} hx-trigger={live ? "every 1s" : "none"}>
            <Kpi v={v} service={service} />
          </div>
        </section>
        <section class="panel" aria-label="Charts">
          <div class="grid">
            <Island name="MetricsChart" props={{ runId: v.id, title: "Loss", tags: ["train/loss", "eval/loss"], smoothing: 0.6, pollMs: 1000 }} />
            <Island name="MetricsChart" props={{ runId: v.id, title: "Learning rate", tags: ["train/learning_rate"], pollMs: 2000, zero: true }} />
            <Island name="MetricsChart" props={{ runId: v.id, title: "Gradient norm", tags: ["train/grad_norm"], pollMs: 2000 }} />
            <Island name="MetricsChart" props={{ runId: v.id, title: "Tokens per second", tags: ["train/tokens_per_second"], pollMs: 2000, zero: true }} />
          </div>
        </section>
        <section class="panel logs" aria-label="Logs">
          <h2>
            Logs <span id="log-errors" class="muted" data-errors={errors}>({errors} error line{errors === 1 ? "" : "s"})</span>
          </h2>
          <h3>stdout</h3>
          <pre id="log-stdout" tabIndex={0} aria-live="off">{out.text || (live ? "" : "(no output)")}</pre>
          <h3>stderr</h3>
          <pre id="log-stderr" tabIndex={0}>{err.text}</pre>
          {live && <LogsPoller id={v.id} out={out.next} err={err.next} errors={errors} />}
        </section>
        <section class="panel" aria-label="TensorBoard">
          <div id="tensorboard">
            <button type="button" hx-post={`/runs/${id}/tensorboard`} hx-target="#tensorboard">Open in TensorBoard</button>
          </div>
        </section>
        <ClusterForm run={v.id} />
      </>,
    );
  });

  app.get("/runs/:id/fragments/control", (c) =>
    sharedFragment(c, () => {
      const v = view(c);
      if (v instanceof Response) return v;
      return poll(v, c, <Control v={v} />);
    }));

  app.get("/runs/:id/fragments/kpi", (c) =>
    sharedFragment(c, () => {
      const v = view(c);
      if (v instanceof Response) return v;
      return poll(v, c, <Kpi v={v} service={service} />);
    }));

  app.get("/runs/:id/fragments/logs", (c) => sharedFragment(c, () => logsFragment(c)));

  // Starts the managed TensorBoard (over every run of the data dir) or says the command to run.
  app.post("/runs/:id/tensorboard", (c) => {
    const v = view(c);
    if (v instanceof Response) return v;
    const tb = service.ensureTensorBoard();
    if (tb.running) {
      const url = `${tb.url}?runFilter=${encodeURIComponent(v.id)}`;
      return fragment(
        c,
        <p data-tensorboard="running">
          TensorBoard is running: <a href={url} target="_blank" rel="noopener">open it</a> (it may take a few seconds to start).
        </p>,
      );
    }
    return fragment(
      c,
      <p data-tensorboard="command">
        {tb.reason}. Run it yourself: <code>{tb.command}</code>
      </p>,
    );
  });

  const logsFragment = (c: Context) => {
    const v = view(c);
    if (v instanceof Response) return v;
    const num = (k: string, d: number) => {
      const n = Number(c.req.query(k) ?? d);
      return Number.isSafeInteger(n) && n >= -1 ? n : d;
    };
    // Once the trainer has ended, its unfinished last line is final too.
    const ended = isFinalState(v.status.state) && !v.orphan;
    const out = readLogChunk(path.join(v.dir, STDOUT_LOG), num("out", -1), { partial: ended });
    const err = readLogChunk(path.join(v.dir, STDERR_LOG), num("err", -1), { partial: ended });
    const errors = num("errors", 0) + countErrorLines(err.text) + countErrorLines(out.text);
    const done = ended && out.next >= out.size && err.next >= err.size;
    return fragment(
      c,
      <>
        {!done && <LogsPoller id={v.id} out={out.next} err={err.next} errors={errors} />}
        {out.text && <div hx-swap-oob="beforeend:#log-stdout">{out.text}</div>}
        {err.text && <div hx-swap-oob="beforeend:#log-stderr">{err.text}</div>}
        <span id="log-errors" class={errors ? "error-count" : "muted"} hx-swap-oob="true" data-errors={errors}>
          ({errors} error line{errors === 1 ? "" : "s"})
        </span>
      </>,
      done ? STOP_POLLING : 200,
    );
  };

  return app;
}
