/**
 * ONNX Runtime sessions: one place that picks the execution provider, threads and memory options.
 *
 * A device that is not available is an error naming the device and what it needs, never a silent
 * fall back to the CPU (docs/ORT.md §Execution providers: ORT itself does not fall back either).
 */
import * as ort from "onnxruntime-node";
import { COLUMN_SUFFIX, type DType } from "./onnx/builder.ts";
import { type Device, DeviceError } from "./device.ts";
import { ortRuntimeDir, prepareCudaProviders, providersDir } from "./devices.ts";

export { type Device, DeviceError, DEVICES } from "./device.ts";

export interface SessionOptions {
  device?: Device;
  /** Intra-op threads; default: all cores (ORT's default). Inference beside training uses 1. */
  threads?: number;
  /** The CPU arena keeps freed blocks; off trades page faults for a lower peak (docs/ORT.md §Session options). */
  arena?: boolean;
  /** Let idle intra-op threads spin between kernels (ORT's default); off unless asked (docs/ORT.md §Session options). */
  spin?: boolean;
  /** In-memory "files" that the model's external-data initializers name by path (ORT copies them in at creation). */
  externalData?: { path: string; data: Uint8Array }[];
}

const HINT: Record<Device, string> = {
  cpu: "",
  webgpu: "WebGPU needs a GPU with Vulkan (Linux), Metal (macOS) or D3D12 (Windows) drivers; use --device cpu otherwise",
  cuda: "CUDA needs an NVIDIA GPU with its driver, CUDA 12 and cuDNN 9 (docs/DEVICES.md); use --device cpu otherwise",
};

export async function createSession(model: Uint8Array, opts: SessionOptions = {}): Promise<ort.InferenceSession> {
  const device = opts.device ?? "cpu";
  const options: ort.InferenceSession.SessionOptions = {
    executionProviders: [device],
    executionMode: "sequential",
    graphOptimizationLevel: "all",
    enableCpuMemArena: opts.arena ?? true,
    extra: { session: { "intra_op.allow_spinning": opts.spin ? "1" : "0" } },
  };
  if (opts.threads) options.intraOpNumThreads = opts.threads;
  if (opts.externalData) options.externalData = opts.externalData;
  // Node placement (which provider runs each node) is logged at verbose level; the device parity test
  // reads it. CPU sessions stay quiet so the log holds the device's sessions only.
  if (device !== "cpu" && Deno.env.get("GEMMA_TUNER_ORT_VERBOSE") === "1") {
    options.logSeverityLevel = 0;
    options.logVerbosityLevel = 0;
  }
  if (device === "cuda") prepareCudaProviders(providersDir(), ortRuntimeDir());
  try {
    return withColumnFeeds(await ort.InferenceSession.create(model, options));
  } catch (e) {
    if (device === "cpu" || e instanceof DeviceError) throw e;
    const why = String((e as Error).message ?? e).split("\n")[0];
    throw new DeviceError(`Device "${device}" is not available here: ${why}. ${HINT[device]}`);
  }
}

/** Feeds every `Graph.inputAsColumn` input from its base input's buffer (zero-copy, shape [..., 1]). */
function withColumnFeeds(s: ort.InferenceSession): ort.InferenceSession {
  const columns = s.inputNames.filter((n) => n.endsWith(COLUMN_SUFFIX));
  if (columns.length === 0) return s;
  const run = s.run.bind(s) as (feeds: Feeds, ...rest: unknown[]) => Promise<ort.InferenceSession.OnnxValueMapType>;
  const wrapped = (feeds: Feeds, ...rest: unknown[]) => {
    const all: Feeds = {};
    // A base input may exist only to feed its column (the other graph of a partition).
    for (const n of s.inputNames) if (feeds[n]) all[n] = feeds[n];
    for (const n of columns) {
      const base = feeds[n.slice(0, -COLUMN_SUFFIX.length)];
      if (!base) throw new RangeError(`Missing feed "${n.slice(0, -COLUMN_SUFFIX.length)}"`);
      all[n] = new ort.Tensor(base.type as "int64", base.data as BigInt64Array, [...base.dims, 1]);
    }
    return run(all, ...rest);
  };
  (s as { run: unknown }).run = wrapped;
  return s;
}

type Data = Float32Array | Float64Array | BigInt64Array | Int32Array | Uint8Array | Uint16Array;

export function tensor(dtype: DType, data: Data, dims: readonly number[]): ort.Tensor {
  const t = dtype === "bool" ? "bool" : dtype;
  return new ort.Tensor(t, data as Float32Array, dims as number[]);
}

export type Feeds = Record<string, ort.Tensor>;
export type { ort };
