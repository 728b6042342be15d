/**
 * Models the playground and the OpenAI endpoint can talk to: the demo model, every run's final model
 * and checkpoints. The loaded generators live in a Worker (engine/chat_worker.ts), not here: ONNX
 * Runtime's `session.run` blocks its thread, so generation on the server's thread froze every request
 * (a chat held /healthz for 8–40 s). This half lists and locates models, mirrors which are loaded,
 * and talks to the worker by messages; the worker runs requests one at a time with one intra-op thread
 * (chatting never starves a training run) and keeps loaded models under a memory limit (least
 * recently used goes first).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { ChatMessage } from "./chat_format.ts";
import type { SamplingOptions } from "./sampling.ts";
import type { BasePrecision } from "./quant/blocks.ts";

export interface ModelEntry {
  /** "demo", or "<runId>/final", or "<runId>/checkpoint-<step>". */
  id: string;
  label: string;
  runId?: string;
  step?: number;
  kind: "base" | "final" | "checkpoint";
  /** How the run trained: a full fine-tune has no adapter to export. */
  method?: "lora" | "full";
  trainLoss?: number;
}

export interface RunModelSource {
  id: string;
  dir: string;
  baseModel: string;
  method: "lora" | "full";
  /** A LoRA run's configured base precision (unset: the size policy chose it, engine/quant/policy.ts). */
  basePrecision?: BasePrecision;
  checkpoints: { step: number; dir: string }[];
  hasFinal: boolean;
  /** The step of the checkpoint final/ was copied from (final/checkpoint.txt): that checkpoint is the same model. */
  finalStep?: number;
  name: string;
  trainLoss?: number;
  /** A trainer is working on it now (training or initializing): chats then decode on one thread. */
  training?: boolean;
}

/** A prompt that does not fit the model's context; thrown before any model work. */
export class ContextLengthError extends RangeError {
  override name = "ContextLengthError";
  readonly code = "context_length_exceeded";
  constructor(readonly promptTokens: number, readonly context: number) {
    super(
      `The conversation is ${promptTokens} tokens, and this model's context is ${context} tokens (with room for at least one ` +
        `token of reply). Shorten the messages or the system prompt, or start a new conversation.`,
    );
  }
}

/** One chat as the worker gets it. */
export interface ChatJob {
  model: string;
  /** `model` as `resolveModelPath` takes it ("demo" or a directory), resolved in the worker. */
  /** `lora`: the adapter's run, whose base the worker loads in the precision that run trained on. */
  where: { model: string; dataDir: string; adapterDir?: string; lora?: { basePrecision?: BasePrecision } };
  messages: ChatMessage[];
  sampling: SamplingOptions;
  maxTokens: number;
  /** Stop strings: the text ends before the first one. */
  stops: string[];
  /** Decoding threads (chatThreads): 1 beside a training run, unset (every core) otherwise. */
  threads?: number;
}

/**
 * The playground's decoding threads: one while any run trains, so a chat does not slow the run (the
 * trainer uses every core), and every core otherwise: decoding on one thread of two was the playground's
 * main gap to llama.cpp (notes/PERF.md "Playground threads").
 */
export function chatThreads(runs: Pick<RunModelSource, "training">[]): number | undefined {
  return runs.some((r) => r.training) ? 1 : undefined;
}

export interface ChatStart {
  promptTokens: number;
  context: number;
  /** The reply's token limit: the one asked for, less what would not fit the context. */
  maxTokens: number;
}

export interface ChatResult {
  finish: "stop" | "length" | "aborted";
  promptTokens: number;
  completionTokens: number;
  tokensPerSecond: number;
  /** The decoding threads the reply used (unset: every core). */
  threads?: number;
}

export interface WorkerError {
  name: string;
  message: string;
  stack?: string;
  promptTokens?: number;
  context?: number;
}

