/**
 * The model's tokenizer from its own tokenizer.json + tokenizer_config.json (via @lenml/tokenizers).
 * The chat template in tokenizer_config.json is never used: engine/chat_format.ts renders it.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { TokenizerLoader } from "@lenml/tokenizers";

export interface Tokenizer {
  encode(text: string, opts?: { addSpecialTokens?: boolean }): number[];
  decode(ids: number[], opts?: { skipSpecialTokens?: boolean }): string;
  /** The text of one token as stored (special tokens verbatim, "▁" shown as a space). */
  tokenText(id: number): string;
  bosId: number;
  eosId: number;
  padId: number;
  startOfTurnId: number;
  endOfTurnId: number;
  stopIds: number[];
  vocabSize: number;
}

const cache = new Map<string, Promise<Tokenizer>>();

/** Loads (once per directory) the tokenizer of a model directory. */
export function loadTokenizer(modelDir: string): Promise<Tokenizer> {
  const dir = path.resolve(modelDir);
  let t = cache.get(dir);
  if (!t) {
    t = load(dir);
    cache.set(dir, t);
    t.catch(() => cache.delete(dir));
  }
  return t;
}

function readJson(file: string): Record<string, unknown> {
  if (!fs.existsSync(file)) throw new RangeError(`Cannot load the tokenizer: "${file}" is missing (a model directory needs tokenizer.json and tokenizer_config.json)`);
  try {
    return JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e) {
    throw new SyntaxError(`Cannot load "${file}": ${(e as Error).message}`);
  }
}

async function load(dir: string): Promise<Tokenizer> {
  await Promise.resolve();
  const json = readJson(path.join(dir, "tokenizer.json"));
  const config = readJson(path.join(dir, "tokenizer_config.json"));
  // deno-lint-ignore no-explicit-any
  const tok: any = TokenizerLoader.fromPreTrained({ tokenizerJSON: json as any, tokenizerConfig: config as any });
  const vocab = new Map<string, number>();
  const added = (json.added_tokens ?? []) as { id: number; content: string; special?: boolean }[];
  for (const a of added) vocab.set(a.content, a.id);
  const model = json.model as { vocab?: Record<string, number> };
  const byId: string[] = [];
  for (const [k, v] of Object.entries(model.vocab ?? {})) byId[v] = k;
  for (const a of added) byId[a.id] = a.content;
  const idOf = (s: string, fallback: number) => vocab.get(s) ?? model.vocab?.[s] ?? fallback;
  const startOfTurnId = idOf("<start_of_turn>", -1);
  const endOfTurnId = idOf("<end_of_turn>", -1);
  if (startOfTurnId < 0 || endOfTurnId < 0) {
    throw new RangeError(`Cannot use the tokenizer in "${dir}": it has no <start_of_turn>/<end_of_turn> tokens (not a Gemma tokenizer)`);
  }
  const eosId = idOf("<eos>", 1);
  return {
    encode: (text, o) => Array.from(tok.encode(text, { add_special_tokens: o?.addSpecialTokens ?? false }) as number[]),
    decode: (ids, o) => tok.decode(ids, { skip_special_tokens: o?.skipSpecialTokens ?? false }),
    tokenText: (id) => (byId[id] ?? `<${id}>`).replaceAll("▁", " "),
    bosId: idOf("<bos>", 2),
    eosId,
    padId: idOf("<pad>", 0),
    startOfTurnId,
    endOfTurnId,
    stopIds: [eosId, endOfTurnId],
    vocabSize: byId.length,
  };
}
