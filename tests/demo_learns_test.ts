/**
 * The demo visibly learns: the real trainer runs examples/quick-demo.json (the create form's Quick demo)
 * on the built-in demo model and examples/sample.jsonl; then, greedy (temperature 0), the tuned model
 * answers the sample's own questions with the trained answers (≥ 80% exact) and stops at the end-of-turn
 * token, while the untrained base does not. Takes a minute or two of CPU (a few minutes on a loaded
 * machine): the preset itself is kept short.
 */
import { deepStrictEqual as eq, ok } from "node:assert/strict";
import { join } from "node:path";
import { parseRunConfig } from "../config/training.ts";
import { chatPromptIds } from "../engine/chat_format.ts";
import { generateIds, Generator, loadForGeneration } from "../engine/generate.ts";
import { loadTokenizer } from "../engine/tokenizer.ts";
import type { ChatMessage } from "../engine/chat_format.ts";
import { presetConfig } from "../routes/create_form.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const PRESET = join(ROOT, "examples", "quick-demo.json");
const SAMPLE = join(ROOT, "examples", "sample.jsonl");

interface Score {
  exact: number;
  stoppedAtEndOfTurn: number;
  n: number;
  misses: string[];
}

/** Greedy replies to every sample question; exact = the reply is the trained answer, ended by end-of-turn. */
async function score(modelDir: string, tokDir: string): Promise<Score> {
  const tok = await loadTokenizer(tokDir);
  const gen = new Generator(await loadForGeneration(modelDir), { threads: 1 });
  const rows = Deno.readTextFileSync(SAMPLE).trim().split("\n").map((l) => JSON.parse(l).messages as ChatMessage[]);
  const s: Score = { exact: 0, stoppedAtEndOfTurn: 0, n: rows.length, misses: [] };
  try {
    for (const m of rows) {
      const want = m.at(-1)!.content;
      // Only <end_of_turn> stops, so "stop" proves the model ended its turn itself.
      const r = await generateIds(gen, chatPromptIds(tok, m.slice(0, -1)), { temperature: 0, maxNewTokens: 16, stopIds: [tok.endOfTurnId] });
      const got = tok.decode(r.ids);
      if (r.stopReason === "stop") s.stoppedAtEndOfTurn++;
      if (r.stopReason === "stop" && got === want) s.exact++;
      else s.misses.push(`${m.at(-2)!.content} → ${JSON.stringify(got)} (want ${JSON.stringify(want)})`);
    }
  } finally {
    gen.release();
  }
  return s;
}

Deno.test("the Quick demo preset is one RunConfig: the file, the create form and the API schema agree", () => {
  const file = JSON.parse(Deno.readTextFileSync(PRESET));
  const cfg = parseRunConfig(file, PRESET);
  const form = presetConfig("quick-demo");
  const { name: _a, ...fromFile } = cfg, { name: _b, ...fromForm } = form;
  eq(fromForm, fromFile);
  eq([cfg.model, cfg.dataset.path], ["demo", "sample"]);
});

Deno.test({
  name: "after the Quick demo, the tuned demo model answers the sample's questions (≥ 80% exact, stops at end of turn); the base does not",
  sanitizeResources: false,
  async fn() {
    const data = Deno.makeTempDirSync({ prefix: "gt-demo-" });
    try {
      const t0 = performance.now();
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", join(ROOT, "main.ts"), "train", "--config", PRESET, "--data", data],
        cwd: ROOT,
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stdout = new TextDecoder().decode(out.stdout);
      eq(out.code, 0, new TextDecoder().decode(out.stderr).slice(-2000));
      const result = JSON.parse(stdout.trim().split("\n").at(-1)!);
      eq(result.state, "completed");
      const trainSecs = (performance.now() - t0) / 1000;
      const base = join(data, "models", "demo");
      const tuned = await score(join(result.runDir, "final"), join(result.runDir, "final"));
      const untrained = await score(base, base);
      console.log(JSON.stringify({ trainSecs: Math.round(trainSecs), tuned: tuned.exact / tuned.n, base: untrained.exact / untrained.n }));
      ok(tuned.exact >= 0.8 * tuned.n, `tuned: ${tuned.exact}/${tuned.n} exact; misses:\n${tuned.misses.join("\n")}`);
      ok(tuned.stoppedAtEndOfTurn >= 0.8 * tuned.n, `tuned: only ${tuned.stoppedAtEndOfTurn}/${tuned.n} replies ended at <end_of_turn>`);
      ok(untrained.exact <= 0.1 * untrained.n, `the untrained base already answers ${untrained.exact}/${untrained.n}: the check proves nothing`);
    } finally {
      Deno.removeSync(data, { recursive: true });
    }
  },
});