export type ToWorker =
  | { type: "init"; limitBytes: number }
  | { type: "chat"; id: number; job: ChatJob }
  | { type: "cancel"; id: number }
  | { type: "unload"; model: string };

export type FromWorker =
  | { type: "accepted"; id: number; promptTokens: number; context: number; maxTokens: number }
  | { type: "text"; id: number; text: string }
  | { type: "done"; id: number; result: ChatResult }
  | { type: "error"; id: number; error: WorkerError }
  | { type: "loaded"; ids: string[] };

/** A chat in flight: `started` settles once it is checked (a refusal rejects it), `done` when the reply ends. */
export interface ChatHandle {
  started: Promise<ChatStart>;
  done: Promise<ChatResult>;
}

interface Pending {
  onText: (text: string) => void;
  start: { resolve: (s: ChatStart) => void; reject: (e: Error) => void };
  done: { resolve: (r: ChatResult) => void; reject: (e: Error) => void };
}

/** The error the worker reported, as the type it was there (so routes map it as they would locally). */
function revive(e: WorkerError): Error {
  if (e.name === "ContextLengthError") return new ContextLengthError(e.promptTokens!, e.context!);
  const Type = e.name === "RangeError" ? RangeError : e.name === "SyntaxError" || e.name === "SafetensorsError" ? SyntaxError : Error;
  const err = new Type(e.message);
  if (e.stack) err.stack = e.stack;
  return err;
}

