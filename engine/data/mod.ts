/**
 * Datasets, public surface: `inspectDataset` for previews and pre-flight checks, `prepareDataset` for
 * the trainer (read → detect → convert → tokenise → split), and the pieces they are built from.
 */
import type { ChatStyle, Segment } from "../chat_format.ts";
import { BatchPlan, bucketLength, collate, packExamples, splitIndices } from "./batching.ts";
import { type DatasetFormat, detectFormat, type Detection, FORMAT_FIELDS, rowsToExamples } from "./formats.ts";
import { type FileKind, type RawRow, readDatasetFile, type RowIssue } from "./readers.ts";
import { readSample, SAMPLE_PATH } from "./sample.ts";
import { type Encoder, type TokenizedExample, tokenizeExample, tokenizeSegments, trainedTokens } from "./tokenize.ts";

export { BatchPlan, bucketLength, collate, detectFormat, packExamples, splitIndices, tokenizeExample, tokenizeSegments };
export type { DatasetFormat, Detection, Encoder, FileKind, RawRow, RowIssue, Segment, TokenizedExample };
export { SAMPLE_PATH } from "./sample.ts";
export { rowToSegments } from "./formats.ts";
export type { Batch } from "./batching.ts";

export interface DatasetSpec {
  path: string;
  format?: "auto" | DatasetFormat;
  fields?: Record<string, string>;
  /** Train on the usable rows when some cannot be read or converted (default: refuse the dataset). */
  skipInvalid?: boolean;
}

export interface DatasetInspection {
  path: string;
  fileKind: FileKind | "sample";
  format: DatasetFormat;
  /** Why this format: "chosen: rows have a "messages" list … " or "set in the run config". */
  chosenBecause: string;
  columns: string[];
  /** The first N rows as read (before conversion). */
  rows: RawRow[];
  /** The first N rows as the model sees them: pieces marked trained or not. */
  examples: { line: number; segments: Segment[] }[];
  total: number;
  valid: number;
  invalid: RowIssue[];
}

/** Rows of a dataset path ("sample" = the built-in one, examples/sample.jsonl). */
async function readRows(path: string, skipInvalid?: boolean): Promise<{ kind: FileKind | "sample"; rows: RawRow[]; invalid: RowIssue[]; columns: string[] }> {
  if (path === SAMPLE_PATH) return { ...(await readSample()), kind: "sample" };
  return await readDatasetFile(path, { skipInvalid });
}

async function convertAll(
  path: string,
  opts: { format?: "auto" | DatasetFormat; fields?: Record<string, string>; chat?: ChatStyle; skipInvalid?: boolean },
) {
  const read = await readRows(path, opts.skipInvalid);
  const mapped = opts.fields ? read.rows.map((r) => ({ line: r.line, value: { ...r.value, ...remap(r.value, opts.fields!) } })) : read.rows;
  let detection: Detection;
  if (!opts.format || opts.format === "auto") {
    if (!read.rows.length) throw noRows(path, read.invalid);
    detection = detectFormat(mapped, path);
  } else detection = { format: opts.format, chosenBecause: "set in the run config" };
  const { examples, invalid } = rowsToExamples(read.rows, detection.format, { chat: opts.chat, fields: opts.fields });
  const allInvalid = [...read.invalid, ...invalid].sort((a, b) => a.line - b.line);
  if (!examples.length) {
    const first = allInvalid.slice(0, 5).map((i) => `line ${i.line}, ${i.field}: ${i.reason}`).join("; ");
    throw new RangeError(
      `Dataset "${path}" has no usable rows for format "${detection.format}" (expected ${FORMAT_FIELDS[detection.format]}; ` +
        `found columns ${read.columns.map((c) => `"${c}"`).join(", ") || "(none)"})${first ? `. First problems: ${first}` : ""}`,
    );
  }
  return { read, detection, examples, invalid: allInvalid, total: read.rows.length + read.invalid.length };
}

/**
 * Reads and checks a dataset without tokenising it. Throws (SyntaxError/RangeError naming the file)
 * when the file cannot be read or no row is usable, with what was expected and what was found.
 */
export async function inspectDataset(
  path: string,
  opts: { format?: "auto" | DatasetFormat; fields?: Record<string, string>; limit?: number; chat?: ChatStyle; skipInvalid?: boolean } = {},
): Promise<DatasetInspection> {
  const c = await convertAll(path, opts);
  const limit = opts.limit ?? 5;
  return {
    path,
    fileKind: c.read.kind,
    format: c.detection.format,
    chosenBecause: c.detection.chosenBecause,
    columns: c.read.columns,
    rows: c.read.rows.slice(0, limit),
    examples: c.examples.slice(0, limit),
    total: c.total,
    valid: c.examples.length,
    invalid: c.invalid,
  };
}

