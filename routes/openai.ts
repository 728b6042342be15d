/**
 * OpenAI-compatible endpoint: `GET /v1/models`, `POST /v1/chat/completions` (stream and non-stream),
 * so existing clients can talk to a tuned model. Errors use OpenAI's `{"error": {…}}` shape.
 */
import { Hono } from "hono";
import type { Context } from "hono";
import { streamSSE } from "hono/streaming";
import { z } from "zod";
import { chatPromptIds, generateIds, type ModelCache, type Tokenizer } from "../engine/mod.ts";

const Message = z.object({
  role: z.enum(["system", "user", "assistant", "model"]),
  content: z.union([z.string().max(200_000), z.array(z.object({ type: z.literal("text"), text: z.string().max(200_000) })).max(100)]),
});

const STOP_LIMITS = { error: "must be a string of at most 200 characters, or a list of at most 8 such strings" };

export const ChatRequest = z.object({
  model: z.string().min(1).max(300),
  messages: z.array(Message).min(1).max(500),
  stream: z.boolean().default(false),
  temperature: z.number().min(0).max(5).default(0.7),
  top_p: z.number().gt(0).max(1).default(1),
  top_k: z.number().int().min(0).max(100_000).default(0),
  min_p: z.number().min(0).max(1).default(0),
  repetition_penalty: z.number().min(0.1).max(10).default(1),
  max_tokens: z.number().int().min(1).max(8192).optional(),
  max_completion_tokens: z.number().int().min(1).max(8192).optional(),
  seed: z.number().int().min(0).max(2 ** 31 - 1).optional(),
  stop: z.union([z.string().max(200, STOP_LIMITS), z.array(z.string().max(200, STOP_LIMITS)).max(8, STOP_LIMITS)], STOP_LIMITS).optional(),
  n: z.literal(1).default(1),
  user: z.string().max(200).optional(),
}).passthrough();

export type ChatRequest = z.infer<typeof ChatRequest>;

/** The largest /v1 request body (app.tsx answers 413 beyond it, before reading it). */
export const MAX_CHAT_BODY = 4 * 1024 * 1024;

export function chatBodyTooLarge(): string {
  return `Request body is over the limit of ${MAX_CHAT_BODY} bytes (4 MiB); send fewer or shorter messages`;
}

export function oaiError(c: Context, status: 400 | 404 | 413 | 500, message: string, param: string | null = null) {
  return c.json({ error: { message, type: status === 404 ? "not_found_error" : "invalid_request_error", param, code: null } }, status);
}

function textOf(content: z.infer<typeof Message>["content"]): string {
  return typeof content === "string" ? content : content.map((p) => p.text).join("");
}

/** Streams decoded text as tokens arrive, holding back any tail that could start a stop string. */
class TextStream {
  private sent = 0;
  constructor(readonly tok: Tokenizer, readonly stops: string[]) {}
  /** Returns [new text to emit, stopped?]. */
  push(ids: number[], final = false): [string, boolean] {
    let text = this.tok.decode(ids, { skipSpecialTokens: true });
    let stopped = false;
    for (const s of this.stops) {
      const at = text.indexOf(s);
      if (at >= 0) {
        text = text.slice(0, at);
        stopped = true;
      }
    }
    // An incomplete UTF-8 sequence decodes as U+FFFD: wait for the next token.
    let upto = text.length;
    if (!final && !stopped) {
      if (text.endsWith("\uFFFD")) upto = text.lastIndexOf("\uFFFD");
      for (const s of this.stops) for (let k = Math.min(s.length - 1, text.length); k > 0; k--) {
        if (s.startsWith(text.slice(text.length - k))) {
          upto = Math.min(upto, text.length - k);
          break;
        }
      }
    }
    const out = text.slice(this.sent, Math.max(this.sent, upto));
    this.sent = Math.max(this.sent, upto);
    return [out, stopped];
  }
}

