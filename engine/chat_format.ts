/**
 * The Gemma chat formats, rendered by our own code exactly as the shipped templates do, plus the same
 * text cut into trained / untrained pieces for SFT label masks. Rules and sources: docs/CHAT_FORMAT.md.
 *
 * Gemma 1/2: `<start_of_turn>`/`<end_of_turn>`, no system role, strict user/model alternation.
 * Gemma 3:   the same turns; a system message is put, verbatim (not trimmed) + "\n\n", in front of the
 *            first user turn's content.
 * Gemma 4:   `<|turn>`/`<turn|>`, a native system turn, `<|channel>…<channel|>` thinking spans stripped
 *            from past model turns, and on 12B / 26B-A4B / 31B an empty thought block after the
 *            generation prompt.
 */
import type { Tokenizer } from "./tokenizer.ts";

export interface ChatMessage {
  role: "system" | "user" | "assistant" | "model";
  content: string;
}

/** Which chat format a model speaks (chatStyleOf derives it from the model directory). */
export interface ChatStyle {
  generation: 1 | 2 | 3 | 4;
  /** Gemma 4 12B/26B-A4B/31B: the generation prompt ends with an empty thought block (thinking off). */
  emptyThought?: boolean;
}

export interface ChatOptions {
  addGenerationPrompt?: boolean;
  generation?: ChatStyle["generation"];
  emptyThought?: boolean;
  /**
   * Training renders only: assistant turns at this message index or later are trained (default 0:
   * all of them). Earlier ones are history, rendered as a past turn is at inference.
   */
  trainFrom?: number;
}

export interface Segment {
  text: string;
  /** A model turn's content and its end-of-turn marker + "\n" are trained; everything else is prompt. */
  trained: boolean;
}

/** Gemma 4's empty thought block: what 12B/26B-A4B/31B put after `<|turn>model\n` with thinking off. */
export const EMPTY_THOUGHT = "<|channel>thought\n<channel|>";

/**
 * Gemma 4's strip_thinking: every `<|channel>…<channel|>` span removed, the rest trimmed. Written as
 * split/join (a `<|channel>` without its `<channel|>` stays) so the Jinja copy of the rule is the same.
 */
export function stripThinking(text: string): string {
  const parts = text.split("<|channel>");
  let out = parts[0];
  for (const p of parts.slice(1)) {
    const close = p.indexOf("<channel|>");
    out += close < 0 ? "<|channel>" + p : p.slice(close + "<channel|>".length);
  }
  return out.trim();
}

function roleError(index: number, msg: string): RangeError {
  return new RangeError(`Message ${index}: ${msg}`);
}

function checkContent(messages: ChatMessage[]) {
  messages.forEach((m, i) => {
    if (typeof m.content !== "string") throw new TypeError(`Message ${i}: content must be a string`);
  });
}

/** Gemma 1/2/3: the shipped template's rules (docs/CHAT_FORMAT.md §Gemma 3). */
function gemma3Segments(messages: ChatMessage[], opts: ChatOptions, generation: 1 | 2 | 3): Segment[] {
  let rest = messages;
  let prefix = "";
  const offset = messages[0]?.role === "system" ? 1 : 0;
  if (offset) {
    if (generation < 3) throw roleError(0, "Gemma 1 and 2 do not support a system message (merge it into the first user message)");
    // The Gemma 3 template keeps the system text verbatim: no trim.
    prefix = messages[0].content + "\n\n";
    rest = messages.slice(1);
  }
  const out: Segment[] = [{ text: "<bos>", trained: false }];
  rest.forEach((m, k) => {
    const index = k + offset;
    const isUser = m.role === "user";
    if (isUser !== (k % 2 === 0)) {
      throw roleError(index, `conversation roles must alternate user/assistant/user/assistant/… starting with user, got "${m.role}"`);
    }
    if (!isUser && m.role !== "assistant" && m.role !== "model") throw roleError(index, `role "${m.role}" is not allowed here (expected assistant)`);
    if (typeof m.content !== "string") throw roleError(index, "content must be a string");
    const role = isUser ? "user" : "model";
    out.push({ text: `<start_of_turn>${role}\n${k === 0 ? prefix : ""}`, trained: false });
    out.push({ text: `${m.content.trim()}<end_of_turn>\n`, trained: !isUser && index >= (opts.trainFrom ?? 0) });
  });
  if (opts.addGenerationPrompt) out.push({ text: "<start_of_turn>model\n", trained: false });
  return out;
}

