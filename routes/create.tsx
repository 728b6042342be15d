/** `/create`: choose the base model, the data and the method, then start a run. */
import { Hono } from "hono";
import { page } from "./_layout.tsx";
import type { AppDeps } from "./app.tsx";

export function createRoutes(_deps: AppDeps) {
  const app = new Hono();
  app.get("/create", (c) =>
    page(
      c,
      "Fine-tune a model",
      <>
        <h1>Fine-tune a model</h1>
        <p class="muted">Choose a base model, a dataset and a method.</p>
      </>,
    ));
  return app;
}
