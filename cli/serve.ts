/**
 * `gemma-tuner serve` (the default verb): the web app. The server module is imported only here, and it
 * loads ONNX Runtime only when a model is first needed, so startup stays fast.
 */
import { UsageError } from "./flags.ts";
import { defineVerb } from "./verb.ts";
import { loadAppSettings, VERSION } from "../config/app.ts";

export const serveVerb = defineVerb({
  name: "serve",
  usage: "gemma-tuner [serve] [--host 127.0.0.1] [--port 8080] [--data DIR] [--open] [--token T]",
  flags: {
    host: { kind: "string", help: "address to bind; anything but loopback needs --token", default: "127.0.0.1" },
    port: { kind: "number", help: "port (0 picks a free one)", default: 8080 },
    data: { kind: "string", help: "data directory (else $GEMMA_TUNER_HOME, else the platform default)", metavar: "DIR" },
    token: { kind: "string", help: "access token required on every request (or $GEMMA_TUNER_TOKEN)" },
    open: { kind: "boolean", help: "open the browser" },
  },
  async run(f) {
    let settings;
    try {
      settings = loadAppSettings({ host: f.host, port: f.port, data: f.data, token: f.token, open: f.open });
    } catch (e) {
      throw new UsageError(`gemma-tuner serve: refusing to start:\n${(e as Error).message}`);
    }
    const { startServer } = await import("../routes/server.ts");
    let server;
    try {
      server = await startServer(settings);
    } catch (e) {
      if (e instanceof Deno.errors.AddrInUse) {
        throw new UsageError(`gemma-tuner serve: port ${settings.port} on ${settings.host} is already in use; choose another with --port N (or --port 0 for a free one)`);
      }
      if (e instanceof Deno.errors.PermissionDenied) {
        throw new UsageError(`gemma-tuner serve: not allowed to bind ${settings.host}:${settings.port}; choose another --port (above 1024)`);
      }
      throw e;
    }
    const shown = settings.host.includes(":") ? `[${settings.host}]` : settings.host;
    const url = `http://${shown}:${server.port}/`;
    console.log(`gemma-tuner ${VERSION} serving ${url} (data: ${settings.dataDir})`);
    if (settings.token) console.log(`Open ${url}login?token=… with your token to sign in.`);
    if (settings.open) openBrowser(url);
    // Ctrl-C stops the server (and a managed TensorBoard); training processes keep running.
    const stop = () => void server.shutdown();
    for (const sig of ["SIGINT", "SIGTERM"] as const) {
      try {
        Deno.addSignalListener(sig, stop);
      } catch { /* not supported on this platform */ }
    }
    await server.finished;
    return 0;
  },
});

function openBrowser(url: string) {
  const cmd = Deno.build.os === "darwin" ? "open" : Deno.build.os === "windows" ? "explorer" : "xdg-open";
  try {
    new Deno.Command(cmd, { args: [url], stdout: "null", stderr: "null" }).spawn();
  } catch {
    console.log(`Open ${url} in your browser.`);
  }
}