function remap(row: Record<string, unknown>, fields: Record<string, string>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [ours, theirs] of Object.entries(fields)) if (theirs in row) out[ours] = row[theirs];
  return out;
}

/** The refusal when rows are unusable and dataset.skipInvalid is off: which lines, why, and the way out. */
export function invalidRows(path: string, invalid: RowIssue[], total: number): RangeError {
  const first = invalid.slice(0, 5).map((i) => `line ${i.line}, ${i.field}: ${i.reason}`).join("; ");
  const more = invalid.length > 5 ? ` and ${invalid.length - 5} more` : "";
  return new RangeError(
    `Dataset "${path}": ${invalid.length} of ${total} rows cannot be used (${first}${more}). ` +
      `Fix them, or set dataset.skipInvalid to true ("Skip invalid rows" in the form) to train on the other ${total - invalid.length}`,
  );
}

function noRows(path: string, invalid: RowIssue[]): RangeError {
  const first = invalid.slice(0, 5).map((i) => `line ${i.line}: ${i.reason}`).join("; ");
  return new RangeError(`Dataset "${path}" has no rows${first ? ` it could read (${first})` : " (the file is empty)"}`);
}

export interface PreparedDataset {
  format: DatasetFormat;
  chosenBecause: string;
  train: TokenizedExample[];
  validation: TokenizedExample[];
  total: number;
  invalid: RowIssue[];
  /** Examples cut at maxLength (they keep their start). */
  truncated: number;
  /** Examples left with no trained token after truncation (dropped). */
  dropped: number;
  trainTokens: number;
}

export interface PrepareOptions {
  maxLength: number;
  seed: number;
  chat?: ChatStyle;
}

/**
 * Everything the trainer needs from a dataset config: tokenised train and validation examples.
 * The validation split is a seeded fraction of the rows, or a separate file when validationPath is set.
 */
export async function prepareDataset(
  spec: DatasetSpec & { validation?: number; validationPath?: string; packing?: boolean },
  enc: Encoder,
  opts: PrepareOptions,
): Promise<PreparedDataset> {
  const main = await tokenizeAll(spec.path, spec, enc, opts);
  let train = main.examples, validation: TokenizedExample[] = [];
  let invalid = main.invalid, truncated = main.truncated, dropped = main.dropped;
  if (spec.validationPath) {
    const v = await tokenizeAll(spec.validationPath, { ...spec, format: main.format }, enc, opts);
    validation = v.examples;
    invalid = [...invalid, ...v.invalid.map((i) => ({ ...i, field: `${spec.validationPath}: ${i.field}` }))];
    truncated += v.truncated;
    dropped += v.dropped;
  } else if ((spec.validation ?? 0) > 0) {
    const split = splitIndices(train.length, spec.validation!, opts.seed);
    validation = split.validation.map((i) => train[i]);
    train = split.train.map((i) => train[i]);
  }
  if (spec.packing) train = packExamples(train, opts.maxLength);
  return {
    format: main.format,
    chosenBecause: main.chosenBecause,
    train,
    validation,
    total: main.total,
    invalid,
    truncated,
    dropped,
    trainTokens: train.reduce((s, e) => s + trainedTokens(e), 0),
  };
}

async function tokenizeAll(path: string, spec: DatasetSpec, enc: Encoder, opts: PrepareOptions) {
  const c = await convertAll(path, { format: spec.format, fields: spec.fields, chat: opts.chat, skipInvalid: spec.skipInvalid });
  if (c.invalid.length && !spec.skipInvalid) throw invalidRows(path, c.invalid, c.total);
  const out: TokenizedExample[] = [];
  let truncated = 0, dropped = 0;
  const invalid = [...c.invalid];
  for (const e of c.examples) {
    const t = tokenizeSegments(e.segments, enc, opts.maxLength, e.line);
    if (t.truncated) truncated++;
    if (trainedTokens(t) === 0) {
      dropped++;
      invalid.push({
        line: e.line,
        field: "(row)",
        reason: `no trained tokens left after cutting to maxLength ${opts.maxLength} (the prompt is ${t.fullLength}+ tokens); raise maxLength or shorten the prompt`,
      });
      continue;
    }
    out.push(t);
  }
  if (!out.length) {
    throw new RangeError(`Dataset "${path}" has no usable rows after tokenising: every row lost its trained part at maxLength ${opts.maxLength}; raise maxLength`);
  }
  return { format: c.detection.format, chosenBecause: c.detection.chosenBecause, examples: out, invalid, truncated, dropped, total: c.total };
}
