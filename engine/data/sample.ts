/**
 * The built-in sample dataset (`"path": "sample"`) is the file examples/sample.jsonl: short questions
 * with one fixed answer each, which the tiny random demo model can learn by heart within the Quick
 * demo preset (examples/quick-demo.json), so a newcomer sees a tuned model answer what it was taught.
 * `deno compile` embeds the file (deno.json's compile task includes examples/).
 */
import { readJsonl, type ReadResult } from "./readers.ts";

export const SAMPLE_PATH = "sample";

/** Where the sample lives, beside the code that reads it (also inside the compiled executable). */
export const SAMPLE_FILE = new URL("../../examples/sample.jsonl", import.meta.url);

/** The sample's rows; a damaged sample file is a bug of the build, not of the user's data. */
export async function readSample(): Promise<ReadResult> {
  const r = readJsonl(await Deno.readTextFile(SAMPLE_FILE));
  if (r.invalid.length) throw new SyntaxError(`The built-in sample (${SAMPLE_FILE.pathname}) is damaged: line ${r.invalid[0].line}: ${r.invalid[0].reason}`);
  return r;
}
