/**
 * Command-line flag parsing shared by every verb (cli/verb.ts declares a verb with these).
 *
 * A verb declares its flags once; anything else on the command line is refused with a message that
 * names the flag and lists the ones the verb knows, so a typo never silently does the default.
 */
import { type Device, DEVICES } from "../engine/device.ts";
import { BASE_PRECISIONS, type BasePrecision } from "../engine/quant/blocks.ts";

export type FlagKind = "string" | "number" | "boolean";

export interface FlagSpec {
  kind: FlagKind;
  /** One line for --help. */
  help: string;
  default?: string | number | boolean;
  /** The value's name in help and errors ("DIR", "FILE.json"); default VALUE or N. */
  metavar?: string;
}

export type FlagValues = Record<string, string | number | boolean | undefined>;

/** Thrown for a command line that cannot be used; main.ts prints the message and exits 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/**
 * Parses `--name value`, `--name=value` and boolean `--name` flags for `verb`.
 * Positional arguments are refused: every verb here takes flags only.
 */
export function parseFlags(
  verb: string,
  args: string[],
  spec: Record<string, FlagSpec>,
): FlagValues {
  const out: FlagValues = {};
  for (const [name, s] of Object.entries(spec)) out[name] = s.default;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (!arg.startsWith("--")) {
      throw new UsageError(`${verb}: unexpected argument "${arg}"; flags start with "--" (see "gemma-tuner ${verb} --help")`);
    }
    const eq = arg.indexOf("=");
    const name = eq >= 0 ? arg.slice(2, eq) : arg.slice(2);
    const s = spec[name];
    if (!s) {
      const known = Object.keys(spec).map((k) => `--${k}`).join(", ");
      throw new UsageError(`${verb}: unknown flag "--${name}"; known flags: ${known}`);
    }
    let raw: string | undefined = eq >= 0 ? arg.slice(eq + 1) : undefined;
    if (s.kind === "boolean") {
      if (raw === undefined) out[name] = true;
      else if (raw === "true" || raw === "1") out[name] = true;
      else if (raw === "false" || raw === "0") out[name] = false;
      else throw new UsageError(`${verb}: --${name} takes true or false, got "${raw}"`);
      continue;
    }
    if (raw === undefined) {
      if (i + 1 >= args.length) throw new UsageError(`${verb}: --${name} needs a value`);
      raw = args[++i];
    }
    if (s.kind === "number") {
      const n = Number(raw);
      if (raw.trim() === "" || !Number.isFinite(n)) {
        throw new UsageError(`${verb}: --${name} must be a number, got "${raw}"`);
      }
      out[name] = n;
    } else {
      out[name] = raw;
    }
  }
  return out;
}

/** `--name METAVAR` as help and errors show a flag. */
export function flagSyntax(name: string, s: FlagSpec): string {
  const value = s.kind === "boolean" ? "" : ` ${s.metavar ?? (s.kind === "number" ? "N" : "VALUE")}`;
  return `--${name}${value}`;
}

/** The --help text of a verb: its usage line and one line per flag. */
export function flagHelp(usage: string, spec: Record<string, FlagSpec>): string {
  const lines = [usage, "", "Flags:"];
  for (const [name, s] of Object.entries(spec)) {
    const def = s.default === undefined ? "" : ` (default ${s.default})`;
    lines.push(`  ${flagSyntax(name, s)}`.padEnd(28) + s.help + def);
  }
  return lines.join("\n");
}

/** `--ids 2,105,…`: token ids used exactly as given, each checked. */
export function parseIds(verb: string, raw: string): number[] {
  return raw.split(",").map((part, i) => {
    const s = part.trim();
    const n = Number(s);
    if (s === "" || !Number.isInteger(n) || n < 0) throw new UsageError(`${verb}: --ids item ${i} ("${s}") is not a token id`);
    return n;
  });
}

/** The flags of every verb that runs a model: --device and where CUDA's provider libraries are. */
export const DEVICE_FLAGS = {
  device: { kind: "string", help: "cpu | webgpu | cuda", default: "cpu" },
  "ort-providers": { kind: "string", help: "folder with ORT's CUDA provider libraries (see setup-cuda)", metavar: "DIR" },
} as const satisfies Record<string, FlagSpec>;

/**
 * A --device flag value, or a UsageError naming the choices. --ort-providers goes into the
 * environment, where engine/devices.ts reads it (and trainer processes inherit it).
 */
export function parseDevice(verb: string, value: unknown, providers?: string): Device {
  const d = String(value) as Device;
  if (!DEVICES.includes(d)) throw new UsageError(`${verb}: --device must be one of ${DEVICES.join(", ")}, got "${d}"`);
  if (providers) Deno.env.set("GEMMA_TUNER_ORT_PROVIDERS", providers);
  return d;
}

/** --base-precision on the verbs that load a model (docs/QUANT.md): the frozen base's weights. */
export const BASE_PRECISION_FLAG = {
  kind: "string",
  help: "frozen base weights: fp32 | bf16 | int8 | int4 (as a LoRA run holds them; docs/QUANT.md)",
  default: "fp32",
} as const satisfies FlagSpec;

/** A --base-precision value, or a UsageError naming the flag and the choices (as bench and train refuse it). */
export function parseBasePrecision(verb: string, value: unknown): BasePrecision {
  const p = String(value) as BasePrecision;
  if (!BASE_PRECISIONS.includes(p)) throw new UsageError(`${verb}: --base-precision must be ${BASE_PRECISIONS.join(", ")}, got "${p}"`);
  return p;
}
