/**
 * The playground chat: multi-turn Gemma chat with a system prompt, tokens streamed from
 * /v1/chat/completions, tokens/s and counts, stop, copy, clear; optionally the same conversation
 * sent to a second model side by side (same prompt, same seed) to see what fine-tuning changed.
 */
import { useEffect, useRef, useState } from "preact/hooks";

export interface ChatProps {
  models: { id: string; label: string }[];
  model: string;
  compare?: string;
}

interface Msg {
  role: "user" | "assistant";
  content: string;
}

interface Column {
  model: string;
  messages: Msg[];
  stats: string;
  busy: boolean;
}

async function streamChat(
  model: string,
  body: Record<string, unknown>,
  signal: AbortSignal,
  onText: (t: string) => void,
): Promise<string> {
  const r = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
    body: JSON.stringify({ ...body, model, stream: true, stream_options: { include_usage: true } }),
    signal,
  });
  if (!r.ok || !r.body) {
    const j = await r.json().catch(() => ({}));
    throw new Error(j?.error?.message ?? `HTTP ${r.status}`);
  }
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "", stats = "", finish = "";
  while (true) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += value;
    let nl;
    while ((nl = buf.indexOf("\n\n")) >= 0) {
      const event = buf.slice(0, nl);
      buf = buf.slice(nl + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
      if (!data || data === "[DONE]") continue;
      const j = JSON.parse(data);
      if (j.error) throw new Error(j.error.message);
      const delta = j.choices?.[0]?.delta?.content;
      if (delta) onText(delta);
      if (j.choices?.[0]?.finish_reason) finish = j.choices[0].finish_reason;
      // The usage chunk comes last, with no choices (as OpenAI sends it for stream_options.include_usage).
      if (j.usage) {
        stats = `${j.usage.completion_tokens} tokens · ${(j.tokens_per_second ?? 0).toFixed(1)} tokens/s · prompt ${j.usage.prompt_tokens} tokens · ${finish}`;
      }
    }
  }
  return stats;
}

