/**
 * The vocabulary as llama.cpp's tokenizers want it (docs/GGUF.md §4): one piece, score and token
 * type per embedding row, built from tokenizer.json.
 *
 * - "llama" (Gemma 1–3, SentencePiece-style): scores drive llama.cpp's merge order (highest score
 *   merges first), so for a BPE tokenizer.json each token scores minus the rank of the first merge
 *   that forms it: merging by score is then merging by rank.
 * - "gemma4" (Gemma 4, as llama.cpp's convert_hf_to_gguf.py Gemma4Model.set_vocab writes it): a BPE
 *   vocabulary driven by `tokenizer.ggml.merges` (tokenizer.json's merges, "a b"), pieces verbatim
 *   ("▁" kept, llama.cpp's gemma4 pre-tokenizer maps spaces itself), no space prefix, BOS added, and
 *   the channel / tool-call control tokens typed USER_DEFINED so they render in output.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { MetaValue } from "./gguf_file.ts";

/** llama.cpp's token types (llama_token_type). */
export const TOKEN_TYPE = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

export interface GgufVocab {
  tokens: string[];
  scores: Float32Array;
  types: Int32Array;
  /** Tokens of tokenizer.json left out because their id is past the embedding rows. */
  dropped: string[];
  meta: [string, MetaValue][];
}

interface TokenizerJson {
  added_tokens?: { id: number; content: string; special?: boolean }[];
  model: { type: string; vocab: Record<string, number> | [string, number][]; merges?: (string | [string, string])[]; unk_token?: string; unk_id?: number };
  normalizer?: unknown;
}

function readJson(file: string): Record<string, unknown> {
  try {
    return JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e) {
    throw new SyntaxError(`Cannot read "${file}" for the GGUF vocabulary: ${(e as Error).message}`);
  }
}

/** llama.cpp's tokenizer.ggml.model: "llama" (SentencePiece-style) for Gemma 1–3, "gemma4" (BPE with merges) for Gemma 4. */
export type VocabModel = "llama" | "gemma4";

/** Control tokens llama.cpp's Gemma 4 converter makes USER_DEFINED ("always render these tokens, so that the chat parser can read them"). */
export const GEMMA4_VISIBLE_TOKENS = new Set(["<|channel>", "<channel|>", "<|tool_call>", "<tool_call|>", "<|tool_response>", "<tool_response|>", '<|"|>']);

