/**
 * Where the first training step of a real-size model goes: model load, graph building in JS, ORT
 * session creation, the first step, a second step of the same shape and one of a new length.
 * Wall and CPU ms per phase (CPU is steadier on a shared host). Usage:
 *   deno run -A --v8-flags=--max-old-space-size=8192 scripts/first_step.ts MODEL_DIR [SEQ=64] [parts]
 */
import { loadModel } from "../engine/model_dir.ts";
import { TrainEngine } from "../engine/train_engine.ts";
import { buildBody, buildHeadChunk } from "../engine/gemma/staged.ts";
import { createSession } from "../engine/session.ts";
import process from "node:process";
const t0 = performance.now();
let last = performance.now(), lastCpu = process.cpuUsage();
const lap = (s: string) => {
  const now = performance.now(), cpu = process.cpuUsage();
  console.log(
    `${s.padEnd(28)} wall ${Math.round(now - last)} ms  cpu ${Math.round((cpu.user + cpu.system - lastCpu.user - lastCpu.system) / 1000)} ms  (t=${Math.round(now - t0)})`,
  );
  last = now;
  lastCpu = cpu;
};
const m = await loadModel(Deno.args[0]);
lap("load model");
const lora = { r: 8, alpha: 16, rslora: false, dropout: 0.05, targets: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] };
const B = 4, T = Number(Deno.args[1] ?? 64);
if (Deno.args[2] === "parts") {
  const g = buildBody(m.config, { batch: "batch", seq: "seq", positions: "positions", method: "lora", lora, dropout: true, activations: "save" });
  lap(`JS build body (${((g.forward.length + g.backward!.length) / 1e6).toFixed(1)} MB)`);
  const f = await createSession(g.forward, { arena: false });
  lap("ORT session body fwd");
  const b = await createSession(g.backward!, { arena: false });
  lap("ORT session body bwd");
  const h = buildHeadChunk(m.config, { positions: "positions", rows: "rows", kind: "online" });
  lap("JS build head");
  await createSession(h, {});
  lap("ORT session head");
  f.release();
  b.release();
}
const e = await TrainEngine.create({ model: m, method: "lora", lora, seed: 1 });
lap("engine create");
const ids = new Int32Array(B * T).map((_, i) => 2 + (i * 7919) % 1000);
await e.forwardBackward({ inputIds: ids, labels: ids, batchSize: B, seqLen: T });
lap(`first step [${B},${T}] (builds)`);
await e.forwardBackward({ inputIds: ids, labels: ids, batchSize: B, seqLen: T });
lap("second step same shape");
const T2 = T * 2, ids2 = new Int32Array(B * T2).map((_, i) => 2 + (i * 13) % 1000);
await e.forwardBackward({ inputIds: ids2, labels: ids2, batchSize: B, seqLen: T2 });
lap(`third step [${B},${T2}]`);
console.log("compiled", e.compiled().join(","));
