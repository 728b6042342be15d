/**
 * `/exports`: export a model of the playground (the demo model, a run's final model or checkpoint) as
 * a background job — one at a time, a subprocess of `gemma-tuner export` (engine/export/jobs.ts) — with
 * a polled progress fragment (bytes and tensors written, then "verifying in llama.cpp"), then the
 * verification result and the download links. Reached from a completed run's dashboard and from the
 * playground's models table.
 */
import { Hono } from "hono";
import type { Context } from "hono";
import * as fs from "node:fs";
import { z } from "zod";
import { formatBytes, fragment, page } from "./_layout.tsx";
import type { AppDeps } from "./deps.ts";
import { selfCommand } from "../config/app.ts";
import { ServiceError } from "../trainer/service.ts";
import { EXPORT_KINDS, EXPORT_QUANTS, ExportBusyError, type ExportJob, ExportJobs, type ExportKind } from "../engine/mod.ts";

const STOP_POLLING = 286;

const KIND_LABEL: Record<ExportKind, string> = {
  gguf: "GGUF + Ollama Modelfile (llama.cpp, Ollama, LM Studio)",
  "lora-gguf": "LoRA adapter as GGUF (applied to the base in llama.cpp)",
  adapter: "PEFT adapter (safetensors)",
  merged: "Merged Hugging Face checkpoint (safetensors)",
  onnx: "Browser ONNX folder (transformers.js)",
};

const StartForm = z.object({
  model: z.string().min(1, "choose a model").max(300),
  kind: z.enum(EXPORT_KINDS, { message: `kind must be one of ${EXPORT_KINDS.join(", ")}` }),
  quant: z.enum(EXPORT_QUANTS, { message: `quant must be one of ${EXPORT_QUANTS.join(", ")}` }).default("q8_0"),
});

const MODEL_ID = /^([A-Za-z0-9][A-Za-z0-9_.-]{0,127})\/(final|checkpoint-\d+)$/;

