import { gpuMemoryMb, parseComputeApps } from "./gpu_memory.ts";

Deno.test("nvidia-smi compute-apps lines are summed for our pid only", () => {
  const csv = "1234, 500\n999, 70\n1234, 12\n";
  if (parseComputeApps(csv, 1234) !== 512) throw new Error(`got ${parseComputeApps(csv, 1234)}`);
  if (parseComputeApps(csv, 5) !== null) throw new Error("a pid without GPU memory must be null");
});

Deno.test("no GPU memory figure is claimed for cpu or webgpu", () => {
  if (gpuMemoryMb("cpu") !== null || gpuMemoryMb("webgpu") !== null) throw new Error("claimed a figure");
});
