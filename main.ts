/**
 * gemma-tuner: one executable, many verbs. `serve` (the default) starts the web app; the others are
 * the CLI of DESIGN.md. Engine verbs are imported lazily so `serve` starts without loading ONNX Runtime.
 */
import { flagHelp, parseFlags, UsageError } from "./config/cli.ts";
import { loadAppSettings, VERSION } from "./config/app.ts";

type Verb = (args: string[]) => Promise<number>;

const VERBS: Record<string, { help: string; run: Verb }> = {
  serve: { help: "start the web app (default)", run: serveCommand },
  train: { help: "train a run: --config FILE.json [--data DIR] or --run RUN_DIR", run: async (a) => (await import("./trainer/worker.ts")).trainCommand(a) },
  score: { help: "token NLLs (and --grad norms) of a sequence under a model", run: async (a) => (await import("./engine/score.ts")).scoreCommand(a) },
  generate: { help: "generate text with a model (and adapter)", run: async (a) => (await import("./engine/generate.ts")).generateCommand(a) },
  "init-model": { help: "write a random-init Gemma checkpoint (tiny or real-size shapes)", run: async (a) => (await import("./engine/init_model.ts")).initModelCommand(a) },
  export: { help: "export a run's adapter, merged model or ONNX decoder", run: async (a) => (await import("./engine/export.ts")).exportCommand(a) },
  bench: { help: "time one training step of a model shape; prints JSON", run: async (a) => (await import("./engine/bench.ts")).benchCommand(a) },
};

function usage(): string {
  const lines = [
    `gemma-tuner ${VERSION}: fine-tune Gemma models locally, watch the run, chat with the result.`,
    "",
    "Usage: gemma-tuner [VERB] [FLAGS]      (gemma-tuner VERB --help for a verb's flags)",
    "",
    "Verbs:",
  ];
  for (const [name, v] of Object.entries(VERBS)) lines.push(`  ${name.padEnd(12)}${v.help}`);
  return lines.join("\n");
}

const SERVE_FLAGS = {
  host: { kind: "string" as const, help: "address to bind; anything but loopback needs --token", default: "127.0.0.1" },
  port: { kind: "number" as const, help: "port (0 picks a free one)", default: 8080 },
  data: { kind: "string" as const, help: "data directory (else $GEMMA_TUNER_HOME, else the platform default)" },
  token: { kind: "string" as const, help: "access token required on every request (or $GEMMA_TUNER_TOKEN)" },
  open: { kind: "boolean" as const, help: "open the browser" },
  help: { kind: "boolean" as const, help: "show this help" },
};

async function serveCommand(args: string[]): Promise<number> {
  const f = parseFlags("serve", args, SERVE_FLAGS);
  if (f.help) {
    console.log(flagHelp("gemma-tuner [serve] [--host 127.0.0.1] [--port 8080] [--data DIR] [--open] [--token T]", SERVE_FLAGS));
    return 0;
  }
  let settings;
  try {
    settings = loadAppSettings({
      host: f.host as string,
      port: f.port as number,
      data: f.data as string | undefined,
      token: f.token as string | undefined,
      open: f.open as boolean | undefined,
    });
  } catch (e) {
    console.error(`gemma-tuner serve: refusing to start:\n${(e as Error).message}`);
    return 2;
  }
  const { startServer } = await import("./routes/server.ts");
  try {
    const server = await startServer(settings);
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
  } catch (e) {
    if (e instanceof Deno.errors.AddrInUse) {
      console.error(`gemma-tuner serve: port ${settings.port} on ${settings.host} is already in use; choose another with --port N (or --port 0 for a free one)`);
      return 2;
    }
    if (e instanceof Deno.errors.PermissionDenied) {
      console.error(`gemma-tuner serve: not allowed to bind ${settings.host}:${settings.port}; choose another --port (above 1024)`);
      return 2;
    }
    throw e;
  }
}

function openBrowser(url: string) {
  const cmd = Deno.build.os === "darwin" ? "open" : Deno.build.os === "windows" ? "explorer" : "xdg-open";
  try {
    new Deno.Command(cmd, { args: [url], stdout: "null", stderr: "null" }).spawn();
  } catch {
    console.log(`Open ${url} in your browser.`);
  }
}

export async function main(argv: string[]): Promise<number> {
  if (argv[0] === "--help" || argv[0] === "-h" || argv[0] === "help") {
    console.log(usage());
    return 0;
  }
  if (argv[0] === "--version") {
    console.log(VERSION);
    return 0;
  }
  const verbName = argv.length && !argv[0].startsWith("-") ? argv[0] : "serve";
  const rest = verbName === "serve" && argv[0] !== "serve" ? argv : argv.slice(1);
  const verb = VERBS[verbName];
  if (!verb) {
    console.error(`gemma-tuner: unknown verb "${verbName}". Verbs: ${Object.keys(VERBS).join(", ")} (see gemma-tuner --help)`);
    return 2;
  }
  try {
    return await verb.run(rest);
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(e.message);
      return 2;
    }
    console.error(`gemma-tuner ${verbName}: ${(e as Error).message ?? e}`);
    return 1;
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