export default function Chat(props: ChatProps) {
  const [system, setSystem] = useState("");
  const [input, setInput] = useState("");
  const [sideBySide, setSideBySide] = useState(!!props.compare);
  const [temperature, setTemperature] = useState(0.7);
  const [topP, setTopP] = useState(0.95);
  const [topK, setTopK] = useState(64);
  const [maxTokens, setMaxTokens] = useState(128);
  const [seed, setSeed] = useState(0);
  const [error, setError] = useState("");
  const [cols, setCols] = useState<Column[]>([
    { model: props.model, messages: [], stats: "", busy: false },
    { model: props.compare ?? "demo", messages: [], stats: "", busy: false },
  ]);
  const aborts = useRef<AbortController[]>([]);
  const active = sideBySide ? cols : cols.slice(0, 1);
  const busy = active.some((c) => c.busy);

  // The conversation scrolls in its own box (static/app.css) and follows the reply as it grows, unless
  // the reader scrolled up to read an earlier turn.
  const root = useRef<HTMLDivElement>(null);
  useEffect(() => {
    root.current?.querySelectorAll<HTMLElement>("[data-chat-column]").forEach((el) => {
      if (el.scrollHeight - el.scrollTop - el.clientHeight < 80 || el.dataset.follow !== "0") el.scrollTop = el.scrollHeight;
    });
  }, [cols]);
  const onScroll = (e: Event) => {
    const el = e.currentTarget as HTMLElement;
    el.dataset.follow = el.scrollHeight - el.scrollTop - el.clientHeight < 80 ? "1" : "0";
  };

  const update = (i: number, f: (c: Column) => Column) => setCols((cs) => cs.map((c, k) => (k === i ? f(c) : c)));

  const send = async (e: Event) => {
    e.preventDefault();
    const text = input.trim();
    if (!text || busy) return;
    setInput("");
    setError("");
    const n = sideBySide ? 2 : 1;
    aborts.current = [];
    // Side by side runs one after the other on the server (one generation at a time).
    for (let i = 0; i < n; i++) {
      const history = [...cols[i].messages, { role: "user" as const, content: text }];
      update(i, (c) => ({ ...c, messages: [...history, { role: "assistant", content: "" }], busy: true, stats: "generating…" }));
      const ac = new AbortController();
      aborts.current.push(ac);
      try {
        const body = {
          messages: [...(system.trim() ? [{ role: "system", content: system }] : []), ...history],
          temperature,
          top_p: topP,
          top_k: topK,
          max_tokens: maxTokens,
          seed,
        };
        const stats = await streamChat(cols[i].model, body, ac.signal, (t) =>
          update(i, (c) => {
            const msgs = c.messages.slice();
            msgs[msgs.length - 1] = { role: "assistant", content: msgs[msgs.length - 1].content + t };
            return { ...c, messages: msgs };
          }));
        update(i, (c) => ({ ...c, busy: false, stats }));
      } catch (err) {
        const stopped = (err as Error).name === "AbortError";
        if (stopped) {
          update(i, (c) => ({ ...c, busy: false, stats: "stopped" }));
          break;
        }
        // A refused turn (too long for the context, say) leaves the conversation as it was and the text
        // back in the box, so the next send does not carry it again and nothing typed is lost.
        update(i, (c) => ({ ...c, busy: false, stats: "", messages: c.messages.slice(0, -2) }));
        setInput(text);
        setError((err as Error).message);
        break;
      }
    }
  };

  const stop = () => aborts.current.forEach((a) => a.abort());
  const clear = () => setCols((cs) => cs.map((c) => ({ ...c, messages: [], stats: "" })));
  const copy = (i: number) => {
    const last = [...cols[i].messages].reverse().find((m) => m.role === "assistant");
    if (last) navigator.clipboard?.writeText(last.content).catch(() => {});
  };

  return (
    <div class="chat-app" ref={root}>
      <div class="grid">
        <label>
          Model
          <select value={cols[0].model} onChange={(e) => update(0, (c) => ({ ...c, model: (e.target as HTMLSelectElement).value, messages: [] }))} data-chat="model">
            {props.models.map((m) => <option key={m.id} value={m.id}>{m.label}</option>)}
          </select>
        </label>
        <label class="inline">
          <input type="checkbox" checked={sideBySide} onChange={(e) => setSideBySide((e.target as HTMLInputElement).checked)} /> Side by side with
        </label>
        <label>
          Compare model
          <select value={cols[1].model} disabled={!sideBySide} onChange={(e) => update(1, (c) => ({ ...c, model: (e.target as HTMLSelectElement).value, messages: [] }))}>
            {props.models.map((m) => <option key={m.id} value={m.id}>{m.label}</option>)}
          </select>
        </label>
      </div>
      <details>
        <summary>System prompt and sampling</summary>
        <label for="chat-system">System prompt</label>
        <textarea id="chat-system" rows={2} cols={60} value={system} onInput={(e) => setSystem((e.target as HTMLTextAreaElement).value)} />
        <div class="grid">
          <label>
            Temperature <input type="number" step="0.05" min="0" max="5" value={temperature} onInput={(e) => setTemperature(Number((e.target as HTMLInputElement).value))} />
          </label>
          <label>
            Top-p <input type="number" step="0.05" min="0.01" max="1" value={topP} onInput={(e) => setTopP(Number((e.target as HTMLInputElement).value))} />
          </label>
          <label>
            Top-k <input type="number" step="1" min="0" value={topK} onInput={(e) => setTopK(Number((e.target as HTMLInputElement).value))} />
          </label>
          <label>
            Max new tokens <input type="number" step="1" min="1" max="8192" value={maxTokens} onInput={(e) => setMaxTokens(Number((e.target as HTMLInputElement).value))} />
          </label>
          <label>
            Seed <input type="number" step="1" min="0" value={seed} onInput={(e) => setSeed(Number((e.target as HTMLInputElement).value))} />
          </label>
        </div>
      </details>
      <div class={sideBySide ? "grid chat-cols" : "chat-cols"}>
        {active.map((c, i) => (
          <section key={i} class="panel" aria-label={`Conversation with ${c.model}`}>
            <h3>{props.models.find((m) => m.id === c.model)?.label ?? c.model}</h3>
            <div class="chat" aria-live="polite" data-chat-column={i} onScroll={onScroll}>
              {c.messages.map((m, k) => <div key={k} class={`msg ${m.role}`} data-role={m.role}>{m.content || (c.busy ? "…" : "")}</div>)}
            </div>
            <p class="muted" data-chat-stats={i}>{c.stats}</p>
            <button type="button" onClick={() => copy(i)} disabled={!c.messages.length}>Copy reply</button>
          </section>
        ))}
      </div>
      {error && <p class="field-error" role="alert">{error}</p>}
      <form onSubmit={send} class="chat-input">
        <label for="chat-input">Message</label>
        <textarea
          id="chat-input"
          rows={3}
          cols={60}
          value={input}
          onInput={(e) => setInput((e.target as HTMLTextAreaElement).value)}
          onKeyDown={(e) => {
            if (e.key === "Enter" && !e.shiftKey) send(e);
          }}
        />
        <p class="actions">
          <button type="submit" class="primary" disabled={busy} data-chat="send">Send</button>
          <button type="button" onClick={stop} disabled={!busy}>Stop</button>
          <button type="button" onClick={clear} disabled={busy}>Clear</button>
        </p>
      </form>
    </div>
  );
}
