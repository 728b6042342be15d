/** The OpenAI-compatible endpoint with a real HTTP client against the running server. */
import { withServer } from "./_server.ts";
import { assert } from "./_assert.ts";

Deno.test({
  name: "OpenAI API: models, non-stream and stream completions agree, errors in OpenAI's shape",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    await withServer(async (base) => {
      const models = await (await fetch(`${base}/v1/models`)).json();
      assert(models.object === "list" && models.data.some((m: { id: string }) => m.id === "demo"), JSON.stringify(models));
      const body = { model: "demo", messages: [{ role: "system", content: "Be brief." }, { role: "user", content: "Hello there" }], temperature: 0, max_tokens: 8 };
      const r = await fetch(`${base}/v1/chat/completions`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      const j = await r.json();
      assert(r.status === 200 && j.object === "chat.completion", JSON.stringify(j));
      const text = j.choices[0].message.content as string;
      assert(j.usage.completion_tokens > 0 && j.usage.prompt_tokens > 5, JSON.stringify(j.usage));
      assert(["stop", "length"].includes(j.choices[0].finish_reason), j.choices[0].finish_reason);

      const s = await fetch(`${base}/v1/chat/completions`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ ...body, stream: true }) });
      assert(s.headers.get("Content-Type")?.startsWith("text/event-stream"), `stream content type ${s.headers.get("Content-Type")}`);
      const raw = await s.text();
      const events = raw.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6));
      assert(events.at(-1) === "[DONE]", "no [DONE]");
      const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
      const streamed = chunks.map((c) => c.choices?.[0]?.delta?.content ?? "").join("");
      assert(streamed === text, `stream gave ${JSON.stringify(streamed)}, non-stream ${JSON.stringify(text)}`);
      assert(chunks.at(-1).choices[0].finish_reason && chunks.at(-1).usage, "no final chunk with usage");

      const bad = await fetch(`${base}/v1/chat/completions`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ model: "demo", messages: [], temperature: 9 }) });
      const be = await bad.json();
      assert(bad.status === 400 && typeof be.error.message === "string" && be.error.type === "invalid_request_error", JSON.stringify(be));
      const missing = await fetch(`${base}/v1/chat/completions`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ ...body, model: "nope/final" }) });
      assert(missing.status === 404, `unknown model gave ${missing.status}`);
      await missing.body?.cancel();
      const order = await fetch(`${base}/v1/chat/completions`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ ...body, messages: [{ role: "assistant", content: "x" }] }) });
      assert(order.status === 400 && /alternate/.test((await order.json()).error.message), "roles out of order not a 400");
    });
  },
});