export function exportsRoutes(deps: AppDeps) {
  const app = new Hono();
  const jobs = new ExportJobs(deps.settings.dataDir, selfCommand);

  /** What a playground model id exports from, and which kinds it has (a full fine-tune has no adapter). */
  const sourceOf = (id: string) => {
    if (id === "demo") return { source: { model: "demo" }, label: "demo (base model)", kinds: ["gguf", "merged", "onnx"] as ExportKind[] };
    const m = MODEL_ID.exec(id);
    if (!m) throw new ServiceError(400, `"${id}" is not a model of the playground (expected demo, <run>/final or <run>/checkpoint-<step>)`);
    const v = deps.service.get(m[1]);
    const has = m[2] === "final" ? v.hasFinal : v.checkpoints.some((c) => `checkpoint-${c.step}` === m[2]);
    if (!has) throw new ServiceError(404, `Run ${v.id} has no ${m[2]}`);
    const kinds: ExportKind[] = v.run.config.method === "lora" ? ["gguf", "lora-gguf", "adapter", "merged", "onnx"] : ["gguf", "merged", "onnx"];
    return { source: { run: v.dir, checkpoint: m[2] }, label: `${v.run.config.name}: ${m[2] === "final" ? "final" : m[2]}`, kinds };
  };

  const jobOf = (c: Context): ExportJob => {
    const j = jobs.get(c.req.param("id") ?? "");
    if (!j) throw new ServiceError(404, `No export job "${c.req.param("id")}" (jobs are kept while the server runs)`);
    return j;
  };

  app.get("/exports", (c) => {
    const id = c.req.query("model");
    const chosen = id ? sourceOf(id) : null;
    const running = jobs.running();
    return page(
      c,
      "Export",
      <>
        <h1>Export</h1>
        <p class="muted">Every export runs in the background and is then loaded in its own runtime and compared with this app's engine; the result is shown with the files.</p>
        {chosen && (
          <section class="panel" aria-label="New export">
            <h2>{chosen.label}</h2>
            <form hx-post="/exports" hx-target="#export-job" hx-swap="innerHTML">
              <input type="hidden" name="model" value={id} />
              <fieldset>
                <legend>Format</legend>
                {chosen.kinds.map((k, i) => (
                  <label class="choice">
                    <input type="radio" name="kind" value={k} checked={i === 0} /> {KIND_LABEL[k]}
                  </label>
                ))}
              </fieldset>
              <label>
                GGUF encoding{" "}
                <select name="quant">
                  {EXPORT_QUANTS.map((q) => <option value={q} selected={q === "q8_0"}>{q}</option>)}
                </select>
              </label>
              <div class="actions">
                <button type="submit" class="primary" disabled={!!running}>Export</button>
                {running && <span class="muted">An export is running; one runs at a time.</span>}
              </div>
            </form>
          </section>
        )}
        <div id="export-job" aria-live="polite">{running && <JobPanel job={running} jobs={jobs} />}</div>
        <h2>Exports</h2>
        {jobs.list().length === 0 ? <p class="muted">None yet{chosen ? "" : ": choose a model in the playground or on a run's dashboard"}.</p> : (
          <table>
            <thead>
              <tr>
                <th scope="col">Model</th>
                <th scope="col">Format</th>
                <th scope="col">State</th>
                <th scope="col">Started</th>
              </tr>
            </thead>
            <tbody>
              {jobs.list().map((j) => (
                <tr>
                  <td>
                    <a href={`/exports/jobs/${encodeURIComponent(j.id)}`}>{j.label}</a>
                  </td>
                  <td>{j.kind}{j.quant ? ` ${j.quant}` : ""}</td>
                  <td>{stateText(j)}</td>
                  <td>{new Date(j.startedAt).toISOString().slice(0, 19).replace("T", " ")}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </>,
    );
  });

  app.post("/exports", async (c) => {
    const body = StartForm.parse(await c.req.parseBody());
    const s = sourceOf(body.model);
    if (!s.kinds.includes(body.kind)) throw new ServiceError(400, `${s.label} cannot be exported as ${body.kind}: it has no adapter (choose one of ${s.kinds.join(", ")})`);
    let job: ExportJob;
    try {
      job = jobs.start({ source: s.source, kind: body.kind, quant: body.kind === "gguf" ? body.quant : undefined, label: s.label });
    } catch (e) {
      if (e instanceof ExportBusyError) throw new ServiceError(409, e.message);
      throw e;
    }
    c.header("HX-Push-Url", `/exports/jobs/${encodeURIComponent(job.id)}`);
    if (!c.req.header("HX-Request")) return c.json(jobJson(job, jobs), 202);
    return fragment(c, <JobPanel job={job} jobs={jobs} />);
  });

  app.get("/exports/jobs/:id", (c) => {
    const job = jobOf(c);
    return page(
      c,
      `Export: ${job.label}`,
      (
        <>
          <h1>Export: {job.label}</h1>
          <div id="export-job" aria-live="polite">
            <JobPanel job={job} jobs={jobs} />
          </div>
          <p>
            <a href="/exports">All exports</a>
          </p>
        </>
      ),
    );
  });

  // The polled panel: answers 286 (stop polling) once the job has ended.
  app.get("/exports/jobs/:id/fragment", (c) => {
    const job = jobOf(c);
    return fragment(c, <JobPanel job={job} jobs={jobs} />, job.state === "running" ? 200 : STOP_POLLING);
  });

  app.get("/api/exports/:id", (c) => c.json(jobJson(jobOf(c), jobs)));

  // Downloads stream from disk with their length, so the browser shows progress from the first byte.
  app.get("/exports/jobs/:id/files/*", (c) => {
    const job = jobOf(c);
    const prefix = `/exports/jobs/${encodeURIComponent(job.id)}/files/`;
    const name = decodeURIComponent(c.req.path.slice(prefix.length));
    const f = jobs.file(job, name);
    if (!f) throw new ServiceError(404, `Export ${job.id} has no file "${name}"${job.state === "running" ? " yet" : ""}`);
    const file = fs.openSync(f.path, "r");
    const stream = new ReadableStream<Uint8Array>({
      pull(ctl) {
        const buf = new Uint8Array(1 << 20);
        const n = fs.readSync(file, buf);
        if (n > 0) ctl.enqueue(buf.subarray(0, n));
        else (fs.closeSync(file), ctl.close());
      },
      cancel() {
        fs.closeSync(file);
      },
    });
    const base = name.split("/").at(-1)!.replace(/"/g, "");
    return new Response(stream, {
      headers: {
        "Content-Type": name.endsWith(".md") || base === "Modelfile" || name.endsWith(".json") ? "text/plain; charset=utf-8" : "application/octet-stream",
        "Content-Length": String(f.bytes),
        "Content-Disposition": `attachment; filename="${base}"`,
      },
    });
  });

  return app;
}

function stateText(j: ExportJob): string {
  if (j.state === "running") return j.progress?.message ?? "running";
  if (j.state === "failed") return "failed";
  const v = verificationOf(j);
  return v ? (v.pass ? "done, verified" : "done, verification failed") : "done";
}

/** The verification in one shape for GGUF (verify.ts) and ONNX (onnx_probe.ts) results. */
function verificationOf(
  j: ExportJob,
): { runtime: string; maxAbsDnll: number; bound: number; greedyEqual: boolean; pass: boolean; error?: string; extra: [string, string][] } | null {
  const v = j.result?.verification as Record<string, unknown> | null | undefined;
  if (!v) return null;
  const num = (x: unknown) => (typeof x === "number" ? x : NaN);
  const extra: [string, string][] = [];
  if (typeof v.max_abs_dnll_same_weights === "number") {
    extra.push(["max |ΔNLL| on the stored weights", `${v.max_abs_dnll_same_weights.toExponential(2)} (bound ${v.same_weights_bound})`]);
  }
  if (typeof v.adapter_effect_max_abs_dnll === "number") extra.push(["adapter effect (base vs merged)", v.adapter_effect_max_abs_dnll.toExponential(2)]);
  const tok = v.tokenizer_equal ?? v.tokenizerEqual;
  if (typeof tok === "boolean") extra.push(["tokenizer equal", tok ? "yes" : "no"]);
  return {
    runtime: String(v.runtime ?? ""),
    maxAbsDnll: num(v.max_abs_dnll ?? v.maxAbsNllDiff),
    bound: num(v.bound),
    greedyEqual: (v.greedy_equal ?? v.greedyEqual) === true,
    pass: v.pass === true,
    error: typeof v.error === "string" ? v.error : undefined,
    extra,
  };
}

function jobJson(j: ExportJob, jobs: ExportJobs) {
  return {
    id: j.id,
    label: j.label,
    kind: j.kind,
    quant: j.quant,
    state: j.state,
    progress: j.progress,
    error: j.error,
    verification: j.result?.verification ?? null,
    files: jobs.files(j).map((f) => ({
      ...f,
      url: j.state === "running" ? null : `/exports/jobs/${encodeURIComponent(j.id)}/files/${f.name.split("/").map(encodeURIComponent).join("/")}`,
    })),
  };
}

function JobPanel(props: { job: ExportJob; jobs: ExportJobs }) {
  const { job, jobs } = props;
  const id = encodeURIComponent(job.id);
  const files = jobs.files(job);
  const p = job.progress;
  const written = files.reduce((s, f) => s + f.bytes, 0);
  const v = verificationOf(job);
  return (
    <section
      class="panel"
      aria-label="Export job"
      data-export-state={job.state}
      {...(job.state === "running" ? { "hx-get": `/exports/jobs/${id}/fragment`, "hx-trigger": "every 1s", "hx-swap": "outerHTML" } : {})}
    >
      <h2>{job.label}: {job.kind}{job.quant ? ` ${job.quant}` : ""}</h2>
      {job.state === "running" && (
        <div role="status" data-phase={p?.phase}>
          <p>{p?.message ?? "running"}{p?.phase === "verifying" ? "…" : ""}</p>
          {p?.phase === "writing" && p.totalBytes ? <progress max={p.totalBytes} value={p.bytes ?? 0}>{Math.round((100 * (p.bytes ?? 0)) / p.totalBytes)}%</progress> : null}
          <p class="muted small" data-written={written}>
            {p?.phase === "writing" && p.totalBytes
              ? `${formatBytes(p.bytes ?? 0)} of ${formatBytes(p.totalBytes)}${p.totalTensors ? ` · ${p.tensors} of ${p.totalTensors} tensors` : ""}`
              : `${formatBytes(written)} written`} · {Math.round((Date.now() - job.startedAt) / 1000)} s
          </p>
        </div>
      )}
      {job.state === "failed" && <p class="error" role="alert">Export failed: {job.error}</p>}
      {v && (
        <div data-verification={v.pass ? "pass" : "fail"}>
          <h3>
            Verification in {v.runtime}: <strong>{v.pass ? "pass" : "FAIL"}</strong>
          </h3>
          <dl>
            <dt>max |ΔNLL| vs this app's engine</dt>
            <dd>{Number.isFinite(v.maxAbsDnll) ? v.maxAbsDnll.toExponential(2) : "–"} (bound {v.bound})</dd>
            <dt>greedy tokens equal</dt>
            <dd>{v.greedyEqual ? "yes" : "no"}</dd>
            {v.extra.map(([k, x]) => (
              <>
                <dt>{k}</dt>
                <dd>{x}</dd>
              </>
            ))}
          </dl>
          {v.error && <p class="error">{v.error}</p>}
        </div>
      )}
      {job.state === "done" && !v && job.kind !== "adapter" && job.kind !== "merged" && <p class="warning">Not verified.</p>}
      {job.state !== "running" && files.length > 0 && (
        <>
          <h3>Files</h3>
          <ul class="files">
            {files.map((f) => (
              <li>
                <a href={`/exports/jobs/${id}/files/${f.name.split("/").map(encodeURIComponent).join("/")}`} download>{f.name}</a>{" "}
                <span class="muted">({formatBytes(f.bytes)})</span>
              </li>
            ))}
          </ul>
          <p class="muted small">
            On this machine: <code>{job.filesDir}</code>
          </p>
        </>
      )}
    </section>
  );
}
