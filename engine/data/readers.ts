/**
 * Dataset file readers: JSONL, JSON (an array or {"data": [...]}), CSV and Parquet, each giving rows
 * with the line (or row) number a person can find in the file. A row that cannot be read is reported,
 * not dropped silently; a file that cannot be read at all throws a SyntaxError naming file and line.
 * The user's file is only ever read.
 */
import { extname } from "node:path";
import { parquetReadObjects } from "hyparquet";

export type FileKind = "jsonl" | "json" | "csv" | "parquet";

export interface RawRow {
  /** 1-based line of the file where the row starts (row number for Parquet). */
  line: number;
  value: Record<string, unknown>;
}

export interface RowIssue {
  line: number;
  field: string;
  reason: string;
}

export interface ReadResult {
  kind: FileKind;
  rows: RawRow[];
  invalid: RowIssue[];
  /** Column names seen in the first rows (CSV header, Parquet schema, keys of the first objects). */
  columns: string[];
}

/** Picks the reader by extension; .jsonl/.ndjson, .json, .csv/.tsv, .parquet. */
export function fileKind(path: string): FileKind {
  const ext = extname(path).toLowerCase();
  if (ext === ".jsonl" || ext === ".ndjson") return "jsonl";
  if (ext === ".json") return "json";
  if (ext === ".csv" || ext === ".tsv") return "csv";
  if (ext === ".parquet") return "parquet";
  throw new RangeError(`Cannot read dataset "${path}": unknown file type "${ext || "(none)"}"; use .jsonl, .json, .csv or .parquet`);
}

/** Decodes UTF-8 strictly; invalid bytes throw a SyntaxError with the line of the first bad byte. */
export function decodeUtf8(bytes: Uint8Array, source: string): string {
  try {
    const text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  } catch {
    const loose = new TextDecoder("utf-8").decode(bytes);
    const bad = loose.indexOf("\ufffd");
    const line = bad < 0 ? 1 : loose.slice(0, bad).split("\n").length;
    throw new SyntaxError(`Cannot read dataset "${source}": line ${line} is not valid UTF-8; save the file as UTF-8 and try again`);
  }
}

function columnsOf(rows: RawRow[]): string[] {
  const seen = new Set<string>();
  for (const r of rows.slice(0, 50)) for (const k of Object.keys(r.value)) seen.add(k);
  return [...seen];
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

export function readJsonl(text: string): ReadResult {
  const rows: RawRow[] = [], invalid: RowIssue[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const s = lines[i].trim();
    if (!s) continue;
    let v: unknown;
    try {
      v = JSON.parse(s);
    } catch (e) {
      invalid.push({ line: i + 1, field: "(row)", reason: `not valid JSON: ${(e as Error).message}` });
      continue;
    }
    if (!isObject(v)) invalid.push({ line: i + 1, field: "(row)", reason: `expected a JSON object, found ${Array.isArray(v) ? "an array" : typeof v}` });
    else rows.push({ line: i + 1, value: v });
  }
  return { kind: "jsonl", rows, invalid, columns: columnsOf(rows) };
}

/**
 * Start lines of the elements of the array that holds the rows: the top-level array, or the array
 * under the top-level key "data". A small scanner, since JSON.parse keeps no positions.
 */
function elementLines(text: string, inData: boolean): number[] {
  const lines: number[] = [];
  const stack: string[] = [];
  let line = 1, inString = false, escape = false, stringStart = 0, lastString = "", topKey = "";
  let target = -1, done = false, pending = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === "\n") line++;
    if (inString) {
      if (escape) escape = false;
      else if (c === "\\") escape = true;
      else if (c === '"') {
        inString = false;
        lastString = text.slice(stringStart, i);
      }
      continue;
    }
    if (c === " " || c === "\t" || c === "\r" || c === "\n") continue;
    if (pending && stack.length === target && c !== "]") {
      lines.push(line);
      pending = false;
    }
    if (c === '"') {
      inString = true;
      stringStart = i + 1;
    } else if (c === "[") {
      stack.push(c);
      if (!done && target < 0 && (inData ? stack.length === 2 && topKey === "data" : stack.length === 1)) {
        target = stack.length;
        pending = true;
      }
    } else if (c === "{") stack.push(c);
    else if (c === "]" || c === "}") {
      if (stack.length === target) {
        done = true;
        target = -1;
      }
      stack.pop();
    } else if (c === "," && stack.length === target) pending = true;
    else if (c === ":" && stack.length === 1) topKey = lastString;
  }
  return lines;
}

export function readJson(text: string, source: string): ReadResult {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new SyntaxError(`Cannot read dataset "${source}": not valid JSON (${(e as Error).message})`);
  }
  let items: unknown[];
  let inData = false;
  if (Array.isArray(v)) items = v;
  else if (isObject(v) && Array.isArray(v.data)) {
    items = v.data;
    inData = true;
  } else {
    throw new SyntaxError(
      `Cannot read dataset "${source}": expected a JSON array of rows or an object {"data": [...]}, found ${
        isObject(v) ? `an object with keys ${Object.keys(v).slice(0, 8).join(", ")}` : typeof v
      }`,
    );
  }
  const lines = elementLines(text, inData);
  const rows: RawRow[] = [], invalid: RowIssue[] = [];
  items.forEach((item, i) => {
    const line = lines[i] ?? i + 1;
    if (isObject(item)) rows.push({ line, value: item });
    else invalid.push({ line, field: "(row)", reason: `expected an object, found ${Array.isArray(item) ? "an array" : typeof item}` });
  });
  return { kind: "json", rows, invalid, columns: columnsOf(rows) };
}

