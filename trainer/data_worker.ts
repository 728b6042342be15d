/**
 * The tokenizer and the dataset of a run, prepared on a worker thread while the main thread loads the
 * model (trainer/prepare.ts `prepareRun`). Both are JS work of about the same length at real sizes
 * (gemma-3-270m: 2.2 s of tokenizer against 2.7 s of model load, notes/PERF.md), and ONNX Runtime's
 * session creation blocks the main thread, so a second thread is the only way they overlap.
 *
 * The answer is plain data: the tokenized examples and the ids the trainer needs. An error comes back
 * as its class name and message, and `prepareData` throws it again as the same standard class.
 */
import { prepareDataset, type PreparedDataset } from "../engine/data/mod.ts";
import { loadTokenizer } from "../engine/tokenizer.ts";
import type { RunConfig } from "../config/training.ts";

export interface DataRequest {
  modelDir: string;
  dataset: RunConfig["dataset"];
  maxLength: number;
  seed: number;
}

export type DataAnswer =
  | { ok: true; data: PreparedDataset; padId: number }
  | { ok: false; name: string; message: string };

/** The dataset and pad id for a request, on this thread (the worker's body, and the fallback). */
export async function prepareHere(r: DataRequest): Promise<{ data: PreparedDataset; padId: number }> {
  const tokenizer = await loadTokenizer(r.modelDir);
  const data = await prepareDataset(r.dataset, tokenizer, { maxLength: r.maxLength, seed: r.seed, chat: tokenizer.chat });
  return { data, padId: tokenizer.padId };
}

const ERRORS: Record<string, new (m: string) => Error> = { RangeError, SyntaxError, TypeError };

/**
 * Starts preparing on a worker thread and returns the answer's promise; call it before the main
 * thread's own long work. The worker ends when it has answered.
 */
export function prepareData(r: DataRequest): Promise<{ data: PreparedDataset; padId: number }> {
  let w: Worker;
  try {
    w = new Worker(new URL("./data_worker.ts", import.meta.url).href, { type: "module" });
  } catch {
    return prepareHere(r); // no worker threads here: the same work on this thread
  }
  return new Promise((resolve, reject) => {
    w.onmessage = (e: MessageEvent<DataAnswer>) => {
      w.terminate();
      const a = e.data;
      if (a.ok) resolve({ data: a.data, padId: a.padId });
      else reject(new (ERRORS[a.name] ?? Error)(a.message));
    };
    w.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      w.terminate();
      reject(new Error(`Preparing the dataset failed: ${e.message}`));
    };
    w.postMessage(r);
  });
}

// The worker's side: one request, one answer.
// deno-lint-ignore no-explicit-any
const self_ = globalThis as any;
if (typeof self_.WorkerGlobalScope !== "undefined" && self_ instanceof self_.WorkerGlobalScope) {
  self_.onmessage = async (e: MessageEvent<DataRequest>) => {
    let answer: DataAnswer;
    try {
      answer = { ok: true, ...(await prepareHere(e.data)) };
    } catch (err) {
      const x = err instanceof Error ? err : new Error(String(err));
      answer = { ok: false, name: x.name, message: x.message };
    }
    self_.postMessage(answer);
  };
}
