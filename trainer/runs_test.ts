import { deepStrictEqual as eq, ok } from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { type RunRow, RunStore } from "./runs.ts";

const tmp = () => fs.mkdtempSync(path.join(Deno.env.get("TMPDIR") ?? "/tmp", "gt-store-"));

const row = (id: string, over: Partial<RunRow> = {}): RunRow => ({
  id,
  name: id,
  state: "completed",
  model: "demo",
  method: "lora",
  dataset: "sample",
  createdAt: `2026-01-0${id.length}T00:00:00Z`,
  updatedAt: "2026-01-09T00:00:00Z",
  step: 10,
  totalSteps: 10,
  trainLoss: 1.5,
  evalLoss: null,
  message: "Done",
  error: null,
  ...over,
});

Deno.test("run store: upsert, list newest first, remove, retain, settings survive a reopen", () => {
  const dir = tmp();
  const s = new RunStore(dir);
  s.upsert(row("a"));
  s.upsert(row("bb", { state: "training", trainLoss: null }));
  s.upsert(row("a", { trainLoss: 0.75, error: "x" }));
  eq(s.list().map((r) => [r.id, r.trainLoss, r.error]), [["bb", null, null], [
    "a",
    0.75,
    "x",
  ]]);
  s.setSetting("create.last", '{"r":8}');
  s.setSetting("create.last", '{"r":16}');
  s.retain(new Set(["a"]));
  eq(s.list().map((r) => r.id), ["a"]);
  s.close();
  const again = new RunStore(dir);
  eq(again.list(), [row("a", { trainLoss: 0.75, error: "x" })]);
  eq(again.getSetting("create.last"), '{"r":16}');
  eq(again.getSetting("missing"), undefined);
  again.remove("a");
  eq(again.list(), []);
  again.close();
  fs.rmSync(dir, { recursive: true });
});

Deno.test("run store: a corrupt database file is moved aside and a fresh one is used", () => {
  const dir = tmp();
  fs.writeFileSync(
    path.join(dir, "gemma-tuner.db"),
    "this is not sqlite ".repeat(100),
  );
  const s = new RunStore(dir);
  eq(s.list(), []);
  s.upsert(row("a"));
  eq(s.list().length, 1);
  s.close();
  ok(
    fs.readdirSync(dir).some((f) => f.startsWith("gemma-tuner.db.corrupt-")),
    "the damaged file was not kept for inspection",
  );
  fs.rmSync(dir, { recursive: true });
});
