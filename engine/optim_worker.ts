/**
 * The optimizer's worker (engine/optim_pool.ts): maps the caller's tensors by address, updates its half of
 * their blocks and flags each step done in the shared control block.
 */
import { parentPort } from "node:worker_threads";
import { adamwBlocks, CTL, normBlocks, type OptimTensors, type ToOptimWorker } from "./optim_pool.ts";

let ctl: Int32Array | null = null;
let tensors: OptimTensors[] = [];
let partials: Float64Array = new Float64Array(0);

function map([address, length, bytes]: [bigint, number, 1 | 4]): Float32Array | Uint8Array {
  if (length === 0) return bytes === 1 ? new Uint8Array(0) : new Float32Array(0);
  const buffer = Deno.UnsafePointerView.getArrayBuffer(Deno.UnsafePointer.create(address)!, length * bytes);
  return bytes === 1 ? new Uint8Array(buffer) : new Float32Array(buffer);
}

parentPort!.on("message", (m: ToOptimWorker) => {
  if (m.type === "init") {
    ctl = m.ctl;
    Atomics.store(ctl, CTL.ready, 1);
    return;
  }
  if (m.type === "register") {
    tensors = m.tensors.map((t) => t.map(map));
    partials = m.partials;
    return;
  }
  try {
    if (m.type === "adamw") adamwBlocks(tensors, m.blocks, m.decays, m.k);
    else normBlocks(tensors, m.blocks, partials);
  } catch (err) {
    Atomics.store(ctl!, CTL.failed, 1);
    console.error("optimizer worker:", err);
  }
  Atomics.store(ctl!, CTL.done, m.seq);
  Atomics.notify(ctl!, CTL.done);
});
