/**
 * Dataset formats: chat `messages`, `prompt` + `completion`, alpaca `instruction`/`input`/`output` and
 * plain `text`. Detection looks at the first rows and says why it chose; every row is turned into the
 * text pieces the model sees, each marked trained or not (docs/CHAT_FORMAT.md).
 */
import { type ChatMessage, type ChatStyle, renderChatSegments, type Segment } from "../chat_format.ts";
import type { RawRow, RowIssue } from "./readers.ts";

export type DatasetFormat = "messages" | "prompt_completion" | "alpaca" | "text";
export const DATASET_FORMATS: DatasetFormat[] = ["messages", "prompt_completion", "alpaca", "text"];

/** What each format needs, for messages that say what was expected. */
export const FORMAT_FIELDS: Record<DatasetFormat, string> = {
  messages: `"messages": [{"role": "user"|"assistant"|"system", "content": "…"}, …]`,
  prompt_completion: `"prompt" and "completion" (strings or message lists)`,
  alpaca: `"instruction", optional "input", and "output"`,
  text: `"text"`,
};

export interface Detection {
  format: DatasetFormat;
  chosenBecause: string;
}

/** Applies an explicit mapping (our field → the file's column) to one row; other columns stay. */
export function applyFieldMap(row: Record<string, unknown>, fields?: Record<string, string>): Record<string, unknown> {
  if (!fields || !Object.keys(fields).length) return row;
  const out = { ...row };
  for (const [ours, theirs] of Object.entries(fields)) {
    if (theirs in row) out[ours] = row[theirs];
  }
  return out;
}

const has = (r: Record<string, unknown>, k: string) => r[k] !== undefined && r[k] !== null;

/** Picks the format from the first rows (at most 20), or throws saying what was expected and what was found. */
export function detectFormat(rows: RawRow[], source: string): Detection {
  const sample = rows.slice(0, 20).map((r) => r.value);
  if (!sample.length) throw new RangeError(`Dataset "${source}" has no rows`);
  const share = (pred: (r: Record<string, unknown>) => boolean) => sample.filter(pred).length / sample.length;
  const candidates: [DatasetFormat, number, string][] = [
    ["messages", share((r) => has(r, "messages") || has(r, "conversations")), `rows have a "messages" list of chat turns`],
    ["prompt_completion", share((r) => has(r, "prompt") && has(r, "completion")), `rows have "prompt" and "completion" fields`],
    ["alpaca", share((r) => has(r, "instruction") && has(r, "output")), `rows have "instruction" and "output" fields (alpaca)`],
    ["text", share((r) => has(r, "text")), `rows have a "text" field`],
  ];
  const best = candidates.reduce((a, b) => (b[1] > a[1] ? b : a));
  if (best[1] === 0) {
    const found = [...new Set(sample.flatMap((r) => Object.keys(r)))].slice(0, 12);
    throw new RangeError(
      `Cannot tell the format of dataset "${source}": expected one of ${DATASET_FORMATS.map((f) => FORMAT_FIELDS[f]).join("; or ")}; ` +
        `found columns ${
          found.length ? found.map((f) => `"${f}"`).join(", ") : "(none)"
        }. Rename the columns or set dataset.fields, e.g. {"prompt": "question", "completion": "answer"}`,
    );
  }
  const n = Math.round(best[1] * sample.length);
  return { format: best[0], chosenBecause: `${best[2]} (${n} of the first ${sample.length} rows)` };
}

const ROLE_ALIASES: Record<string, ChatMessage["role"]> = {
  user: "user",
  human: "user",
  system: "system",
  assistant: "assistant",
  model: "assistant",
  gpt: "assistant",
  bot: "assistant",
};

class RowError extends Error {
  constructor(readonly field: string, reason: string) {
    super(reason);
  }
}

function toMessages(v: unknown, field: string): ChatMessage[] {
  if (typeof v === "string") {
    try {
      v = JSON.parse(v); // CSV cells hold the list as JSON text
    } catch {
      throw new RowError(field, "expected a list of messages, found a string that is not JSON");
    }
  }
  if (!Array.isArray(v)) throw new RowError(field, `expected a list of messages, found ${v === null ? "null" : typeof v}`);
  if (!v.length) throw new RowError(field, "the list of messages is empty");
  return v.map((m, i) => {
    if (typeof m !== "object" || m === null) throw new RowError(`${field}[${i}]`, "expected an object with role and content");
    const o = m as Record<string, unknown>;
    const roleRaw = o.role ?? o.from;
    const content = o.content ?? o.value;
    const role = typeof roleRaw === "string" ? ROLE_ALIASES[roleRaw.toLowerCase()] : undefined;
    if (!role) throw new RowError(`${field}[${i}].role`, `expected "user", "assistant" or "system", found ${JSON.stringify(roleRaw)}`);
    if (typeof content !== "string") throw new RowError(`${field}[${i}].content`, `expected a string, found ${content === null ? "null" : typeof content}`);
    return { role, content };
  });
}