/** Gemma 4: the shipped template's rules for text-only chats without tools (docs/CHAT_FORMAT.md §Gemma 4). */
function gemma4Segments(messages: ChatMessage[], opts: ChatOptions): Segment[] {
  const out: Segment[] = [{ text: "<bos>", trained: false }];
  let rest = messages;
  const offset = messages[0]?.role === "system" ? 1 : 0;
  if (offset) {
    out.push({ text: `<|turn>system\n${messages[0].content.trim()}<turn|>\n`, trained: false });
    rest = messages.slice(1);
  }
  let previousModel = false;
  rest.forEach((m, k) => {
    const index = k + offset;
    const isModel = m.role === "assistant" || m.role === "model";
    // The template merges a model message that follows another into one turn; that only happens
    // around tool calls, which our datasets cannot express, so two in a row are refused.
    if (isModel && previousModel) throw roleError(index, "two assistant messages in a row; put them in one message or add the user turn between them");
    previousModel = isModel;
    if (!isModel) {
      out.push({ text: `<|turn>${m.role}\n${m.content.trim()}<turn|>\n`, trained: false });
      return;
    }
    const trained = index >= (opts.trainFrom ?? 0);
    if (!trained) {
      out.push({ text: `<|turn>model\n${stripThinking(m.content)}<turn|>\n`, trained: false });
      return;
    }
    // A trained turn is what the model will generate after the generation prompt: its thinking (if
    // the data has any) is trained, and where the prompt ends with the empty thought block, so does
    // the untrained header here, so training and inference see the same prefix.
    const content = m.content.trim();
    const header = opts.emptyThought && !content.startsWith("<|channel>") ? `<|turn>model\n${EMPTY_THOUGHT}` : "<|turn>model\n";
    out.push({ text: header, trained: false }, { text: `${content}<turn|>\n`, trained: true });
  });
  if (opts.addGenerationPrompt) out.push({ text: `<|turn>model\n${opts.emptyThought ? EMPTY_THOUGHT : ""}`, trained: false });
  return out;
}

/**
 * Renders the conversation into pieces marked trained or not. Joined, they are exactly renderChat's
 * text, except that on empty-thought Gemma 4 models a trained turn carries the empty thought block
 * its generation prompt would have had.
 */
export function renderChatSegments(messages: ChatMessage[], opts: ChatOptions = {}): Segment[] {
  checkContent(messages);
  const generation = opts.generation ?? 3;
  return generation === 4 ? gemma4Segments(messages, opts) : gemma3Segments(messages, opts, generation);
}

/** The prompt text as the model's own chat template renders it (history turns are never trained). */
export function renderChat(messages: ChatMessage[], opts: ChatOptions = {}): string {
  return renderChatSegments(messages, { ...opts, trainFrom: Number.MAX_SAFE_INTEGER }).map((s) => s.text).join("");
}

/** The turn markers of a generation: what ends a model turn, for stops and label masks. */
export function turnMarkers(generation: ChatStyle["generation"]): { start: string; end: string } {
  return generation === 4 ? { start: "<|turn>", end: "<turn|>" } : { start: "<start_of_turn>", end: "<end_of_turn>" };
}

const GENERATION_OF_MODEL_TYPE: Record<string, ChatStyle["generation"]> = {
  gemma: 1,
  gemma2: 2,
  gemma3: 3,
  gemma3_text: 3,
  gemma4: 4,
  gemma4_text: 4,
  gemma4_unified: 4,
  gemma4_unified_text: 4,
};

/**
 * The chat format of a model from its config.json (raw, as read) and chat template text, when there is
 * one. Gemma 4's generation prompt differs by size (spec: E2B/E4B bare, 12B/26B-A4B/31B with the empty
 * thought block): the template decides when it is a Gemma 4 template; without one, the config does
 * (the E-models are the ones with per-layer embeddings, `hidden_size_per_layer_input` > 0).
 */
export function chatStyleOf(config: Record<string, unknown> | undefined, template?: string, gemma4Tokens = false): ChatStyle {
  const text = (config?.text_config ?? config ?? {}) as Record<string, unknown>;
  const type = String(config?.model_type ?? text.model_type ?? "");
  const generation = GENERATION_OF_MODEL_TYPE[type] ?? GENERATION_OF_MODEL_TYPE[String(text.model_type)] ?? (gemma4Tokens ? 4 : 3);
  if (generation !== 4) return { generation };
  if (template?.includes("<|turn>")) return { generation, emptyThought: /<\|channel>thought(\\n|\n)<channel\|>/.test(template) };
  return { generation, emptyThought: !(Number(text.hidden_size_per_layer_input ?? 0) > 0) };
}

/**
 * The prompt ids for chat messages in the model's chat format (its tokenizer knows it: `tok.chat`), no
 * second BOS. A generation number given by older callers keeps the tokenizer's style when it agrees.
 */
export function chatPromptIds(tok: Tokenizer, messages: ChatMessage[], style: ChatStyle | ChatStyle["generation"] = tok.chat): number[] {
  const s = typeof style === "number" ? (style === tok.chat.generation ? tok.chat : { generation: style }) : style;
  return tok.encode(renderChat(messages, { ...s, addGenerationPrompt: true }), { addSpecialTokens: false });
}
