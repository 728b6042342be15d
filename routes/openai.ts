/**
 * OpenAI-compatible endpoint: `GET /v1/models`, `GET /v1/models/{id}`, `POST /v1/chat/completions`
 * (stream and non-stream), so existing clients (the official `openai` SDK among them) can talk to a
 * tuned model. Every /v1 error, this module's or the app's (unknown route, token, guards), has
 * OpenAI's shape `{"error": {message, type, param, code}}` (`openaiErrorShape`). Fields the server
 * does not implement are refused by name rather than ignored. Generation runs in the model cache's
 * worker (engine/model_cache.ts), so a chat never holds this thread. The surface: docs/API.md.
 */
import { Hono } from "hono";
import type { Context, MiddlewareHandler } from "hono";
import { streamSSE } from "hono/streaming";
import { z } from "zod";
import { type ChatMessage, ContextLengthError, type ModelCache } from "../engine/mod.ts";

const Text = z.string().max(200_000);
const Part = z.object({ type: z.string(), text: Text.optional() }).superRefine((p, ctx) => {
  if (p.type !== "text") ctx.addIssue({ code: "custom", message: `only text content parts are supported (got type "${p.type}")` });
  else if (p.text === undefined) ctx.addIssue({ code: "custom", message: `a text part needs "text"` });
});

const Message = z.object({
  // "developer" is OpenAI's newer name for the system role.
  role: z.enum(["developer", "system", "user", "assistant", "model"], {
    error: (i) => `role ${JSON.stringify(i.input)} is not supported (use developer, system, user or assistant; tool calling is not implemented)`,
  }),
  content: z.union([Text, z.array(Part).max(100)], { error: "content must be a string or an array of text parts" }),
});

const STOP_LIMITS = { error: "must be a string of at most 200 characters, or a list of at most 8 such strings" };

export const ChatRequest = z.object({
  model: z.string().min(1).max(300),
  messages: z.array(Message).min(1).max(500),
  stream: z.boolean().default(false),
  stream_options: z.object({ include_usage: z.boolean().optional() }).nullish(),
  temperature: z.number().min(0).max(5).default(0.7),
  top_p: z.number().gt(0).max(1).default(1),
  top_k: z.number().int().min(0).max(100_000).default(0),
  min_p: z.number().min(0).max(1).default(0),
  repetition_penalty: z.number().min(0.1).max(10).default(1),
  max_tokens: z.number().int().min(1).max(8192).optional(),
  max_completion_tokens: z.number().int().min(1).max(8192).optional(),
  seed: z.number().int().min(0).max(2 ** 31 - 1).optional(),
  stop: z.union([z.string().max(200, STOP_LIMITS), z.array(z.string().max(200, STOP_LIMITS)).max(8, STOP_LIMITS)], STOP_LIMITS).nullish(),
  n: z.number().int().default(1),
  user: z.string().max(200).optional(),
}).passthrough();

export type ChatRequest = z.infer<typeof ChatRequest>;

/** The largest /v1 request body (app.tsx answers 413 beyond it, before reading it). */
export const MAX_CHAT_BODY = 4 * 1024 * 1024;

export function chatBodyTooLarge(): string {
  return `Request body is over the limit of ${MAX_CHAT_BODY} bytes (4 MiB); send fewer or shorter messages`;
}

const none = (v: unknown) => v === undefined || v === null;
const empty = (v: unknown) => none(v) || (typeof v === "object" && Object.keys(v as object).length === 0);

/**
 * Request fields of OpenAI's chat API that ask for something this server does not do: refused with a
 * 400 naming the field (a client that relies on one must not get a reply that silently lacks it).
 * Values that ask for nothing (null, false, `n: 1`, `response_format: {type: "text"}`) pass.
 */