const ID = /^(demo|[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\/(final|checkpoint-\d+))$/;

export class ModelCache {
  private worker: Worker | null = null;
  private loadedIds = new Set<string>();
  private pending = new Map<number, Pending>();
  private nextId = 1;
  /** How chats ended since the server started (`failed`: refused or errored), and the tokens they generated. */
  readonly counts = { stop: 0, length: 0, aborted: 0, failed: 0, tokens: 0 };

  constructor(readonly dataDir: string, readonly runs: () => RunModelSource[], readonly limitBytes = 6 * 2 ** 30) {}

  list(): ModelEntry[] {
    const out: ModelEntry[] = [{ id: "demo", label: "demo (base model, untrained)", kind: "base" }];
    for (const r of this.runs()) {
      const step = r.hasFinal ? r.finalStep : undefined;
      if (r.hasFinal) {
        out.push({ id: `${r.id}/final`, label: `${r.name}: final${step ? ` (step ${step})` : ""}`, runId: r.id, step, kind: "final", method: r.method, trainLoss: r.trainLoss });
      }
      for (const c of [...r.checkpoints].reverse()) {
        if (c.step === step) continue;
        out.push({ id: `${r.id}/checkpoint-${c.step}`, label: `${r.name}: step ${c.step}`, runId: r.id, step: c.step, kind: "checkpoint", method: r.method });
      }
    }
    return out;
  }

  /** Chats started and not yet ended (checking, queued or generating). */
  get inFlight(): number {
    return this.pending.size;
  }

  /** Whether the worker holds this model loaded (as it last said). */
  isLoaded(id: string): boolean {
    return this.loadedIds.has(id);
  }

  /**
   * Where a model id lives: the model as `resolveModelPath` takes it ("demo" or a model directory) and
   * the adapter dir for LoRA runs. Not resolved here: "demo" is created on first use (seconds of work),
   * which the worker does, off this thread.
   */
  locate(id: string): ChatJob["where"] {
    if (!ID.test(id)) throw new RangeError(`Unknown model "${id}"`);
    if (id === "demo") return { model: "demo", dataDir: this.dataDir };
    const [runId, which] = id.split("/");
    const run = this.runs().find((r) => r.id === runId);
    if (!run) throw new RangeError(`Unknown model "${id}": no run ${runId}`);
    const dir = which === "final" ? path.join(run.dir, "final") : path.join(run.dir, "checkpoints", which);
    if (!fs.existsSync(dir)) throw new RangeError(`Unknown model "${id}": ${which} does not exist`);
    if (run.method === "lora") return { model: run.baseModel, dataDir: this.dataDir, adapterDir: dir, lora: { basePrecision: run.basePrecision } };
    return { model: dir, dataDir: this.dataDir };
  }

  /**
   * Starts a chat with model `id` in the worker. `onText` gets the reply's text as it is produced;
   * aborting `signal` (the client went away) stops the generation between two tokens.
   */
  chat(id: string, req: Omit<ChatJob, "model" | "where" | "threads">, o: { onText: (text: string) => void; signal?: AbortSignal }): ChatHandle {
    const rid = this.nextId++;
    let start!: Pending["start"], done!: Pending["done"];
    const handle: ChatHandle = {
      started: new Promise<ChatStart>((resolve, reject) => (start = { resolve, reject })),
      done: new Promise<ChatResult>((resolve, reject) => (done = { resolve, reject })),
    };
    // A caller that awaits only one of the two must not leave the other rejected and unhandled.
    handle.started.catch(() => {});
    handle.done.catch(() => {});
    const fail = (e: Error) => {
      this.pending.delete(rid);
      start.reject(e);
      done.reject(e);
    };
    this.pending.set(rid, { onText: o.onText, start, done });
    const cancel = () => this.worker?.postMessage({ type: "cancel", id: rid } satisfies ToWorker);
    o.signal?.addEventListener("abort", cancel, { once: true });
    handle.done.finally(() => o.signal?.removeEventListener("abort", cancel)).catch(() => {});
    try {
      const where = this.locate(id);
      const job: ChatJob = { ...req, model: id, where, threads: chatThreads(this.runs()) };
      this.ensureWorker().postMessage({ type: "chat", id: rid, job } satisfies ToWorker);
      if (o.signal?.aborted) cancel();
    } catch (e) {
      fail(e as Error);
    }
    return handle;
  }

  /** Drops a loaded model (its memory is freed once no chat uses it). Returns whether it was loaded. */
  unload(id: string): boolean {
    const was = this.loadedIds.delete(id);
    this.worker?.postMessage({ type: "unload", model: id } satisfies ToWorker);
    return was;
  }

  /** Stops the worker (server shutdown): chats still going fail, loaded models are freed. */
  close(): void {
    this.stopWorker(new Error("The server is shutting down"));
  }

  private ensureWorker(): Worker {
    if (this.worker) return this.worker;
    const w = new Worker(new URL("./chat_worker.ts", import.meta.url).href, { type: "module" });
    w.onmessage = (e: MessageEvent<FromWorker>) => this.onMessage(e.data);
    w.onerror = (e) => {
      // Handled here: an error escaping the worker would otherwise end the whole server.
      e.preventDefault();
      console.error("chat worker:", e.message);
      if (this.worker === w) this.stopWorker(new Error(`The chat worker stopped (${e.message}); the next request starts a new one`));
    };
    w.postMessage({ type: "init", limitBytes: this.limitBytes } satisfies ToWorker);
    this.worker = w;
    return w;
  }

  private stopWorker(reason: Error) {
    this.worker?.terminate();
    this.worker = null;
    this.loadedIds.clear();
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) {
      p.start.reject(reason);
      p.done.reject(reason);
    }
  }

  private onMessage(m: FromWorker) {
    if (m.type === "loaded") {
      this.loadedIds = new Set(m.ids);
      return;
    }
    const p = this.pending.get(m.id);
    if (!p) return;
    if (m.type === "accepted") p.start.resolve({ promptTokens: m.promptTokens, context: m.context, maxTokens: m.maxTokens });
    else if (m.type === "text") p.onText(m.text);
    else {
      this.pending.delete(m.id);
      if (m.type === "done") {
        this.counts[m.result.finish]++;
        this.counts.tokens += m.result.completionTokens;
        p.done.resolve(m.result);
      } else {
        this.counts.failed++;
        const err = revive(m.error);
        p.start.reject(err);
        p.done.reject(err);
      }
    }
  }
}
