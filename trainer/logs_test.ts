import { deepStrictEqual as eq, ok } from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { countErrorLines, readLogChunk, tailLines } from "./logs.ts";

const tmp = () => fs.mkdtempSync(path.join(Deno.env.get("TMPDIR") ?? "/tmp", "gt-logs-"));

Deno.test("logs: reading by offset returns only appended whole lines and the next offset", () => {
  const dir = tmp();
  const f = path.join(dir, "trainer_stdout.log");
  eq(
    readLogChunk(f, 0),
    { text: "", next: 0, size: 0 },
    "a missing file is empty, not an error",
  );
  fs.writeFileSync(f, "one\ntwo\nthr");
  const a = readLogChunk(f, 0);
  eq(a.text, "one\ntwo\n", "the partial last line waits for its newline");
  eq(a.next, 8);
  eq(readLogChunk(f, a.next).text, "");
  fs.appendFileSync(f, "ee\nfour\n");
  const b = readLogChunk(f, a.next);
  eq(b.text, "three\nfour\n");
  eq(b.next, fs.statSync(f).size);
  // Once the writer has ended, its last line shows even without a newline, and the reader reaches the end.
  fs.appendFileSync(f, "bye");
  eq(readLogChunk(f, b.next).text, "");
  const last = readLogChunk(f, b.next, { partial: true });
  eq([last.text, last.next], ["bye", last.size]);
  // A truncated (replaced) file starts over.
  fs.writeFileSync(f, "new\n");
  eq(readLogChunk(f, b.next).text, "new\n");
  fs.rmSync(dir, { recursive: true });
});

Deno.test("logs: the tail of a big file costs one chunk, starts at a line and can be continued", () => {
  const dir = tmp();
  const f = path.join(dir, "big.log");
  const line = (i: number) => `step ${String(i).padStart(6, "0")} loss 1.234\n`;
  const fd = fs.openSync(f, "w");
  for (let i = 0; i < 100_000; i++) fs.writeSync(fd, line(i));
  fs.closeSync(fd);
  const size = fs.statSync(f).size;
  const t = readLogChunk(f, -1, { max: 4096 });
  ok(t.text.length <= 4096);
  ok(t.text.startsWith("step "), "the tail starts mid-line");
  ok(t.text.endsWith(line(99_999)));
  eq(t.next, size);
  fs.appendFileSync(f, line(100_000));
  eq(readLogChunk(f, t.next).text, line(100_000));
  // A chunk limit caps what one request reads from the middle too.
  const mid = readLogChunk(f, 0, { max: 1000 });
  ok(mid.next <= 1000 && mid.text.endsWith("\n"));
  eq(tailLines(f, 2), [line(99_999).trim(), line(100_000).trim()]);
  fs.rmSync(dir, { recursive: true });
});

Deno.test("logs: error count counts error lines, not the word anywhere", () => {
  const text = [
    "step 3 | loss 2.1 | error_rate 0.1",
    "info: no errors so far",
    'Error: Cannot load "model.safetensors": header length exceeds file size',
    "    at loadModel (file:///app/engine/model_dir.ts:42:11)",
    "    at async train (file:///app/trainer/worker.ts:200:3)",
    "error: Uncaught (in promise) RangeError: out of memory",
    "eval loss 1.9 (mean squared error not used)",
    "thread 'main' panicked at src/lib.rs:1:1",
    "Segmentation fault (core dumped)",
    "ERROR onnxruntime: failed to allocate",
    "RangeError: Invalid typed array length: -4",
    "Killed",
  ].join("\n");
  eq(countErrorLines(text), 7);
  eq(countErrorLines("errors: 0\nterror\n"), 0);
});