const UNSUPPORTED: { field: string; asks: (v: unknown) => boolean; why: string }[] = [
  { field: "tools", asks: (v) => !none(v), why: "tool calling is not implemented" },
  { field: "tool_choice", asks: (v) => !none(v) && v !== "none", why: "tool calling is not implemented" },
  { field: "parallel_tool_calls", asks: (v) => v === true, why: "tool calling is not implemented" },
  { field: "functions", asks: (v) => !none(v), why: "function calling is not implemented" },
  { field: "function_call", asks: (v) => !none(v) && v !== "none", why: "function calling is not implemented" },
  {
    field: "response_format",
    asks: (v) => !none(v) && (v as { type?: unknown }).type !== "text",
    why: 'structured output (JSON mode, JSON schema) is not implemented; only {"type": "text"}',
  },
  { field: "logprobs", asks: (v) => v === true, why: "log probabilities are not returned" },
  { field: "top_logprobs", asks: (v) => !none(v) && v !== 0, why: "log probabilities are not returned" },
  { field: "n", asks: (v) => !none(v) && v !== 1, why: "one choice per request: n must be 1" },
  { field: "logit_bias", asks: (v) => !empty(v), why: "logit bias is not implemented" },
  { field: "presence_penalty", asks: (v) => !none(v) && v !== 0, why: "use repetition_penalty (Hugging Face's form) instead" },
  { field: "frequency_penalty", asks: (v) => !none(v) && v !== 0, why: "use repetition_penalty (Hugging Face's form) instead" },
  { field: "audio", asks: (v) => !none(v), why: "audio output is not implemented" },
  { field: "modalities", asks: (v) => Array.isArray(v) && v.some((m) => m !== "text"), why: "only text output is implemented" },
  { field: "prediction", asks: (v) => !none(v), why: "predicted outputs are not implemented" },
  { field: "web_search_options", asks: (v) => !none(v), why: "web search is not implemented" },
];

type OaiStatus = 400 | 401 | 403 | 404 | 405 | 413 | 421 | 500;

function errorBody(status: number, message: string, param: string | null = null, code: string | null = null) {
  return { error: { message, type: status >= 500 ? "server_error" : status === 401 ? "authentication_error" : "invalid_request_error", param, code } };
}

export function oaiError(c: Context, status: OaiStatus, message: string, param: string | null = null, code: string | null = null) {
  return c.json(errorBody(status, message, param, code), status);
}

/** `messages.1.content` → `messages[1].content`, as OpenAI names params. */
function paramName(p: PropertyKey[]): string | null {
  if (!p.length) return null;
  return p.map((k, i) => (typeof k === "number" ? `[${k}]` : i === 0 ? String(k) : `.${String(k)}`)).join("");
}

function textOf(content: z.infer<typeof Message>["content"]): string {
  return typeof content === "string" ? content : content.map((p) => p.text ?? "").join("");
}

/**
 * Gives every /v1 error response OpenAI's shape: the app's own answers (unknown route, token, cross-site
 * guard, the one `onError`) say `{"error": "text"}`, which OpenAI clients cannot read. Mounted first on
 * /v1/* in routes/app.tsx, so it sees every answer there.
 */
export function openaiErrorShape(): MiddlewareHandler {
  return async (c, next) => {
    await next();
    const res = c.res;
    if (res.status < 400) return;
    const text = await res.clone().text();
    let j: unknown = null;
    try {
      j = JSON.parse(text);
    } catch { /* a text or HTML answer: its text becomes the message */ }
    const e = (j as { error?: unknown } | null)?.error;
    if (e && typeof e === "object" && typeof (e as { message?: unknown }).message === "string") return;
    const message = typeof e === "string" ? e : res.status === 404 ? `No route for ${c.req.method} ${c.req.path}` : text.slice(0, 500) || res.statusText;
    const headers = new Headers(res.headers);
    headers.set("Content-Type", "application/json");
    headers.delete("Content-Length");
    c.res = undefined;
    c.res = new Response(JSON.stringify(errorBody(res.status, message, null, res.status === 404 ? "unknown_url" : null)), { status: res.status, headers });
  };
}

function modelObject(m: { id: string; kind: string }) {
  return { id: m.id, object: "model", created: 0, owned_by: "gemma-tuner", kind: m.kind };
}

