/** `/inference`: the playground (Chat island), the models to try, and links to their actions (routes/api.ts). */
import { Hono } from "hono";
import { DeleteButton, fragment, Island, page } from "./_layout.tsx";
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
        <h2 id="models-h">Models</h2>
        <ModelsTable models={models()} />
      </>,
    );
  });

  // The models table alone, polled by itself: "Loaded" follows the model cache (a chat loads a model,
  // memory pressure or Unload drops one) and new runs' models appear without a reload.
  app.get("/inference/models", (c) => fragment(c, <ModelsTable models={models()} />));

  return app;
}

/** Every model with its kind, whether it is in memory now, and what can be done with it. */
function ModelsTable(props: { models: ModelCache }) {
  const cache = props.models;
  return (
    <div id="models" class="scroll-x" hx-get="/inference/models" hx-trigger="every 2s" hx-swap="outerHTML">
      <table class="models" aria-labelledby="models-h">
        <thead>
          <tr>
            <th scope="col">Model</th>
            <th scope="col">Kind</th>
            <th scope="col">Loaded</th>
            <th scope="col">
              <span class="sr-only">Actions</span>
            </th>
          </tr>
        </thead>
        <tbody>
          {cache.list().map((m) => {
            const loaded = cache.isLoaded(m.id);
            return (
              <tr data-model={m.id}>
                <td>
                  {m.label}
                  <br />
                  <small class="muted model-id">{m.id}</small>
                </td>
                <td data-label="Kind">{m.kind === "base" ? "base" : m.method === "full" ? `${m.kind}, full fine-tune` : `${m.kind}, LoRA adapter`}</td>
                <td data-label="Loaded" data-loaded={loaded ? "yes" : "no"}>{loaded ? "yes" : "no"}</td>
                <td class="model-actions">
                  <div class="cell-actions">
                    {loaded && <button type="button" hx-post={`/api/models/unload?id=${encodeURIComponent(m.id)}`} hx-swap="none">Unload</button>}
                    {m.runId && m.method !== "full" && <a class="button" href={`/api/export?model=${encodeURIComponent(m.id)}&as=adapter`}>Adapter (zip)</a>}
                    {m.runId && <a class="button" href={`/api/export?model=${encodeURIComponent(m.id)}&as=merged`}>{m.method === "full" ? "Model (zip)" : "Merged model (zip)"}</a>}
                    <a class="button" href={`/exports?model=${encodeURIComponent(m.id)}`}>Export…</a>
                    {m.kind === "checkpoint" && (
                      <DeleteButton url={`/api/runs/${encodeURIComponent(m.runId!)}/checkpoints/checkpoint-${m.step}`} confirm={`Delete checkpoint at step ${m.step}?`} />
                    )}
                  </div>
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </div>
  );
}