/** Builds the GGUF vocabulary of a model directory for an embedding of `rows` rows. */
export function buildVocab(modelDir: string, rows: number, ids: { bos: number; eos: number; pad: number }, model: VocabModel = "llama"): GgufVocab {
  const file = path.join(modelDir, "tokenizer.json");
  if (!fs.existsSync(file)) throw new RangeError(`Cannot write the GGUF vocabulary: "${file}" is missing (the model directory needs its tokenizer.json)`);
  const tj = readJson(file) as unknown as TokenizerJson;
  const cfgFile = path.join(modelDir, "tokenizer_config.json");
  const cfg = fs.existsSync(cfgFile) ? readJson(cfgFile) : {};
  const tokens: string[] = new Array(rows);
  const scores = new Float32Array(rows);
  const types = new Int32Array(rows).fill(TOKEN_TYPE.NORMAL);
  const dropped: string[] = [];
  const put = (id: number, text: string) => {
    if (id >= rows) dropped.push(text);
    else tokens[id] = text;
  };
  const m = tj.model;
  if (m.type === "Unigram" && Array.isArray(m.vocab)) {
    m.vocab.forEach(([piece, score], id) => (put(id, piece), id < rows && (scores[id] = score)));
  } else if (m.type === "BPE" && !Array.isArray(m.vocab)) {
    for (const [piece, id] of Object.entries(m.vocab)) put(id, piece);
    scores.fill(-(m.merges?.length ?? 0) - 1);
    (m.merges ?? []).forEach((mg, rank) => {
      const [a, b] = typeof mg === "string" ? mg.split(" ") : mg;
      const id = (m.vocab as Record<string, number>)[a + b];
      if (id !== undefined && id < rows && scores[id] < -rank) scores[id] = -rank;
    });
  } else {
    throw new RangeError(`Cannot write the GGUF vocabulary from "${file}": model type "${m.type}" is not a SentencePiece-style BPE or Unigram tokenizer`);
  }
  for (let id = 0; id < rows; id++) {
    if (/^<0x[0-9A-Fa-f]{2}>$/.test(tokens[id] ?? "")) types[id] = TOKEN_TYPE.BYTE;
  }
  for (const a of tj.added_tokens ?? []) {
    if (a.id >= rows) {
      if (!dropped.includes(a.content)) dropped.push(a.content);
      continue;
    }
    scores[a.id] = 0;
    // As llama.cpp's converter: special (or special-looking) added tokens are control tokens, the
    // rest user-defined, matched in raw text, so their "▁" is written as the space it stands for.
    // (gemma4: the converter's LlamaHfVocab keeps every piece verbatim; special added tokens are
    // control tokens except the visible ones, the rest user-defined.)
    if (model === "gemma4") (tokens[a.id] = a.content, types[a.id] = a.special && !GEMMA4_VISIBLE_TOKENS.has(a.content) ? TOKEN_TYPE.CONTROL : TOKEN_TYPE.USER_DEFINED);
    else if (a.special || a.content === "<mask>" || /^<\|.*\|>$/.test(a.content)) (tokens[a.id] = a.content, types[a.id] = TOKEN_TYPE.CONTROL);
    else (tokens[a.id] = a.content.replaceAll("▁", " "), types[a.id] = TOKEN_TYPE.USER_DEFINED);
  }
  const unk = m.unk_token ? (Array.isArray(m.vocab) ? m.unk_id ?? -1 : m.vocab[m.unk_token] ?? -1) : -1;
  if (unk >= 0 && unk < rows) types[unk] = TOKEN_TYPE.UNKNOWN;
  // Rows the tokenizer never produces (a padded embedding): llama.cpp needs a piece for each.
  for (let id = 0; id < rows; id++) {
    if (tokens[id] === undefined) (tokens[id] = `[PAD${id}]`, types[id] = TOKEN_TYPE.UNUSED);
  }
  const eot = tokens.indexOf(model === "gemma4" ? "<turn|>" : "<end_of_turn>");
  if (model === "gemma4" && m.type !== "BPE") {
    throw new RangeError(`Cannot write the Gemma 4 GGUF vocabulary from "${file}": llama.cpp's gemma4 tokenizer is BPE with merges, this tokenizer.json's model is "${m.type}"`);
  }
  const merges = model === "gemma4" ? (m.merges ?? []).map((mg) => (typeof mg === "string" ? mg : mg.join(" "))) : [];
  const meta: [string, MetaValue][] = [
    ["tokenizer.ggml.model", { str: model }],
    ...(model === "gemma4" ? [["tokenizer.ggml.pre", { str: "gemma4" }] as [string, MetaValue]] : []),
    ["tokenizer.ggml.tokens", { strs: tokens }],
    ["tokenizer.ggml.scores", { f32s: scores }],
    ["tokenizer.ggml.token_type", { i32s: types }],
    ...(model === "gemma4" ? [["tokenizer.ggml.merges", { strs: merges }] as [string, MetaValue]] : []),
    ["tokenizer.ggml.bos_token_id", { u32: ids.bos }],
    ["tokenizer.ggml.eos_token_id", { u32: ids.eos }],
    ["tokenizer.ggml.padding_token_id", { u32: ids.pad }],
    ...(unk >= 0 && unk < rows ? [["tokenizer.ggml.unknown_token_id", { u32: unk }] as [string, MetaValue]] : []),
    ...(eot >= 0 ? [["tokenizer.ggml.eot_token_id", { u32: eot }] as [string, MetaValue]] : []),
    ["tokenizer.ggml.add_bos_token", { bool: model === "gemma4" || cfg.add_bos_token !== false }],
    ["tokenizer.ggml.add_eos_token", { bool: cfg.add_eos_token === true }],
    // Gemma's normalizer replaces spaces and prepends nothing.
    ["tokenizer.ggml.add_space_prefix", { bool: model !== "gemma4" && hasPrepend(tj.normalizer) }],
  ];
  if (typeof cfg.chat_template === "string") meta.push(["tokenizer.chat_template", { str: cfg.chat_template }]);
  return { tokens, scores, types, dropped, meta };
}

function hasPrepend(n: unknown): boolean {
  return JSON.stringify(n ?? null).includes('"Prepend"');
}