/** A string stays a string unless it is JSON text of a list (message lists stored in CSV cells). */
function listOrString(v: unknown): unknown {
  if (typeof v !== "string" || !/^\s*\[/.test(v)) return v;
  try {
    const parsed = JSON.parse(v);
    return Array.isArray(parsed) ? parsed : v;
  } catch {
    return v;
  }
}

function str(r: Record<string, unknown>, field: string, optional = false): string {
  const v = r[field];
  if (v === undefined || v === null || v === "") {
    if (optional) return "";
    throw new RowError(field, "missing or empty");
  }
  if (typeof v === "number" || typeof v === "boolean") return String(v);
  if (typeof v !== "string") throw new RowError(field, `expected a string, found ${Array.isArray(v) ? "a list" : typeof v}`);
  return v;
}

/** Gemma 1/2 have no system role: its text goes in front of the first user turn, as Gemma 3 renders it. */
function foldSystem(messages: ChatMessage[], chat: ChatStyle): ChatMessage[] {
  if (chat.generation >= 3 || messages[0]?.role !== "system" || messages[1]?.role !== "user") return messages;
  return [{ role: "user", content: `${messages[0].content}\n\n${messages[1].content.trim()}` }, ...messages.slice(2)];
}

/** Renders messages; assistant turns from message `trainFrom` on are trained (indices before folding). */
function chat(messages: ChatMessage[], field: string, style: ChatStyle, trainFrom = 0): Segment[] {
  let segs: Segment[];
  const folded = foldSystem(messages, style);
  const shift = messages.length - folded.length;
  try {
    segs = renderChatSegments(folded, { ...style, trainFrom: Math.max(0, trainFrom - shift) });
  } catch (e) {
    const m = /^Message (\d+): (.*)$/s.exec((e as Error).message);
    throw new RowError(m ? `${field}[${Number(m[1]) + shift}]` : field, m ? m[2] : (e as Error).message);
  }
  if (!segs.some((s) => s.trained)) throw new RowError(field, "has no assistant turn to learn from");
  return segs;
}

/** Gemma 3 unless told: the format used when no model is known (the demo model is a Gemma 3). */
const DEFAULT_CHAT: ChatStyle = { generation: 3 };

/**
 * One row as the pieces of text the model sees, in the model's chat format (`chat`). Every format but
 * plain `text` is a conversation: prompt/completion strings become one user and one model turn (TRL's
 * conversational form, the same prompt the playground sends), alpaca's instruction + input the user
 * turn. Plain text becomes `<bos>` + text + `<eos>` (TRL's language-modelling form).
 */
export function rowToSegments(row: Record<string, unknown>, format: DatasetFormat, style: ChatStyle = DEFAULT_CHAT): Segment[] {
  switch (format) {
    case "messages": {
      const field = has(row, "messages") ? "messages" : "conversations";
      return chat(toMessages(row[field], field), field, style);
    }
    case "prompt_completion": {
      for (const f of ["prompt", "completion"]) {
        if (row[f] === undefined || row[f] === null || row[f] === "") throw new RowError(f, "missing or empty");
      }
      const p = listOrString(row.prompt), c = listOrString(row.completion);
      const prompt = typeof p === "string" ? [{ role: "user" as const, content: p }] : toMessages(p, "prompt");
      const completion = typeof c === "string" ? [{ role: "assistant" as const, content: c }] : toMessages(c, "completion");
      if (completion.some((m) => m.role !== "assistant")) throw new RowError("completion", "a completion may only hold assistant messages");
      // Only the completion is trained, even if the prompt holds earlier assistant turns.
      return chat([...prompt, ...completion], "prompt", style, prompt.length);
    }
    case "alpaca": {
      const instruction = str(row, "instruction"), input = str(row, "input", true), output = str(row, "output");
      const user = input.trim() ? `${instruction.trim()}\n\n${input.trim()}` : instruction;
      return chat([{ role: "user", content: user }, { role: "assistant", content: output }], "output", style);
    }
    case "text": {
      const text = str(row, "text");
      return [{ text: "<bos>", trained: false }, { text: text + "<eos>", trained: true }];
    }
  }
}

/** Converts every row, collecting the ones that fail with their line, field and reason. */
export function rowsToExamples(
  rows: RawRow[],
  format: DatasetFormat,
  opts: { chat?: ChatStyle; fields?: Record<string, string> } = {},
): { examples: { line: number; segments: Segment[] }[]; invalid: RowIssue[] } {
  const examples: { line: number; segments: Segment[] }[] = [], invalid: RowIssue[] = [];
  for (const r of rows) {
    try {
      examples.push({ line: r.line, segments: rowToSegments(applyFieldMap(r.value, opts.fields), format, opts.chat) });
    } catch (e) {
      if (e instanceof RowError) invalid.push({ line: r.line, field: e.field, reason: e.message });
      else invalid.push({ line: r.line, field: "(row)", reason: (e as Error).message });
    }
  }
  return { examples, invalid };
}
