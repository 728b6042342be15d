import { deepStrictEqual as eq, ok, rejects, throws } from "node:assert/strict";
import { join } from "node:path";
import { parquetWriteBuffer } from "hyparquet-writer";
import { decodeUtf8, readCsv, readDatasetFile, readJson, readJsonl } from "./readers.ts";

Deno.test("JSONL: rows keep their line numbers, bad lines are reported", () => {
  const r = readJsonl('{"text":"a"}\n\nnot json\n[1,2]\n{"text":"b"}\n');
  eq(r.rows.map((x) => [x.line, x.value.text]), [[1, "a"], [5, "b"]]);
  eq(r.invalid.map((i) => i.line), [3, 4]);
  ok(r.invalid[0].reason.startsWith("not valid JSON"));
  ok(r.invalid[1].reason.includes("an array"));
});

Deno.test("JSON: array and {data: [...]} give rows with the line each starts on", () => {
  const arr = readJson('[\n  {"text": "a,[b]"},\n  {"text": "x\\"y"},\n  3,\n  {"text":\n "z"}\n]', "f.json");
  eq(arr.rows.map((x) => [x.line, x.value.text]), [[2, "a,[b]"], [3, 'x"y'], [5, "z"]]);
  eq(arr.invalid, [{ line: 4, field: "(row)", reason: "expected an object, found number" }]);
  const obj = readJson('{"meta": [1, 2],\n "data": [\n {"text": "a"},\n {"text": "b"}]}', "f.json");
  eq(obj.rows.map((x) => x.line), [3, 4]);
  throws(() => readJson('{"rows": []}', "f.json"), /f\.json.*expected a JSON array.*found an object with keys rows/);
  throws(() => readJson("{", "f.json"), SyntaxError);
});

Deno.test("CSV: quotes, doubled quotes, embedded newlines, CRLF, wrong field count", () => {
  const r = readCsv('prompt,completion\r\n"Say ""hi""","hi"\r\n"two\nlines",ok\nonly-one\nplain,x\n', "d.csv");
  eq(r.columns, ["prompt", "completion"]);
  eq(r.rows.map((x) => [x.line, x.value.prompt, x.value.completion]), [[2, 'Say "hi"', "hi"], [3, "two\nlines", "ok"], [6, "plain", "x"]]);
  eq(r.invalid, [{ line: 5, field: "(row)", reason: "has 1 fields, the header has 2" }]);
});

Deno.test("CSV: broken quoting is refused naming the line", () => {
  throws(() => readCsv('a,b\n1,2\n3,"open\n4,5\n', "d.csv"), /d\.csv": line 3: a quoted field is never closed/);
  throws(() => readCsv('a,b\n1,x"y\n', "d.csv"), /line 2: a quote in the middle of an unquoted field/);
  throws(() => readCsv('a,b\n"x"y,1\n', "d.csv"), /line 2: unexpected text after a closing quote/);
  // skipInvalid: the broken records are reported and reading resumes on the next line.
  const r = readCsv('a,b\n1,x"y\n"x"y,1\n"multi\nline",2\n"p""q",3\n', "d.csv", ",", true);
  eq(r.rows.map((x) => [x.line, x.value.a, x.value.b]), [[4, "multi\nline", "2"], [6, 'p"q', "3"]]);
  eq(r.invalid.map((i) => i.line), [2, 3]);
  throws(() => readCsv('a,b\n1,2\n3,"open\n4,5\n', "d.csv", ",", true), /line 3: a quoted field is never closed/);
});

Deno.test("invalid UTF-8 is refused with the line", () => {
  const bytes = new Uint8Array([...new TextEncoder().encode('{"text":"ok"}\n{"text":"'), 0xff, 0xfe, ...new TextEncoder().encode('"}\n')]);
  throws(() => decodeUtf8(bytes, "bad.jsonl"), /"bad\.jsonl": line 2 is not valid UTF-8/);
});

Deno.test("files by extension, Parquet included; missing file and unknown type are explained", async () => {
  const dir = Deno.makeTempDirSync();
  try {
    const pq = join(dir, "d.parquet");
    const buf = parquetWriteBuffer({
      columnData: [{ name: "prompt", data: ["p1", "p2"], type: "STRING" }, { name: "completion", data: ["c1", "c2"], type: "STRING" }, {
        name: "n",
        data: [1n, 2n],
        type: "INT64",
      }],
    });
    Deno.writeFileSync(pq, new Uint8Array(buf));
    const r = await readDatasetFile(pq);
    eq(r.kind, "parquet");
    eq(r.rows.map((x) => [x.line, x.value.prompt, x.value.completion, x.value.n]), [[1, "p1", "c1", 1], [2, "p2", "c2", 2]]);
    const jl = join(dir, "d.jsonl");
    Deno.writeTextFileSync(jl, '{"text":"x"}\n');
    const before = Deno.statSync(jl).mtime;
    eq((await readDatasetFile(jl)).rows.length, 1);
    eq(Deno.statSync(jl).mtime, before);
    await rejects(readDatasetFile(join(dir, "nope.jsonl")), /nope\.jsonl": the file does not exist/);
    await rejects(readDatasetFile(join(dir, "d.txt")), /unknown file type ".txt"/);
    Deno.writeTextFileSync(join(dir, "bad.parquet"), "not parquet");
    await rejects(readDatasetFile(join(dir, "bad.parquet")), /bad\.parquet": not a readable Parquet file/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