export function openaiRoutes(models: ModelCache) {
  const app = new Hono();

  app.get("/v1/models", (c) => c.json({ object: "list", data: models.list().map(modelObject) }));

  // Ids contain "/" ("<runId>/final"): the SDK sends it escaped (%2F), curl users plain; both match.
  app.get("/v1/models/:id{.+}", (c) => {
    const id = c.req.param("id");
    const m = models.list().find((m) => m.id === id);
    if (!m) return oaiError(c, 404, `The model "${id}" does not exist; see GET /v1/models`, "model", "model_not_found");
    return c.json(modelObject(m));
  });

  app.post("/v1/chat/completions", async (c) => {
    let body: unknown;
    const raw = await c.req.text();
    if (raw.length > MAX_CHAT_BODY) return oaiError(c, 413, chatBodyTooLarge());
    try {
      body = JSON.parse(raw);
    } catch (e) {
      return oaiError(c, 400, `Request body is not valid JSON: ${(e as Error).message}`);
    }
    if (body === null || typeof body !== "object" || Array.isArray(body)) return oaiError(c, 400, "Request body must be a JSON object");
    for (const u of UNSUPPORTED) {
      if (u.field in body && u.asks((body as Record<string, unknown>)[u.field])) {
        return oaiError(c, 400, `"${u.field}" is not supported by this server: ${u.why}. Remove the field.`, u.field, "unsupported_parameter");
      }
    }
    const parsed = ChatRequest.safeParse(body);
    if (!parsed.success) {
      const i = parsed.error.issues[0];
      const param = paramName(i.path);
      return oaiError(c, 400, `${param ?? "body"}: ${i.message}`, param);
    }
    const req = parsed.data;
    if (!models.list().some((m) => m.id === req.model)) {
      return oaiError(c, 404, `The model "${req.model}" does not exist; see GET /v1/models`, "model", "model_not_found");
    }
    const messages: ChatMessage[] = req.messages.map((m) => ({ role: m.role === "developer" ? "system" : m.role, content: textOf(m.content) }));
    const stops = none(req.stop) ? [] : Array.isArray(req.stop) ? req.stop : [req.stop!];
    const id = `chatcmpl-${crypto.randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    const controller = new AbortController();
    // The client going away cancels the chat. Deno also aborts this signal once a response is sent
    // (its legacy behaviour), so it is listened to only while no response is under way; a stream
    // has its own onAbort.
    const clientGone = () => controller.abort();
    c.req.raw.signal.addEventListener("abort", clientGone, { once: true });

    let onText: (text: string) => void = () => {};
    const chat = models.chat(req.model, {
      messages,
      sampling: { temperature: req.temperature, topP: req.top_p, topK: req.top_k, minP: req.min_p, repetitionPenalty: req.repetition_penalty, seed: req.seed ?? 0 },
      maxTokens: req.max_completion_tokens ?? req.max_tokens ?? 256,
      stops,
    }, { onText: (t) => onText(t), signal: controller.signal });
    // Refusals (a prompt over the context, roles out of order) come back before any generation.
    try {
      await chat.started;
    } catch (e) {
      c.req.raw.signal.removeEventListener("abort", clientGone);
      controller.abort();
      if (e instanceof ContextLengthError) return oaiError(c, 400, e.message, "messages", e.code);
      throw e;
    }
    const usage = (r: { promptTokens: number; completionTokens: number }) => ({
      prompt_tokens: r.promptTokens,
      completion_tokens: r.completionTokens,
      total_tokens: r.promptTokens + r.completionTokens,
    });

    if (!req.stream) {
      let text = "";
      onText = (t) => (text += t);
      const r = await chat.done.finally(() => c.req.raw.signal.removeEventListener("abort", clientGone));
      return c.json({
        id,
        object: "chat.completion",
        created,
        model: req.model,
        choices: [{ index: 0, message: { role: "assistant", content: text, refusal: null }, logprobs: null, finish_reason: r.finish === "stop" ? "stop" : "length" }],
        usage: usage(r),
        tokens_per_second: r.tokensPerSecond,
      });
    }

    c.req.raw.signal.removeEventListener("abort", clientGone);
    const includeUsage = req.stream_options?.include_usage === true;
    return streamSSE(c, async (stream) => {
      stream.onAbort(() => controller.abort());
      // OpenAI sends `usage: null` on every chunk when usage was asked for, and the numbers in a last chunk.
      const extra = includeUsage ? { usage: null } : {};
      const chunk = (delta: Record<string, unknown>, finish: string | null) =>
        stream.writeSSE({
          data: JSON.stringify({ id, object: "chat.completion.chunk", created, model: req.model, choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }], ...extra }),
        });
      let writes = chunk({ role: "assistant", content: "" }, null);
      onText = (t) => void (writes = writes.then(() => chunk({ content: t }, null)));
      try {
        const r = await chat.done;
        await writes;
        if (r.finish === "aborted") return;
        await chunk({}, r.finish);
        if (includeUsage) {
          await stream.writeSSE({
            data: JSON.stringify({ id, object: "chat.completion.chunk", created, model: req.model, choices: [], usage: usage(r), tokens_per_second: r.tokensPerSecond }),
          });
        }
      } catch (e) {
        console.error(`POST /v1/chat/completions (stream):`, e);
        await writes.catch(() => {});
        await stream.writeSSE({ data: JSON.stringify(errorBody(e instanceof RangeError ? 400 : 500, (e as Error).message)) });
      }
      await stream.writeSSE({ data: "[DONE]" });
    });
  });

  return app;
}
