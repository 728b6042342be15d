/** `/inference`: the playground (Chat island), the models to try, and links to their actions (routes/api.ts). */
import { Hono } from "hono";
import { DeleteButton, Island, page } from "./_layout.tsx";
import type { AppDeps } from "./deps.ts";
import type { ModelCache } from "../engine/mod.ts";

export function inferenceRoutes(deps: AppDeps) {
  const app = new Hono();
  const models = () => deps.models as ModelCache;

  app.get("/inference", (c) => {
    const list = models().list();
    const asked = c.req.query("model");
    const model = list.some((m) => m.id === asked) ? asked! : list.find((m) => m.kind !== "base")?.id ?? "demo";
    return page(
      c,
      "Playground",
      <>
        <h1>Playground</h1>
        <p class="muted">Chat with a base model or one you tuned. Tick “side by side” to send the same conversation to two models.</p>
        <Island name="Chat" props={{ models: list.map((m) => ({ id: m.id, label: m.label })), model, compare: model === "demo" ? undefined : "demo" }} />
        <h2>Models</h2>
        <table>
          <thead>
            <tr><th scope="col">Model</th><th scope="col">Kind</th><th scope="col">Loaded</th><th scope="col"><span class="sr-only">Actions</span></th></tr>
          </thead>
          <tbody>
            {list.map((m) => (
              <tr>
                <td>{m.label}<br /><small class="muted">{m.id}</small></td>
                <td>{m.kind}</td>
                <td>{models().isLoaded(m.id) ? "yes" : "no"}</td>
                <td class="actions">
                  {models().isLoaded(m.id) && <button type="button" hx-post={`/api/models/unload?id=${encodeURIComponent(m.id)}`} hx-swap="none">Unload</button>}
                  {m.runId && <a class="button" href={`/api/export?model=${encodeURIComponent(m.id)}&as=adapter`}>Adapter (zip)</a>}
                  {m.runId && <a class="button" href={`/api/export?model=${encodeURIComponent(m.id)}&as=merged`}>Merged model (zip)</a>}
                  <a class="button" href={`/exports?model=${encodeURIComponent(m.id)}`}>Export…</a>
                  {m.kind === "checkpoint" && (
                    <DeleteButton url={`/api/runs/${encodeURIComponent(m.runId!)}/checkpoints/checkpoint-${m.step}`} confirm={`Delete checkpoint at step ${m.step}?`} />
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </>,
    );
  });

  return app;
}
