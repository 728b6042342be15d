/**
 * The prepared device check (run by scripts/device_check.sh): for each device, whether it works here
 * and why not; where it works, the parity figures against the CPU (engine/device_parity.ts) and a
 * LoRA bench at the 270m shape beside the CPU's. One JSON line per figure.
 */
import { probeDevices } from "../engine/devices.ts";
import { figureOk, PARITY_MODELS, parityFigures } from "../engine/device_parity.ts";
import { bench } from "../engine/bench.ts";

const layers = Number(Deno.env.get("DEVICE_CHECK_LAYERS") ?? 2);
const vocab = Number(Deno.env.get("DEVICE_CHECK_VOCAB") ?? 262144);
const steps = Number(Deno.env.get("DEVICE_CHECK_STEPS") ?? 3);
const shape = { generation: 3 as const, hidden: 640, heads: 4, kvHeads: 1, headDim: 256, intermediate: 2048, vocab, layers };
const print = (x: Record<string, unknown>) => console.log(JSON.stringify(x));

const devices = await probeDevices();
for (const d of devices) print({ kind: "device", ...d });
const usable = devices.filter((d) => d.available && d.device !== "cpu").map((d) => d.device);
if (usable.length === 0) print({ kind: "note", message: "no GPU device works here: only the CPU figures follow" });

for (const device of usable) {
  for (const m of PARITY_MODELS) {
    for (const f of await parityFigures(device, m)) print({ kind: "parity", ...f, ok: figureOk(f) });
  }
}
for (const device of ["cpu", ...usable] as const) {
  for (const method of ["lora", "generate"] as const) {
    try {
      print({ kind: "bench", ...(await bench(shape, { method, batch: 4, seq: 128, steps, rank: 8, labelled: 1, device })) });
    } catch (e) {
      print({ kind: "bench", device, method, error: (e as Error).message });
    }
  }
}
