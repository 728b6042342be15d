/**
 * ONNX Runtime sessions: one place that picks the execution provider, threads and memory options.
 *
 * A device that is not available is an error naming the device and what it needs, never a silent
 * fall back to the CPU (ORT_FACTS §8: ORT itself does not fall back either).
 */
import * as ort from "onnxruntime-node";
import * as v8 from "node:v8";
import * as vm from "node:vm";
import type { DType } from "./onnx/builder.ts";
import { type Device, DeviceError } from "./device.ts";

export { type Device, DeviceError, DEVICES } from "./device.ts";

export interface SessionOptions {
  device?: Device;
  /** Intra-op threads; default: all cores (ORT's default). Inference beside training uses 1. */
  threads?: number;
  /** The CPU arena keeps freed blocks; off trades page faults for a lower peak (ORT_FACTS §7). */
  arena?: boolean;
}

const HINT: Record<Device, string> = {
  cpu: "",
  webgpu: "WebGPU needs a GPU with Vulkan (Linux), Metal (macOS) or D3D12 (Windows) drivers; use --device cpu otherwise",
  cuda: "CUDA needs an NVIDIA GPU, its driver and onnxruntime-node's CUDA provider (installed by its install script); use --device cpu otherwise",
};

export async function createSession(model: Uint8Array, opts: SessionOptions = {}): Promise<ort.InferenceSession> {
  const device = opts.device ?? "cpu";
  const options: ort.InferenceSession.SessionOptions = {
    executionProviders: [device],
    executionMode: "sequential",
    graphOptimizationLevel: "all",
    enableCpuMemArena: opts.arena ?? true,
    extra: { session: { "intra_op.allow_spinning": "0" } },
  };
  if (opts.threads) options.intraOpNumThreads = opts.threads;
  try {
    return await ort.InferenceSession.create(model, options);
  } catch (e) {
    if (device === "cpu") throw e;
    const why = String((e as Error).message ?? e).split("\n")[0];
    throw new DeviceError(`Device "${device}" is not available here: ${why}. ${HINT[device]}`);
  }
}

type Data = Float32Array | Float64Array | BigInt64Array | Int32Array | Uint8Array | Uint16Array;

export function tensor(dtype: DType, data: Data, dims: readonly number[]): ort.Tensor {
  const t = dtype === "bool" ? "bool" : dtype;
  return new ort.Tensor(t, data as Float32Array, dims as number[]);
}

export type Feeds = Record<string, ort.Tensor>;
export type { ort };

let gcFn: (() => void) | null | undefined;

/**
 * A full V8 collection, where the runtime allows one. The node binding returns every fetched output
 * as a fresh ArrayBuffer (ORT_FACTS §0): a full fine-tuning step drops 671 MB of them (the LM head's
 * dE chunks), and V8 frees them late enough to hold ~170 MB more at the peak. One collection per step
 * costs ~6 ms. Uses the Node idiom (the flag set at run time, `gc` taken from a fresh context).
 */
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
  gcFn?.();
}
