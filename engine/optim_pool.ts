/**
 * The optimizer's second thread (engine/optim.ts): a worker (engine/optim_worker.ts) that runs AdamW and the
 * gradient norm's block sums over half of the elements while the calling thread does the other half.
 *
 * The tensors stay where they are, ordinary Float32Arrays: ONNX Runtime's node binding refuses a
 * SharedArrayBuffer-backed feed ("Invalid argument"), and the weights are fed to it zero-copy every step.
 * The worker instead maps the same memory by address (`Deno.UnsafePointer.of` here,
 * `Deno.UnsafePointerView.getArrayBuffer` there; array buffers never move), which needs the FFI permission
 * (`-A`); without it the pool never starts and the caller does everything itself. The tensors are sent
 * once (again only when a buffer changes), each step posts only the scalars, and the caller blocks on a
 * shared flag (`Atomics.wait`) until the worker's half is done, so `AdamW.update` stays synchronous.
 * Every element gets the same arithmetic on either thread, so the numbers are the same.
 *
 * The worker is a node:worker_threads one, unref'd: a Deno web Worker would keep the process alive.
 */
import { Worker } from "node:worker_threads";
import { adamwRange, type AdamWScalars, NORM_BLOCK, sumSquares } from "./optim.ts";
import { adamw8Range } from "./optim8.ts";

/**
 * One parameter's tensors: [w, g, m, v] (float32 moments) or [w, g, m codes, v codes, m absmax, v absmax]
 * (8-bit moments, engine/optim8.ts).
 */
export type OptimTensors = (Float32Array | Uint8Array)[];

/** Slots of the shared control block. */
export const CTL = { ready: 0, done: 1, failed: 2 } as const;

/** Messages to engine/optim_worker.ts. */
export type ToOptimWorker =
  | { type: "init"; ctl: Int32Array }
  /** Each tensor as [address, element count, bytes per element], per parameter as in OptimTensors. */
  | { type: "register"; tensors: [bigint, number, 1 | 4][][]; partials: Float64Array }
  | { type: "adamw"; seq: number; blocks: Int32Array; decays: number[]; k: AdamWScalars }
  | { type: "norm"; seq: number; blocks: Int32Array };

/** How long a step may wait for the worker's half before it is an error (a worker that died mid-step). */
const WORKER_WAIT_MS = 10 * 60_000;

interface Split {
  /** [tensor, global block index, start, end] per block, this thread's half and the worker's. */
  mine: Int32Array;
  theirs: Int32Array;
  blocks: number;
}

/** Blocks of NORM_BLOCK elements over the tensors in order; the first half of the elements stays on this thread. */
function split(lengths: number[]): Split {
  const all: number[][] = [];
  let total = 0;
  lengths.forEach((n, t) => {
    for (let at = 0; at < n; at += NORM_BLOCK) all.push([t, all.length, at, Math.min(n, at + NORM_BLOCK)]);
    total += n;
  });
  let acc = 0, cut = all.length;
  for (let b = 0; b < all.length; b++) {
    if (acc >= total / 2) {
      cut = b;
      break;
    }
    acc += all[b][3] - all[b][2];
  }
  return { mine: Int32Array.from(all.slice(0, cut).flat()), theirs: Int32Array.from(all.slice(cut).flat()), blocks: all.length };
}

export class OptimPool {
  private worker: Worker | null = null;
  private readonly ctl = new Int32Array(new SharedArrayBuffer(12));
  private seq = 0;
  private registered: OptimTensors[] = [];
  private partials: Float64Array = new Float64Array(0);
  private plan: Split | null = null;
  private error: string | null = null;

  constructor() {
    try {
      if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") throw new Error("no FFI permission");
      const w = new Worker(new URL("./optim_worker.ts", import.meta.url));
      w.unref();
      w.on("error", (e: Error) => {
        // Handled: the caller falls back to doing the whole update itself.
        this.error = e.message;
      });
      w.postMessage({ type: "init", ctl: this.ctl } satisfies ToOptimWorker);
      this.worker = w;
    } catch (e) {
      this.error = (e as Error).message;
    }
  }

