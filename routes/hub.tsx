/**
 * Models from the Hugging Face Hub, in the app (docs/HUB.md): `/hub` is a form (repo, revision, an
 * optional token); "List files" (`POST /hub/plan`) answers the files that will be fetched, their sizes
 * and the free disk space; Download (`POST /hub/download`) checks again, starts a background job and
 * answers its progress fragment, which polls `GET /hub/jobs/:id` every second until it ends; Cancel is
 * `POST /hub/jobs/:id/cancel`. A finished download is in the HF cache, so the create view lists it.
 *
 * Refusals (not ORG/NAME, unknown repo, gated, not a Gemma, disk too small) are thrown as 4xx and the
 * htmx error rule (islands/_errors.ts) shows them beside the form (`data-error-target`). The token is
 * only ever read from the request: it is never rendered back, stored, or put in a job's fragment.
 */
import { type Context, Hono } from "hono";
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { fragment, page } from "./_layout.tsx";
import type { AppDeps } from "./deps.ts";
import { hubSettings } from "../config/app.ts";
import { downloadRepo, ensureSpace, freeBytesAt, HubError, type HubOptions, planDownload, type RepoPlan } from "../engine/hub.ts";
import * as fs from "node:fs";
import * as path from "node:path";

type JobState = "running" | "completed" | "failed" | "cancelled";

interface Job {
  id: string;
  repo: string;
  revision: string;
  state: JobState;
  file: string;
  doneBytes: number;
  totalBytes: number;
  error?: string;
  dir?: string;
  ctl: AbortController;
}

const STATUS: Record<string, ContentfulStatusCode> = { "not-found": 404, gated: 403, "not-gemma": 422, "disk-full": 400, cancelled: 409 };

/** A HubError as the 4xx the error rule shows beside the form (5xx only for a Hub we cannot reach). */
function refusal(e: unknown): unknown {
  if (e instanceof HubError) return new HTTPException(STATUS[e.kind] ?? 502, { message: e.message });
  return e;
}

