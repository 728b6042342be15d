/** `/inference`: the playground. */
import { Hono } from "hono";
import { page } from "./_layout.tsx";
import type { AppDeps } from "./app.tsx";

export function inferenceRoutes(_deps: AppDeps) {
  const app = new Hono();
  app.get("/inference", (c) =>
    page(
      c,
      "Playground",
      <>
        <h1>Playground</h1>
        <p class="muted">Chat with a base model or one you tuned.</p>
      </>,
    ));
  return app;
}
