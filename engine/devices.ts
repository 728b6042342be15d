/**
 * Which execution devices work on this machine, and why not: a probe per device (a one-node session),
 * and where CUDA's provider libraries come from (docs/DEVICES.md).
 *
 * onnxruntime-node loads a provider from the folder of its own libonnxruntime.so. Its npm install
 * script normally downloads the CUDA ones there, but Deno never runs install scripts
 * (`nodeModulesDir: "none"`), and inside a compiled executable that folder is extracted at run time.
 * So the libraries live in a providers folder of ours (`--ort-providers DIR`,
 * `$GEMMA_TUNER_ORT_PROVIDERS`, else `<data>/ort-providers/<ORT version>`, filled by `setup-cuda`)
 * and are linked into ORT's folder just before the first CUDA session.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { resolveDataDir } from "../config/app.ts";
import { Graph } from "./onnx/builder.ts";
import * as o from "./onnx/ops.ts";
import { type Device, DeviceError } from "./device.ts";

/** The ORT version whose provider libraries we fetch (the onnxruntime-node pinned in deno.json). */
export const ORT_VERSION = "1.30.0";
/** The libraries ORT needs beside libonnxruntime.so for the CUDA provider (linux-x64). */
export const CUDA_PROVIDER_FILES = ["libonnxruntime_providers_shared.so", "libonnxruntime_providers_cuda.so"];

/** The providers folder: the flag's value, else $GEMMA_TUNER_ORT_PROVIDERS, else under the data dir. */
export function providersDir(flag?: string): string {
  if (flag) return path.resolve(flag);
  const env = Deno.env.get("GEMMA_TUNER_ORT_PROVIDERS");
  if (env) return path.resolve(env);
  return path.join(resolveDataDir(), "ort-providers", ORT_VERSION);
}

/** The folder of the libonnxruntime.so this process has loaded (Linux: /proc/self/maps), or null. */
export function ortRuntimeDir(): string | null {
  try {
    const maps = Deno.readTextFileSync("/proc/self/maps");
    const m = maps.match(/\s(\/\S*\/libonnxruntime\.so[.\d]*)\s*$/m);
    return m ? path.dirname(m[1]) : null;
  } catch {
    return null;
  }
}

const SETUP_HINT = "run `gemma-tuner setup-cuda` (downloads them; needs network) or pass --ort-providers DIR " +
  "(or set GEMMA_TUNER_ORT_PROVIDERS) to a folder holding them; the GPU also needs an NVIDIA driver, CUDA 12 and cuDNN 9";

/**
 * Makes CUDA's provider libraries visible to ORT: checks they are in `dir` and symlinks each into
 * `ortDir` (replacing links of ours, never a real file). Throws a DeviceError naming the missing files,
 * the folder and the command that fixes it.
 */
export function prepareCudaProviders(dir: string, ortDir: string | null): void {
  if (`${Deno.build.os}/${Deno.build.arch}` !== "linux/x86_64") {
    throw new DeviceError(
      `Device "cuda" is not available here: ORT's CUDA provider is built for linux-x64, this is ${Deno.build.os}-${Deno.build.arch}; use --device cpu or webgpu`,
    );
  }
  const missing = CUDA_PROVIDER_FILES.filter((f) => !fs.existsSync(path.join(dir, f)));
  if (missing.length) {
    throw new DeviceError(
      `Device "cuda" is not available here: ${missing.join(" and ")} ${missing.length > 1 ? "are" : "is"} missing from ${dir}; ${SETUP_HINT}. Use --device cpu otherwise`,
    );
  }
  if (!ortDir) throw new DeviceError(`Device "cuda" is not available here: cannot find the folder of the loaded libonnxruntime.so to link the providers into. Use --device cpu`);
  if (path.resolve(dir) === path.resolve(ortDir)) return;
  for (const f of CUDA_PROVIDER_FILES) {
    const link = path.join(ortDir, f), target = path.join(path.resolve(dir), f);
    let st: fs.Stats | null = null;
    try {
      st = fs.lstatSync(link);
    } catch { /* absent */ }
    if (st && !st.isSymbolicLink()) continue; // installed by onnxruntime-node's own script: use it
    if (st && fs.readlinkSync(link) === target) continue;
    try {
      if (st) fs.unlinkSync(link);
      fs.symlinkSync(target, link);
    } catch (e) {
      throw new DeviceError(
        `Device "cuda" is not available here: cannot link ${target} into ORT's folder ${ortDir} (${(e as Error).message}); copy ${
          CUDA_PROVIDER_FILES.join(" and ")
        } there by hand, or use --device cpu`,
      );
    }
  }
}

export interface DeviceStatus {
  device: Device;
  available: boolean;
  /** Why not, in words a person can act on. */
  reason?: string;
}

const probes = new Map<Device, Promise<DeviceStatus>>();

/** Whether `device` runs a one-node graph here (cached per process). */
export function probeDevice(device: Device): Promise<DeviceStatus> {
  let p = probes.get(device);
  if (!p) {
    p = (async () => {
      const g = new Graph();
      const x = g.input("x", [4]);
      g.output(o.add(g, x, x), "y");
      const { createSession, tensor } = await import("./session.ts");
      try {
        const s = await createSession(g.toBytes(), { device });
        const out = await s.run({ x: tensor("float32", Float32Array.from([1, 2, 3, 4]), [4]) });
        const ok = (out.y.data as Float32Array)[3] === 8;
        await s.release();
        return ok ? { device, available: true } : { device, available: false, reason: "a probe graph computed a wrong result" };
      } catch (e) {
        return { device, available: false, reason: (e as Error).message };
      }
    })();
    probes.set(device, p);
  }
  return p;
}

/** Every device with its status, for the create view's device choice and `device_check`. */
export function probeDevices(): Promise<DeviceStatus[]> {
  return Promise.all((["cpu", "webgpu", "cuda"] as const).map(probeDevice));
}
