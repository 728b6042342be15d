/**
 * Tokenisation with label masks: the rendered pieces are encoded one by one without adding special
 * tokens (the text already starts with `<bos>`, so there is never a second one), and every token of an
 * untrained piece gets label −100 (docs/GEMMA.md §Labels). Truncation keeps the start.
 */
import type { Segment } from "../chat_format.ts";

/** The part of engine/tokenizer.ts's Tokenizer that tokenisation needs. */
export interface Encoder {
  encode(text: string, opts?: { addSpecialTokens?: boolean }): number[];
  tokenText?(id: number): string;
}

export const IGNORE = -100;

export interface TokenizedExample {
  /** Line of the source file (or packed group's first line). */
  line: number;
  ids: number[];
  /** ids[t] where the token is trained, else −100 (HF convention; the engine shifts). */
  labels: number[];
  /** Tokens before truncation. */
  fullLength: number;
  truncated: boolean;
}

/** Encodes the pieces and builds labels; cuts to `maxLength` tokens keeping the start. */
export function tokenizeSegments(segments: Segment[], enc: Encoder, maxLength: number, line = 0): TokenizedExample {
  const ids: number[] = [], labels: number[] = [];
  for (const s of segments) {
    if (!s.text) continue;
    for (const id of enc.encode(s.text, { addSpecialTokens: false })) {
      ids.push(id);
      labels.push(s.trained ? id : IGNORE);
    }
  }
  const fullLength = ids.length;
  const truncated = fullLength > maxLength;
  if (truncated) {
    ids.length = maxLength;
    labels.length = maxLength;
  }
  return { line, ids, labels, fullLength, truncated };
}

/** Number of tokens that contribute to the loss (position 0 is never predicted). */
export function trainedTokens(ex: { labels: number[] }): number {
  let n = 0;
  for (let t = 1; t < ex.labels.length; t++) if (ex.labels[t] !== IGNORE) n++;
  return n;
}

export interface TokenPreview {
  id: number;
  text: string;
  trained: boolean;
}

/**
 * For the dataset preview: ids, labels and one entry per token with its text and whether the loss
 * sees it, so the UI can highlight the trained part.
 */
export function tokenizeExample(
  segments: Segment[],
  enc: Encoder,
  opts: { maxLength?: number } = {},
): TokenizedExample & { tokens: TokenPreview[]; trainedTokens: number } {
  const ex = tokenizeSegments(segments, enc, opts.maxLength ?? Number.MAX_SAFE_INTEGER);
  const tokens = ex.ids.map((id, t) => ({ id, text: enc.tokenText ? enc.tokenText(id) : String(id), trained: ex.labels[t] !== IGNORE }));
  return { ...ex, tokens, trainedTokens: trainedTokens(ex) };
}