/**
 * RFC 4180 CSV (quoted fields, "" escapes, embedded newlines); the first record is the header. A
 * misplaced quote makes the file unreadable, unless `skipInvalid`: then that record is reported and
 * reading goes on at the next line (an unclosed quote still stops it: the rest of the file is inside it).
 */
export function readCsv(text: string, source: string, delimiter = ",", skipInvalid = false): ReadResult {
  const records: { line: number; fields: string[] }[] = [];
  const broken: RowIssue[] = [];
  let fields: string[] = [];
  let field = "";
  let line = 1, recordLine = 1, i = 0;
  let quoted = false, quoteLine = 0, wasQuoted = false;
  const endField = () => {
    fields.push(field);
    field = "";
    wasQuoted = false;
  };
  const endRecord = () => {
    endField();
    if (!(fields.length === 1 && fields[0] === "")) records.push({ line: recordLine, fields });
    fields = [];
  };
  /** Drops the record being read and resumes after the end of the current line. */
  const skipRecord = (reason: string) => {
    broken.push({ line: recordLine, field: "(row)", reason });
    const nl = text.indexOf("\n", i);
    i = nl < 0 ? text.length : nl + 1;
    fields = [];
    field = "";
    quoted = wasQuoted = false;
    line++;
    recordLine = line;
  };
  while (i < text.length) {
    const c = text[i];
    if (quoted) {
      if (c === '"') {
        if (text[i + 1] === '"') {
          field += '"';
          i += 2;
          continue;
        }
        quoted = false;
        const next = text[i + 1];
        if (next !== undefined && next !== delimiter && next !== "\n" && next !== "\r") {
          const reason = `unexpected text after a closing quote; a quote inside a quoted field must be doubled ("")`;
          if (!skipInvalid) throw new SyntaxError(`Cannot read dataset "${source}": line ${line}: ${reason} (or set dataset.skipInvalid to skip such rows)`);
          skipRecord(reason);
          continue;
        }
      } else {
        if (c === "\n") line++;
        field += c;
      }
      i++;
      continue;
    }
    if (c === '"') {
      if (field !== "" || wasQuoted) {
        const reason = `a quote in the middle of an unquoted field; quote the whole field and double the quote ("")`;
        if (!skipInvalid) throw new SyntaxError(`Cannot read dataset "${source}": line ${line}: ${reason} (or set dataset.skipInvalid to skip such rows)`);
        skipRecord(reason);
        continue;
      }
      quoted = true;
      wasQuoted = true;
      quoteLine = line;
    } else if (c === delimiter) endField();
    else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      endRecord();
      line++;
      recordLine = line;
    } else field += c;
    i++;
  }
  if (quoted) {
    throw new SyntaxError(`Cannot read dataset "${source}": line ${quoteLine}: a quoted field is never closed (missing ")`);
  }
  if (field !== "" || fields.length) endRecord();
  if (!records.length) return { kind: "csv", rows: [], invalid: broken, columns: [] };
  const header = records[0].fields.map((h) => h.trim());
  const rows: RawRow[] = [], invalid: RowIssue[] = [...broken];
  for (const r of records.slice(1)) {
    if (r.fields.length !== header.length) {
      invalid.push({ line: r.line, field: "(row)", reason: `has ${r.fields.length} fields, the header has ${header.length}` });
      continue;
    }
    const value: Record<string, unknown> = {};
    header.forEach((h, k) => value[h] = r.fields[k]);
    rows.push({ line: r.line, value });
  }
  invalid.sort((a, b) => a.line - b.line);
  return { kind: "csv", rows, invalid, columns: header };
}

/** Turns BigInt (Parquet INT64) into numbers so rows are plain JSON. */
function plain(v: unknown): unknown {
  if (typeof v === "bigint") return Number(v);
  if (Array.isArray(v)) return v.map(plain);
  if (v instanceof Uint8Array) return new TextDecoder().decode(v);
  if (isObject(v)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
  return v;
}

export async function readParquet(bytes: Uint8Array, source: string): Promise<ReadResult> {
  let objects: Record<string, unknown>[];
  try {
    const file = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
    objects = await parquetReadObjects({ file }) as Record<string, unknown>[];
  } catch (e) {
    throw new SyntaxError(`Cannot read dataset "${source}": not a readable Parquet file (${(e as Error).message})`);
  }
  const rows = objects.map((o, i) => ({ line: i + 1, value: plain(o) as Record<string, unknown> }));
  return { kind: "parquet", rows, invalid: [], columns: columnsOf(rows) };
}

/** Reads any supported dataset file; `skipInvalid` lets a CSV with a broken record be read past it. */
export async function readDatasetFile(path: string, opts: { skipInvalid?: boolean } = {}): Promise<ReadResult> {
  const kind = fileKind(path);
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new RangeError(`Cannot read dataset "${path}": the file does not exist`);
    throw e;
  }
  if (kind === "parquet") return readParquet(bytes, path);
  const text = decodeUtf8(bytes, path);
  if (kind === "jsonl") return readJsonl(text);
  if (kind === "json") return readJson(text, path);
  return readCsv(text, path, path.toLowerCase().endsWith(".tsv") ? "\t" : ",", opts.skipInvalid);
}
