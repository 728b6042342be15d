/**
 * A full V8 collection, where the runtime allows one, in a module of its own so that code the server loads
 * without ONNX Runtime (engine/quant/base.ts through trainer/prepare.ts) can use it too.
 *
 * Why it is needed: the node binding returns every fetched output as a fresh ArrayBuffer (docs/ORT.md §Feeds
 * and outputs): a full fine-tuning step drops 671 MB of them (the LM head's dE chunks), and V8 frees them late
 * enough to hold ~170 MB more at the peak. One collection per step costs ~6 ms. Uses the Node idiom (the flag
 * set at run time, `gc` taken from a fresh context).
 */
import * as v8 from "node:v8";
import * as vm from "node:vm";

let gcFn: (() => void) | null | undefined;

export function collectGarbage(): void {
  if (gcFn === undefined) {
    try {
      v8.setFlagsFromString("--expose-gc");
      const f = vm.runInNewContext("gc");
      gcFn = typeof f === "function" ? f as () => void : null;
    } catch {
      gcFn = null;
    }
  }
  droppedBytes = 0;
  gcFn?.();
}

let droppedBytes = 0;

/**
 * Notes `bytes` of buffers just dropped (fresh ORT outputs) and collects once `limit` bytes have piled up
 * since the last collection: collections follow the garbage, so a small model (the demo: kilobytes a pass)
 * pays for none, while gemma-3-1b's LM head (4.7 MB a chunk) gets one every ~27 chunks.
 */
export function collectAfterDropping(bytes: number, limit: number): void {
  droppedBytes += bytes;
  if (droppedBytes >= limit) collectGarbage();
}