export function openaiRoutes(models: ModelCache) {
  const app = new Hono();

  app.get("/v1/models", (c) =>
    c.json({ object: "list", data: models.list().map((m) => ({ id: m.id, object: "model", created: 0, owned_by: "gemma-tuner", kind: m.kind })) }));

  app.post("/v1/chat/completions", async (c) => {
    let body: unknown;
    const raw = await c.req.text();
    if (raw.length > MAX_CHAT_BODY) return oaiError(c, 413, chatBodyTooLarge());
    try {
      body = JSON.parse(raw);
    } catch (e) {
      return oaiError(c, 400, `Request body is not valid JSON: ${(e as Error).message}`);
    }
    const parsed = ChatRequest.safeParse(body);
    if (!parsed.success) {
      const i = parsed.error.issues[0];
      return oaiError(c, 400, `${i.path.join(".") || "body"}: ${i.message}`, i.path.join(".") || null);
    }
    const req = parsed.data;
    if (!models.list().some((m) => m.id === req.model)) return oaiError(c, 404, `The model "${req.model}" does not exist; see GET /v1/models`, "model");
    const messages = req.messages.map((m) => ({ role: m.role, content: textOf(m.content) }));
    const stops = req.stop === undefined ? [] : Array.isArray(req.stop) ? req.stop : [req.stop];
    const maxTokens = req.max_completion_tokens ?? req.max_tokens ?? 256;
    const id = `chatcmpl-${crypto.randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    const controller = new AbortController();

    const run = (onText: (text: string) => void) =>
      models.use(req.model, async (gen, tok) => {
        let prompt: number[];
        try {
          prompt = chatPromptIds(tok, messages);
        } catch (e) {
          throw new RangeError((e as Error).message);
        }
        const ts = new TextStream(tok, stops);
        const ids: number[] = [];
        let stoppedByString = false;
        const r = await generateIds(gen, prompt, {
          temperature: req.temperature,
          topP: req.top_p,
          topK: req.top_k,
          minP: req.min_p,
          repetitionPenalty: req.repetition_penalty,
          seed: req.seed ?? 0,
          maxNewTokens: maxTokens,
          stopIds: [...new Set([...tok.stopIds, ...gen.config.eosTokenIds])],
          signal: controller.signal,
          onToken: (t) => {
            ids.push(t);
            const [text, stopped] = ts.push(ids);
            if (text) onText(text);
            if (stopped) stoppedByString = true;
            return !stopped;
          },
        });
        const [tail] = ts.push(ids, true);
        if (tail && !stoppedByString) onText(tail);
        const finish = stoppedByString || r.stopReason === "stop" ? "stop" : "length";
        return { finish, promptTokens: r.promptTokens, completionTokens: r.ids.length, tokensPerSecond: r.tokensPerSecond };
      });

    if (!req.stream) {
      let text = "";
      try {
        const r = await run((t) => (text += t));
        return c.json({
          id, object: "chat.completion", created, model: req.model,
          choices: [{ index: 0, message: { role: "assistant", content: text }, finish_reason: r.finish }],
          usage: { prompt_tokens: r.promptTokens, completion_tokens: r.completionTokens, total_tokens: r.promptTokens + r.completionTokens },
          tokens_per_second: r.tokensPerSecond,
        });
      } catch (e) {
        return oaiError(c, e instanceof RangeError ? 400 : 500, (e as Error).message);
      }
    }

    return streamSSE(c, async (stream) => {
      stream.onAbort(() => controller.abort());
      const chunk = (delta: Record<string, unknown>, finish: string | null, extra: Record<string, unknown> = {}) =>
        stream.writeSSE({ data: JSON.stringify({ id, object: "chat.completion.chunk", created, model: req.model, choices: [{ index: 0, delta, finish_reason: finish }], ...extra }) });
      await chunk({ role: "assistant", content: "" }, null);
      const pending: Promise<void>[] = [];
      try {
        const r = await run((t) => void pending.push(chunk({ content: t }, null)));
        await Promise.all(pending);
        await chunk({}, r.finish, {
          usage: { prompt_tokens: r.promptTokens, completion_tokens: r.completionTokens, total_tokens: r.promptTokens + r.completionTokens },
          tokens_per_second: r.tokensPerSecond,
        });
      } catch (e) {
        await stream.writeSSE({ data: JSON.stringify({ error: { message: (e as Error).message, type: "server_error" } }) });
      }
      await stream.writeSSE({ data: "[DONE]" });
    });
  });

  return app;
}
