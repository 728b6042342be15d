/**
 * The Gemma chat format, rendered by our own code exactly as the shipped templates do
 * (spec/GEMMA.md §6.2), plus the same text cut into trained / untrained pieces for label masks (§6.3).
 */
import type { Tokenizer } from "./tokenizer.ts";

export interface ChatMessage {
  role: "system" | "user" | "assistant" | "model";
  content: string;
}

export interface ChatOptions {
  addGenerationPrompt?: boolean;
  /** Gemma 1 and 2 have no system role. */
  generation?: 1 | 2 | 3 | 4;
}

export interface Segment {
  text: string;
  /** Assistant content and its "<end_of_turn>\n" are trained; everything else is prompt. */
  trained: boolean;
}

/** Renders the conversation into pieces; joined, they are exactly renderChat's text. */
export function renderChatSegments(messages: ChatMessage[], opts: ChatOptions = {}): Segment[] {
  const generation = opts.generation ?? 3;
  let rest = messages;
  let prefix = "";
  if (messages[0]?.role === "system") {
    if (generation < 3) throw new RangeError("Message 0: Gemma 1 and 2 do not support a system message (merge it into the first user message)");
    prefix = messages[0].content.trim() + "\n\n";
    rest = messages.slice(1);
  }
  const out: Segment[] = [{ text: "<bos>", trained: false }];
  rest.forEach((m, k) => {
    const index = k + (prefix || messages[0]?.role === "system" ? 1 : 0);
    const isUser = m.role === "user";
    if (isUser !== (k % 2 === 0)) {
      throw new RangeError(`Message ${index}: conversation roles must alternate user/assistant/user/assistant/… starting with user, got "${m.role}"`);
    }
    if (!isUser && m.role !== "assistant" && m.role !== "model") {
      throw new RangeError(`Message ${index}: role "${m.role}" is not allowed here (expected assistant)`);
    }
    if (typeof m.content !== "string") throw new RangeError(`Message ${index}: content must be a string`);
    const role = isUser ? "user" : "model";
    out.push({ text: `<start_of_turn>${role}\n${k === 0 ? prefix : ""}`, trained: false });
    if (isUser) out.push({ text: `${m.content.trim()}<end_of_turn>\n`, trained: false });
    else out.push({ text: `${m.content.trim()}<end_of_turn>\n`, trained: true });
  });
  if (opts.addGenerationPrompt) out.push({ text: "<start_of_turn>model\n", trained: false });
  return out;
}

export function renderChat(messages: ChatMessage[], opts: ChatOptions = {}): string {
  return renderChatSegments(messages, opts).map((s) => s.text).join("");
}

/** The prompt ids for chat messages (rendered by our own template, no second BOS). */
export function chatPromptIds(tok: Tokenizer, messages: ChatMessage[], generation: 1 | 2 | 3 | 4): number[] {
  return tok.encode(renderChat(messages, { addGenerationPrompt: true, generation }), { addSpecialTokens: false });
}
