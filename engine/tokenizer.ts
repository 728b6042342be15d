/**
 * The model's tokenizer from its own tokenizer.json + tokenizer_config.json (via @lenml/tokenizers).
 * The chat template in the directory is never executed: engine/chat_format.ts renders the format, and
 * the template text only tells which Gemma 4 generation prompt the model uses (docs/CHAT_FORMAT.md).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { TokenizerLoader } from "@lenml/tokenizers";
import { type ChatStyle, chatStyleOf } from "./chat_format.ts";

export interface Tokenizer {
  encode(text: string, opts?: { addSpecialTokens?: boolean }): number[];
  decode(ids: number[], opts?: { skipSpecialTokens?: boolean }): string;
  /** The text of one token as stored (special tokens verbatim, "▁" shown as a space). */
  tokenText(id: number): string;
  bosId: number;
  eosId: number;
  padId: number;
  /** `<start_of_turn>`/`<end_of_turn>` (Gemma 1–3) or `<|turn>`/`<turn|>` (Gemma 4). */
  startOfTurnId: number;
  endOfTurnId: number;
  stopIds: number[];
  vocabSize: number;
  /** The chat format of the model in this directory (from its config.json and chat template). */
  chat: ChatStyle;
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
  const gemma4Turns = idOf("<|turn>", -1) >= 0 && idOf("<turn|>", -1) >= 0;
  const startOfTurnId = gemma4Turns ? idOf("<|turn>", -1) : idOf("<start_of_turn>", -1);
  const endOfTurnId = gemma4Turns ? idOf("<turn|>", -1) : idOf("<end_of_turn>", -1);
  if (startOfTurnId < 0 || endOfTurnId < 0) {
    throw new RangeError(`Cannot use the tokenizer in "${dir}": it has neither <start_of_turn>/<end_of_turn> nor <|turn>/<turn|> tokens (not a Gemma tokenizer)`);
  }
  const eosId = idOf("<eos>", 1);
  const chat = chatStyleOf(readOptionalJson(path.join(dir, "config.json")), chatTemplateText(dir, config), gemma4Turns);
  if ((chat.generation === 4) !== gemma4Turns) {
    throw new RangeError(
      `Cannot use the tokenizer in "${dir}": config.json is a Gemma ${chat.generation} model but the tokenizer has ${
        gemma4Turns ? "Gemma 4's <|turn>/<turn|>" : "<start_of_turn>/<end_of_turn>"
      } tokens; use the tokenizer files that came with the model`,
    );
  }
  // Gemma 4 also stops at <|tool_response> (its generation_config lists it).
  const toolResponse = gemma4Turns ? idOf("<|tool_response>", -1) : -1;
  return {
    encode: (text, o) => Array.from(tok.encode(text, { add_special_tokens: o?.addSpecialTokens ?? false }) as number[]),
    decode: (ids, o) => tok.decode(ids, { skip_special_tokens: o?.skipSpecialTokens ?? false }),
    tokenText: (id) => (byId[id] ?? `<${id}>`).replaceAll("▁", " "),
    bosId: idOf("<bos>", 2),
    eosId,
    padId: idOf("<pad>", 0),
    startOfTurnId,
    endOfTurnId,
    stopIds: toolResponse >= 0 ? [eosId, endOfTurnId, toolResponse] : [eosId, endOfTurnId],
    vocabSize: byId.length,
    chat,
  };
}

function readOptionalJson(file: string): Record<string, unknown> | undefined {
  if (!fs.existsSync(file)) return undefined;
  try {
    return JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e) {
    throw new SyntaxError(`Cannot read "${file}": ${(e as Error).message}`);
  }
}

/** The chat template: chat_template.jinja (transformers ≥ 4.43 writes it) or tokenizer_config's field. */
function chatTemplateText(dir: string, config: Record<string, unknown>): string | undefined {
  const file = path.join(dir, "chat_template.jinja");
  if (fs.existsSync(file)) return fs.readFileSync(file, "utf8");
  const t = config.chat_template;
  if (typeof t === "string") return t;
  // A list of named templates: the default one.
  if (Array.isArray(t)) return (t.find((x) => x?.name === "default") ?? t[0])?.template;
  return undefined;
}
