/**
 * GPU memory this process holds, where the driver reports it: NVIDIA's `nvidia-smi` lists compute
 * processes with their used memory. WebGPU exposes no such figure (neither Dawn through ORT nor the
 * WebGPU API reports allocations), so on webgpu and cpu this is null and nothing is logged.
 */
import type { Device } from "./device.ts";

let smiMissing = false;

/** MiB of GPU memory used by `pid` on an NVIDIA GPU, or null where unknown. */
export function gpuMemoryMb(device: Device, pid = Deno.pid): number | null {
  if (device !== "cuda" || smiMissing) return null;
  try {
    const out = new Deno.Command("nvidia-smi", { args: ["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"], stdout: "piped", stderr: "null" }).outputSync();
    if (!out.success) return null;
    return parseComputeApps(new TextDecoder().decode(out.stdout), pid);
  } catch {
    smiMissing = true; // not installed: do not try every step
    return null;
  }
}

/** Sums the `pid, used_memory` lines of `nvidia-smi --query-compute-apps` for one pid. */
export function parseComputeApps(csv: string, pid: number): number | null {
  let total = 0, found = false;
  for (const line of csv.split("\n")) {
    const [p, mb] = line.split(",").map((x) => x.trim());
    if (Number(p) === pid && Number.isFinite(Number(mb))) (total += Number(mb)), (found = true);
  }
  return found ? total : null;
}
