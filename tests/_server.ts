/** Starts the real app on a free loopback port with a temporary data dir, for HTTP and browser tests. */
import * as fs from "node:fs";
import { type AppSettings, loadAppSettings } from "../config/app.ts";
import { startServer } from "../routes/server.ts";

export async function withServer<T>(
  fn: (base: string, dataDir: string) => Promise<T>,
  o: { token?: string; dataDir?: string; settings?: Partial<AppSettings> } = {},
): Promise<T> {
  const dataDir = o.dataDir ?? fs.mkdtempSync("/tmp/gt-data-");
  const settings = { ...loadAppSettings({ host: "127.0.0.1", port: 0, data: dataDir, token: o.token }), ...o.settings };
  const server = await startServer(settings);
  try {
    return await fn(`http://127.0.0.1:${server.port}`, dataDir);
  } finally {
    await server.shutdown();
  }
}