  /** Whether the worker has started and not failed (else the caller does the whole update). */
  ready(): boolean {
    return this.worker !== null && this.error === null && Atomics.load(this.ctl, CTL.ready) === 1 && Atomics.load(this.ctl, CTL.failed) === 0;
  }

  close(): void {
    void this.worker?.terminate();
    this.worker = null;
  }

  /** Sends the tensors to the worker when they are not the ones it already has. */
  private register(tensors: OptimTensors[]): Split {
    const same = this.plan && tensors.length === this.registered.length &&
      tensors.every((t, i) => t.length === this.registered[i].length && t.every((a, j) => a === this.registered[i][j]));
    if (!same) {
      this.plan = split(tensors.map((t) => t[0].length));
      this.partials = new Float64Array(new SharedArrayBuffer(this.plan.blocks * 8));
      this.registered = tensors;
      const addresses = tensors.map((t) =>
        t.map((a): [bigint, number, 1 | 4] => [BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(a))), a.length, a instanceof Uint8Array ? 1 : 4])
      );
      this.worker!.postMessage({ type: "register", tensors: addresses, partials: this.partials } satisfies ToOptimWorker);
    }
    return this.plan!;
  }

  private wait(seq: number): void {
    const deadline = performance.now() + WORKER_WAIT_MS;
    while (Atomics.load(this.ctl, CTL.done) !== seq) {
      if (performance.now() > deadline) throw new Error(`The optimizer's worker did not finish its half of the update within ${WORKER_WAIT_MS / 1000} s`);
      Atomics.wait(this.ctl, CTL.done, seq - 1, 1000);
    }
    if (Atomics.load(this.ctl, CTL.failed) !== 0) throw new Error("The optimizer's worker failed during an update (see its error above)");
  }

  /** AdamW over every element of `tensors`, half here, half on the worker. */
  adamw(tensors: OptimTensors[], decays: number[], k: AdamWScalars): void {
    const plan = this.register(tensors);
    const seq = ++this.seq;
    this.worker!.postMessage({ type: "adamw", seq, blocks: plan.theirs, decays, k } satisfies ToOptimWorker);
    adamwBlocks(tensors, plan.mine, decays, k);
    this.wait(seq);
  }

  /** Σ g² over every gradient (`tensors[i][1]`), the blocks added in order whoever summed them. */
  sumSquares(tensors: OptimTensors[]): number {
    const plan = this.register(tensors);
    const seq = ++this.seq;
    this.worker!.postMessage({ type: "norm", seq, blocks: plan.theirs } satisfies ToOptimWorker);
    normBlocks(tensors, plan.mine, this.partials);
    this.wait(seq);
    let sum = 0;
    for (let b = 0; b < this.partials.length; b++) sum += this.partials[b];
    return sum;
  }
}

/** Runs AdamW over the listed blocks ([tensor, block, start, end] each) of `tensors`. */
export function adamwBlocks(tensors: OptimTensors[], blocks: Int32Array, decays: number[], k: AdamWScalars): void {
  for (let i = 0; i < blocks.length; i += 4) {
    const t = tensors[blocks[i]];
    const [w, g] = t as Float32Array[];
    if (t.length === 6) {
      adamw8Range(w, g, t[2] as Uint8Array, t[3] as Uint8Array, t[4] as Float32Array, t[5] as Float32Array, decays[blocks[i]], k, blocks[i + 2], blocks[i + 3]);
    } else adamwRange(w, g, t[2] as Float32Array, t[3] as Float32Array, decays[blocks[i]], k, blocks[i + 2], blocks[i + 3]);
  }
}

/** Writes each listed block's Σ g² (g = `tensors[t][1]`) into `partials` at the block's index. */
export function normBlocks(tensors: OptimTensors[], blocks: Int32Array, partials: Float64Array): void {
  for (let i = 0; i < blocks.length; i += 4) partials[blocks[i + 1]] = sumSquares(tensors[blocks[i]][1] as Float32Array, blocks[i + 2], blocks[i + 3]);
}
