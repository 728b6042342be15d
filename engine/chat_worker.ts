/**
 * The chat worker: a Deno Worker that owns the loaded generators (the model cache's heavy half) and
 * runs every chat, so ONNX Runtime's blocking `session.run`, weight loading and graph building never
 * hold the server's event loop. It speaks the messages of engine/model_cache.ts (`ToWorker`,
 * `FromWorker`). A chat is checked (prompt rendered, counted against the context) as soon as it
 * arrives, then queued: generation runs one request at a time, and a cancel, a check or an unload is
 * handled between two tokens of the running one.
 */
/// <reference lib="deno.worker" />
import type { ChatJob, FromWorker, ToWorker, WorkerError } from "./model_cache.ts";
import { generateIds, Generator, loadForGeneration } from "./generate.ts";
import { baseBytes } from "./quant/base.ts";
import { resolveBasePrecision } from "./quant/policy.ts";
import { loadTokenizer, type Tokenizer } from "./tokenizer.ts";
import { chatPromptIds } from "./chat_format.ts";
import { describeModel, readConfig, resolveModelPath } from "./model_dir.ts";
import { ContextLengthError } from "./model_cache.ts";

interface Loaded {
  gen: Generator;
  tok: Tokenizer;
  bytes: number;
  usedAt: number;
}

const post = (m: FromWorker) => self.postMessage(m);
const loaded = new Map<string, Promise<Loaded>>();
const running = new Map<number, AbortController>();
let queue: Promise<unknown> = Promise.resolve();
let limitBytes = 6 * 2 ** 30;

function announce() {
  // Only models whose load finished count as loaded; `loaded` also holds pending loads.
  Promise.all([...loaded].map(async ([id, p]) => ((await p.catch(() => null)) ? id : null)))
    .then((ids) => post({ type: "loaded", ids: ids.filter((x): x is string => x !== null) }));
}

function load(job: ChatJob, modelDir: string): Promise<Loaded> {
  let p = loaded.get(job.model);
  if (!p) {
    p = (async () => {
      // A LoRA run's adapter runs on the base as that run held it (its configured precision, else the size policy's).
      const lora = job.where.lora;
      const basePrecision = lora ? resolveBasePrecision(describeModel(modelDir).config, { method: "lora", basePrecision: lora.basePrecision }).precision : "fp32";
      const model = await loadForGeneration(modelDir, job.where.adapterDir, basePrecision);
      const tok = await loadTokenizer(modelDir);
      let bytes = model.base ? baseBytes(model.base) : 0;
      for (const w of model.weights.values()) bytes += w.byteLength;
      return { gen: new Generator(model, { threads: job.threads }), tok, bytes, usedAt: Date.now() };
    })();
    loaded.set(job.model, p);
    p.then(announce, () => loaded.delete(job.model));
  }
  return p;
}

/** Drops a model; its sessions are released once the queue is idle, never under a running chat. */
function unload(id: string) {
  const p = loaded.get(id);
  if (!p) return;
  loaded.delete(id);
  queue = queue.then(() => p.then((l) => l.gen.release()).catch(() => {}));
  announce();
}

async function evict(keep: string) {
  const entries = await Promise.all([...loaded].map(async ([id, p]) => ({ id, l: await p.catch(() => null) })));
  let total = entries.reduce((s, e) => s + (e.l?.bytes ?? 0), 0);
  for (const e of entries.filter((e) => e.id !== keep && e.l).sort((a, b) => a.l!.usedAt - b.l!.usedAt)) {
    if (total <= limitBytes) break;
    unload(e.id);
    total -= e.l!.bytes;
  }
}

/** Streams decoded text as tokens arrive, holding back any tail that could start a stop string. */
export class TextStream {
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
      for (const s of this.stops) {
        for (let k = Math.min(s.length - 1, text.length); k > 0; k--) {
          if (s.startsWith(text.slice(text.length - k))) {
            upto = Math.min(upto, text.length - k);
            break;
          }
        }
      }
    }
    const out = text.slice(this.sent, Math.max(this.sent, upto));
    this.sent = Math.max(this.sent, upto);
    return [out, stopped];
  }
}

function asWorkerError(e: unknown): WorkerError {
  if (e instanceof ContextLengthError) return { name: e.name, message: e.message, promptTokens: e.promptTokens, context: e.context };
  const err = e instanceof Error ? e : new Error(String(e));
  return { name: err.name, message: err.message, stack: err.stack };
}

async function chat(id: number, job: ChatJob) {
  const ac = new AbortController();
  running.set(id, ac);
  try {
    // The check, before any model work: the tokenizer and config.json are all it needs.
    const modelDir = await resolveModelPath(job.where.model, job.where.dataDir);
    const tok = await loadTokenizer(modelDir);
    const context = readConfig(modelDir).maxPositionEmbeddings;
    let prompt: number[];
    try {
      prompt = chatPromptIds(tok, job.messages);
    } catch (e) {
      throw new RangeError((e as Error).message);
    }
    if (prompt.length >= context) throw new ContextLengthError(prompt.length, context);
    const maxTokens = Math.min(job.maxTokens, context - prompt.length);
    post({ type: "accepted", id, promptTokens: prompt.length, context, maxTokens });

    const run = queue.then(async () => {
      if (ac.signal.aborted) return { finish: "aborted" as const, promptTokens: prompt.length, completionTokens: 0, tokensPerSecond: 0 };
      const l = await load(job, modelDir);
      l.usedAt = Date.now();
      l.gen.setThreads(job.threads); // a run started or ended since the model was loaded
      await evict(job.model);
      const ts = new TextStream(l.tok, job.stops);
      const ids: number[] = [];
      let stoppedByString = false;
      const r = await generateIds(l.gen, prompt, {
        ...job.sampling,
        maxNewTokens: maxTokens,
        stopIds: [...new Set([...l.tok.stopIds, ...l.gen.config.eosTokenIds])],
        signal: ac.signal,
        onToken: (t) => {
          ids.push(t);
          const [text, stopped] = ts.push(ids);
          if (text) post({ type: "text", id, text });
          if (stopped) stoppedByString = true;
          return !stopped;
        },
      });
      const [tail] = ts.push(ids, true);
      if (tail && !stoppedByString && r.stopReason !== "aborted") post({ type: "text", id, text: tail });
      const finish = stoppedByString || r.stopReason === "stop" ? "stop" as const : r.stopReason === "aborted" ? "aborted" as const : "length" as const;
      return { finish, promptTokens: r.promptTokens, completionTokens: r.ids.length, tokensPerSecond: r.tokensPerSecond, threads: l.gen.threads };
    });
    queue = run.catch(() => {});
    post({ type: "done", id, result: await run });
  } catch (e) {
    post({ type: "error", id, error: asWorkerError(e) });
  } finally {
    running.delete(id);
  }
}

self.onmessage = (e: MessageEvent<ToWorker>) => {
  const m = e.data;
  if (m.type === "init") limitBytes = m.limitBytes;
  else if (m.type === "chat") void chat(m.id, m.job);
  else if (m.type === "cancel") running.get(m.id)?.abort();
  else if (m.type === "unload") unload(m.model);
};
