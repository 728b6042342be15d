/**
 * One declaration per verb: its flags, help text, required flags and exclusive choices. `defineVerb`
 * turns that into the `run(args)` that main.ts dispatches to, so every verb refuses unknown flags,
 * answers --help and names a missing flag the same way. A verb's body gets typed values.
 */
import { flagHelp, type FlagSpec, type FlagValues, parseFlags, UsageError } from "./flags.ts";

type ValueOf<S extends FlagSpec> = S["kind"] extends "number" ? number : S["kind"] extends "boolean" ? boolean : string;

/** Parsed flags: a flag with a default always has a value, a required one is checked before `run`. */
export type Values<F extends Record<string, FlagSpec>, R extends keyof F> =
  & { [K in keyof F]: F[K] extends { default: unknown } ? ValueOf<F[K]> : ValueOf<F[K]> | undefined }
  & { [K in R]: ValueOf<F[K]> };

export interface VerbSpec<F extends Record<string, FlagSpec>, R extends keyof F & string> {
  name: string;
  /** The usage line of `gemma-tuner <verb> --help`. */
  usage: string;
  /** The verb's flags; --help is added. */
  flags: F;
  /** Flags the verb cannot run without. */
  required?: readonly R[];
  /** Groups of which exactly one flag must be given (e.g. --ids or --text). */
  exactlyOne?: readonly (readonly (keyof F & string)[])[];
  /** The verb itself; returns the exit code. `argv` is the raw command line, for "was it given" checks. */
  run(f: Values<F, R>, argv: string[]): Promise<number>;
}

export interface Verb {
  name: string;
  run(args: string[]): Promise<number>;
}

const HELP: FlagSpec = { kind: "boolean", help: "show this help" };

/** `--name DIR` where the flag names its value, else `--name`: how errors refer to a flag. */
function named(name: string, s: FlagSpec): string {
  return s.metavar ? `--${name} ${s.metavar}` : `--${name}`;
}

function given(v: FlagValues[string]): boolean {
  return v !== undefined && v !== "" && v !== false;
}

export function defineVerb<const F extends Record<string, FlagSpec>, const R extends keyof F & string = never>(
  spec: VerbSpec<F, R>,
): Verb {
  const flags: Record<string, FlagSpec> = { ...spec.flags, help: HELP };
  return {
    name: spec.name,
    async run(args) {
      const f = parseFlags(spec.name, args, flags);
      if (f.help) {
        console.log(flagHelp(spec.usage, flags));
        return 0;
      }
      for (const name of spec.required ?? []) {
        if (!given(f[name])) throw new UsageError(`${spec.name}: ${named(name, flags[name])} is required`);
      }
      for (const group of spec.exactlyOne ?? []) {
        if (group.filter((n) => given(f[n])).length !== 1) {
          const names = group.map((n) => named(n, flags[n]));
          throw new UsageError(`${spec.name}: give exactly one of ${names.slice(0, -1).join(", ")} or ${names.at(-1)}`);
        }
      }
      return await spec.run(f as Values<F, R>, args);
    },
  };
}
