/**
 * gemma-tuner: one executable, many verbs. `serve` (the default) starts the web app; the others are
 * the CLI of DESIGN.md. The verbs are in cli/ (the table is cli/mod.ts, imported lazily); this file
 * dispatches and is the one place that turns errors into exit codes.
 */
import { UsageError } from "./cli/flags.ts";
import { VERBS } from "./cli/mod.ts";
import { VERSION } from "./config/app.ts";
import { HEAP_ENV, limitHeapRetention } from "./engine/malloc.ts";

/** Exit codes: 0 done, 1 the work failed, 2 the command line cannot be used (nothing was done). */
export const EXIT = { ok: 0, failed: 1, usage: 2 } as const;

function usage(): string {
  const lines = [
    `gemma-tuner ${VERSION}: fine-tune Gemma models locally, watch the run, chat with the result.`,
    "",
    "Usage: gemma-tuner [VERB] [FLAGS]      (gemma-tuner VERB --help for a verb's flags)",
    "",
    "Verbs:",
  ];
  for (const [name, v] of Object.entries(VERBS)) lines.push(`  ${name.padEnd(12)}${v.summary}`);
  return lines.join("\n");
}

/** The exit code for an error a verb threw, and the message to print. */
export function exitFor(verb: string, e: unknown): { code: number; message: string } {
  if (e instanceof UsageError) return { code: EXIT.usage, message: e.message };
  // Engine errors (RangeError for a bad value, TypeError, DeviceError, SafetensorsError, …) name
  // what is wrong themselves; the verb is added so a script's log says which command failed.
  return { code: EXIT.failed, message: `gemma-tuner ${verb}: ${(e as Error)?.message ?? e}` };
}

export async function main(argv: string[]): Promise<number> {
  if (argv[0] === "--help" || argv[0] === "-h" || argv[0] === "help") {
    console.log(usage());
    return EXIT.ok;
  }
  if (argv[0] === "--version") {
    console.log(VERSION);
    return EXIT.ok;
  }
  const verbName = argv.length && !argv[0].startsWith("-") ? argv[0] : "serve";
  const rest = verbName === "serve" && argv[0] !== "serve" ? argv : argv.slice(1);
  const entry = VERBS[verbName];
  if (!entry) {
    console.error(`gemma-tuner: unknown verb "${verbName}". Verbs: ${Object.keys(VERBS).join(", ")} (see gemma-tuner --help)`);
    return EXIT.usage;
  }
  try {
    return await (await entry.load()).run(rest);
  } catch (e) {
    const { code, message } = exitFor(verbName, e);
    console.error(message);
    return code;
  }
}

if (import.meta.main) {
  // An explicit GEMMA_TUNER_HEAP=lean keeps the heap lean from the start (engine/malloc.ts); otherwise the
  // trainer decides from its run's memory estimate, and every other verb keeps glibc's default.
  if (Deno.env.get(HEAP_ENV) === "lean") limitHeapRetention();
  Deno.exit(await main(Deno.args));
}