function mb(n: number): string {
  return n >= 1 << 30 ? `${(n / (1 << 30)).toFixed(2)} GB` : n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MB` : n >= 1024 ? `${(n / 1024).toFixed(1)} kB` : `${n} B`;
}

function HubForm() {
  return (
    <div data-error-target="#hub-error">
      <form id="hub-form" class="panel" hx-post="/hub/plan" hx-target="#hub-plan" autocomplete="off">
        <label for="hub-repo">Model repository</label>
        <input id="hub-repo" name="repo" type="text" size={40} required placeholder="google/gemma-3-270m-it" aria-describedby="hub-error" />
        <p class="muted">ORG/NAME, as in the model page's address on huggingface.co.</p>
        <label for="hub-revision">Revision</label>
        <input id="hub-revision" name="revision" type="text" size={20} placeholder="main" />
        <p class="muted">A branch, tag or commit; main when empty.</p>
        <label for="hub-token">Access token (gated models only)</label>
        <input id="hub-token" name="token" type="password" size={40} autocomplete="off" placeholder="hf_… (default: HF_TOKEN or the saved login)" />
        <p class="muted">
          Gemma models are gated: sign in on the model's page, accept the licence ("Acknowledge license"), then create a read token under Settings → Access Tokens. The token is
          sent to the Hub only; it is not stored here.
        </p>
        <p class="actions">
          <button type="submit" class="primary">List files</button>
        </p>
      </form>
      <div id="hub-error" role="alert"></div>
      <div id="hub-plan" aria-live="polite"></div>
      <div id="hub-job-slot" aria-live="polite"></div>
    </div>
  );
}

/** Sent with every good answer to the form: clears an earlier refusal shown beside it (out of band). */
const CLEAR_ERROR = <div id="hub-error" role="alert" hx-swap-oob="true"></div>;

function PlanView(props: { plan: RepoPlan; free: number; cacheDir: string }) {
  const p = props.plan;
  const have = (etag: string) => fs.existsSync(path.join(p.repoDir, "blobs", etag));
  return (
    <section class="panel hub-plan" aria-labelledby="h-hub-plan">
      <h2 id="h-hub-plan">
        {p.repo} at {p.revision} <code>{p.sha.slice(0, 7)}</code>
      </h2>
      <p>
        A <code>{p.modelType}</code> model{p.gated ? " (gated: your token has access)" : ""}: {p.files.length} files, {mb(p.totalBytes)}; {mb(p.neededBytes)} still to fetch.{" "}
        Free space in <code>{props.cacheDir}</code>: <span id="hub-free">{mb(props.free)}</span>.
      </p>
      <div class="scroll-x">
        <table class="hub-files">
          <thead>
            <tr>
              <th scope="col">File</th>
              <th scope="col">Size</th>
              <th scope="col">In the cache</th>
            </tr>
          </thead>
          <tbody>
            {p.files.map((f) => (
              <tr>
                <td>
                  <code>{f.path}</code>
                </td>
                <td>{mb(f.size)}</td>
                <td>{have(f.etag) ? "yes" : "no"}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <p class="actions">
        <button type="button" class="primary" hx-post="/hub/download" hx-include="#hub-form" hx-target="#hub-job-slot">Download</button>
      </p>
    </section>
  );
}

function JobView(props: { job: Job }) {
  const j = props.job;
  const pct = j.totalBytes ? Math.min(100, (100 * j.doneBytes) / j.totalBytes) : j.state === "completed" ? 100 : 0;
  const polling = j.state === "running";
  return (
    <div
      id="hub-job"
      class="panel hub-job"
      data-state={j.state}
      hx-get={polling ? `/hub/jobs/${j.id}` : undefined}
      hx-trigger={polling ? "every 1s" : undefined}
      hx-swap={polling ? "outerHTML" : undefined}
    >
      <p role="status">
        {j.state === "running" && <>Downloading {j.repo}: {j.file ? <code>{j.file}</code> : "starting"}, {mb(j.doneBytes)} of {mb(j.totalBytes)} ({pct.toFixed(1)}%)</>}
        {j.state === "completed" && (
          <>
            Downloaded {j.repo} ({mb(j.totalBytes)}) into <code>{j.dir}</code>. It is in the model list of <a href="/create">Fine-tune</a> now.
          </>
        )}
        {j.state === "cancelled" && <>Download of {j.repo} cancelled; the partial file was removed.</>}
        {j.state === "failed" && <>Download of {j.repo} stopped.</>}
      </p>
      <progress max={100} value={pct.toFixed(1)} aria-label={`Download of ${j.repo}`}>{pct.toFixed(0)}%</progress>
      {j.error && <p class="field-error" role="alert">{j.error}</p>}
      {polling && (
        <p class="actions">
          <button type="button" hx-post={`/hub/jobs/${j.id}/cancel`} hx-target="#hub-job" hx-swap="outerHTML">Cancel</button>
        </p>
      )}
      {(j.state === "failed" || j.state === "cancelled") && <p class="muted">Download again to resume: files already fetched are kept.</p>}
    </div>
  );
}

export function hubRoutes(deps: AppDeps) {
  const app = new Hono();
  const jobs = new Map<string, Job>();

  /** The form's repo/revision/token over the environment's endpoint, token and cache (HF_*). */
  async function options(c: Context): Promise<HubOptions> {
    const f = (await c.req.parseBody()) as Record<string, string | File>;
    const text = (k: string) => (typeof f[k] === "string" ? (f[k] as string).trim() : "");
    const hub = hubSettings();
    const repo = text("repo");
    if (!repo) throw new HTTPException(400, { message: "Write the model's repository as ORG/NAME, e.g. google/gemma-3-270m-it" });
    return { repo, revision: text("revision") || undefined, token: text("token") || hub.token, endpoint: hub.endpoint, cacheDir: hub.cacheDir, freeBytes: deps.hubFreeBytes };
  }

  app.get("/hub", (c) =>
    page(
      c,
      "Download from the Hub",
      <>
        <h1>Download a model from the Hugging Face Hub</h1>
        <p class="muted hub-intro">
          Into the standard Hugging Face cache (<code>{hubSettings().cacheDir}</code>), so transformers and other tools reuse it. Only the safetensors weights, config and tokenizer
          are fetched; an interrupted download resumes.
        </p>
        <HubForm />
      </>,
    ));

  app.post("/hub/plan", async (c) => {
    const o = await options(c);
    try {
      const plan = await planDownload(o);
      return fragment(
        c,
        <>
          <PlanView plan={plan} free={(o.freeBytes ?? freeBytesAt)(o.cacheDir)} cacheDir={o.cacheDir} />
          {CLEAR_ERROR}
        </>,
      );
    } catch (e) {
      throw refusal(e);
    }
  });

  app.post("/hub/download", async (c) => {
    const o = await options(c);
    const busy = [...jobs.values()].find((j) => j.repo === o.repo && j.state === "running");
    if (busy) {
      return fragment(
        c,
        <>
          <JobView job={busy} />
          {CLEAR_ERROR}
        </>,
      );
    }
    let plan: RepoPlan;
    try {
      plan = await planDownload(o);
      ensureSpace(o, plan);
    } catch (e) {
      throw refusal(e);
    }
    const job: Job = {
      id: crypto.randomUUID(),
      repo: o.repo,
      revision: plan.revision,
      state: "running",
      file: "",
      doneBytes: plan.totalBytes - plan.neededBytes,
      totalBytes: plan.totalBytes,
      ctl: new AbortController(),
    };
    jobs.set(job.id, job);
    for (const [id, j] of jobs) if (jobs.size > 20 && j.state !== "running") jobs.delete(id);
    // Not awaited: the request answers the progress fragment at once and the fragment polls.
    downloadRepo({ ...o, signal: job.ctl.signal, onProgress: (p) => Object.assign(job, { file: p.file, doneBytes: p.doneBytes, totalBytes: p.totalBytes }) }, plan)
      .then((r) => Object.assign(job, { state: "completed", dir: r.dir, doneBytes: r.totalBytes }))
      .catch((e) => {
        const cancelled = e instanceof HubError && e.kind === "cancelled";
        Object.assign(job, {
          state: cancelled ? "cancelled" : "failed",
          error: cancelled ? undefined : e instanceof HubError ? e.message : `Download failed: ${(e as Error).message}`,
        });
        if (!(e instanceof HubError)) console.error(`hub download ${o.repo}:`, e);
      });
    return fragment(
      c,
      <>
        <JobView job={job} />
        {CLEAR_ERROR}
      </>,
    );
  });

  const jobOf = (id: string) => {
    const j = jobs.get(id);
    if (!j) throw new HTTPException(404, { message: "No such download (the server restarted?): start it again from the form" });
    return j;
  };

  app.get("/hub/jobs/:id", (c) => {
    const j = jobOf(c.req.param("id"));
    if (!c.req.header("HX-Request") && c.req.header("Accept")?.includes("json")) {
      const { ctl: _ctl, ...rest } = j;
      return c.json(rest);
    }
    return fragment(c, <JobView job={j} />);
  });

  app.post("/hub/jobs/:id/cancel", (c) => {
    const j = jobOf(c.req.param("id"));
    if (j.state === "running") j.ctl.abort();
    return fragment(c, <JobView job={j} />);
  });

  return app;
}
