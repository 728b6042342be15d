import { renderChat, renderChatSegments } from "./chat_format.ts";

function eq(a: unknown, b: unknown) {
  if (JSON.stringify(a) !== JSON.stringify(b)) throw new Error(`expected ${JSON.stringify(b)}, got ${JSON.stringify(a)}`);
}

Deno.test("chat format renders the spec examples exactly", () => {
  eq(renderChat([{ role: "user", content: "Hi there" }], { addGenerationPrompt: true }), "<bos><start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n");
  eq(
    renderChat([{ role: "system", content: "Be brief." }, { role: "user", content: "  What is 2+2?  " }, { role: "assistant", content: "4" }]),
    "<bos><start_of_turn>user\nBe brief.\n\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n4<end_of_turn>\n",
  );
  eq(
    renderChat([{ role: "user", content: "A" }, { role: "assistant", content: "B" }, { role: "user", content: "C" }], { addGenerationPrompt: true }),
    "<bos><start_of_turn>user\nA<end_of_turn>\n<start_of_turn>model\nB<end_of_turn>\n<start_of_turn>user\nC<end_of_turn>\n<start_of_turn>model\n",
  );
});

Deno.test("segments mark assistant content and its end_of_turn as trained", () => {
  const segs = renderChatSegments([{ role: "user", content: "A" }, { role: "assistant", content: "B" }]);
  eq(segs.filter((s) => s.trained).map((s) => s.text), ["B<end_of_turn>\n"]);
  eq(segs.map((s) => s.text).join(""), renderChat([{ role: "user", content: "A" }, { role: "assistant", content: "B" }]));
});

Deno.test("roles out of order and system on Gemma 2 are refused with the message index", () => {
  let msg = "";
  try {
    renderChat([{ role: "user", content: "a" }, { role: "user", content: "b" }]);
  } catch (e) {
    msg = (e as Error).message;
  }
  if (!msg.includes("Message 1")) throw new Error(`got: ${msg}`);
  msg = "";
  try {
    renderChat([{ role: "system", content: "s" }, { role: "user", content: "b" }], { generation: 2 });
  } catch (e) {
    msg = (e as Error).message;
  }
  if (!msg.includes("system")) throw new Error(`got: ${msg}`);
});
