import { defineVerb } from "./verb.ts";
import { UsageError } from "./flags.ts";
import { assert } from "../tests/_assert.ts";

async function usageError(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    assert(e instanceof UsageError, `expected a UsageError, got ${e}`);
    return e.message;
  }
  throw new Error("expected a UsageError, got none");
}

function verb(seen: unknown[]) {
  return defineVerb({
    name: "demo",
    usage: "gemma-tuner demo --model DIR (--ids … | --text …)",
    flags: {
      model: { kind: "string", help: "model directory", metavar: "DIR" },
      ids: { kind: "string", help: "ids" },
      text: { kind: "string", help: "text" },
      steps: { kind: "number", help: "steps", default: 3 },
    },
    required: ["model"],
    exactlyOne: [["ids", "text"]],
    run(f) {
      seen.push(f);
      return Promise.resolve(0);
    },
  });
}

Deno.test("defineVerb: required flags and exactly-one groups are checked before the body runs", async () => {
  const seen: unknown[] = [];
  const v = verb(seen);
  assert((await usageError(v.run(["--ids", "1"]))) === "demo: --model DIR is required", "missing --model");
  assert((await usageError(v.run(["--model", "m"]))) === "demo: give exactly one of --ids or --text", "neither");
  assert((await usageError(v.run(["--model", "m", "--ids", "1", "--text", "t"]))).includes("exactly one"), "both");
  assert((await usageError(v.run(["--model", "m", "--idz", "1"]))).includes('unknown flag "--idz"'), "typo");
  assert(seen.length === 0, "the body ran on a bad command line");
  assert((await v.run(["--model", "m", "--text", "t"])) === 0, "good line");
  const f = seen[0] as Record<string, unknown>;
  assert(f.model === "m" && f.text === "t" && f.steps === 3 && f.ids === undefined, JSON.stringify(f));
});

Deno.test("defineVerb: --help prints the usage and every flag, and does not run the body", async () => {
  const seen: unknown[] = [];
  const lines: string[] = [];
  const log = console.log;
  console.log = (s: string) => lines.push(s);
  try {
    assert((await verb(seen).run(["--help"])) === 0, "exit 0");
  } finally {
    console.log = log;
  }
  const text = lines.join("\n");
  assert(
    text.startsWith("gemma-tuner demo --model DIR") && text.includes("--model DIR") && text.includes("--steps N") && text.includes("(default 3)") && text.includes("--help"),
    text,
  );
  assert(seen.length === 0, "the body ran for --help");
});
