/** Starts Deno.serve with the app; resolves once listening (port 0 → the picked port). */
import type { AppSettings } from "../config/app.ts";
import { createApp } from "./app.tsx";
import type { AppDeps } from "./deps.ts";
import { TrainingService } from "../trainer/service.ts";

export interface RunningServer {
  port: number;
  service: TrainingService;
  finished: Promise<void>;
  shutdown(): Promise<void>;
}

export function startServer(settings: AppSettings, opts: { intervalMs?: number } = {}): Promise<RunningServer> {
  const service = new TrainingService(settings.dataDir, { graceMs: settings.abortGraceSeconds * 1000, intervalMs: opts.intervalMs });
  service.start();
  const deps: AppDeps = { settings, service };
  const app = createApp(deps);
  return new Promise((resolve, reject) => {
    try {
      const server = Deno.serve({
        hostname: settings.host,
        port: settings.port,
        // onListen runs before Deno.serve returns, so `server` is read on the next tick.
        onListen: ({ port }) =>
          queueMicrotask(() =>
            resolve({
              port,
              service,
              finished: server.finished,
              shutdown: async () => {
                await server.shutdown();
                service.stop();
                deps.models?.close();
              },
            })
          ),
      }, app.fetch);
    } catch (e) {
      reject(e);
    }
  });
}
