/** Starts Deno.serve with the app; resolves once listening (port 0 → the picked port). */
import type { AppSettings } from "../config/app.ts";
import { createApp } from "./app.tsx";

export interface RunningServer {
  port: number;
  finished: Promise<void>;
  shutdown(): Promise<void>;
}

export function startServer(settings: AppSettings): Promise<RunningServer> {
  const app = createApp({ settings });
  return new Promise((resolve, reject) => {
    try {
      const server = Deno.serve({
        hostname: settings.host,
        port: settings.port,
        // onListen runs before Deno.serve returns, so `server` is read on the next tick.
        onListen: ({ port }) => queueMicrotask(() => resolve({ port, finished: server.finished, shutdown: () => server.shutdown() })),
      }, app.fetch);
    } catch (e) {
      reject(e);
    }
  });
}
