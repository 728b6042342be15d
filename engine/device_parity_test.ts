/**
 * WebGPU against the CPU on every generation's tiny stress model (Gemma 4: PLE + KV sharing, K=V, MoE): training loss and every gradient
 * (LoRA and full), score gradients, greedy generation — and no node of ours placed on the CPU provider.
 * Runs wherever a WebGPU adapter exists (CI: Mesa's lavapipe, installed by .ci/run); elsewhere it is
 * skipped with the reason printed.
 *
 * The figures come from a child process so that ORT's verbose log, which carries the node placement,
 * can be read from its stderr; Mesa's shader cache goes to a temp dir so a second run is faster.
 */
import { probeDevice } from "./devices.ts";
import { figureOk, nodePlacements, PARITY_MODELS, type ParityFigure, parityKinds } from "./device_parity.ts";

const webgpu = await probeDevice("webgpu");
/** Ops of int64 shape subgraphs, which ORT runs on the host by design. */
const SHAPE_OPS = new Set(["Shape", "Gather", "Concat", "ConstantOfShape", "Unsqueeze", "Squeeze", "Slice", "Range"]);
if (!webgpu.available) console.log(`device parity: skipped, WebGPU is not available here: ${webgpu.reason}`);

Deno.test({
  name: "webgpu equals cpu (loss, every gradient, generation) and places no node on the CPU",
  ignore: !webgpu.available,
  async fn() {
    const models = PARITY_MODELS;
    const cache = Deno.makeTempDirSync({ prefix: "mesa-shader-cache-" });
    const child = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL("./device_parity.ts", import.meta.url).pathname, "--device", "webgpu", "--models", models.join(",")],
      env: { GEMMA_TUNER_ORT_VERBOSE: "1", MESA_SHADER_CACHE_DIR: cache },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const out = new TextDecoder().decode(child.stdout), err = new TextDecoder().decode(child.stderr);
    if (!child.success) {
      throw new Error(`device_parity.ts failed (${child.code}):\n${err.split("\n").filter((l) => !l.includes("[V:") && !l.includes("[I:")).slice(-20).join("\n")}`);
    }
    const figures = out.trim().split("\n").map((l) => JSON.parse(l) as ParityFigure & { ok: boolean });
    for (const f of figures) console.log(JSON.stringify(f));
    for (const m of models) {
      for (const k of parityKinds(m)) if (!figures.some((f) => f.model === m && f.what === k)) throw new Error(`no ${k} figure for Gemma ${m}`);
    }
    const bad = figures.filter((f) => !figureOk(f));
    if (bad.length) throw new Error(`outside the limits: ${JSON.stringify(bad)}`);

    const { sessions, placements } = nodePlacements(err);
    // Each model creates at least: body forward + backward and head chunks (LoRA, full), the single graph, the decoder.
    if (sessions < models.length * 4) throw new Error(`only ${sessions} WebGPU sessions logged their placement`);
    // The symbolic-shape graphs (docs/GRAPHS.md) compute sizes at run time with small int64 shape
    // subgraphs (Shape → Gather → Concat / ConstantOfShape …). ORT places shape computations on the CPU
    // by design (their outputs are read on the host as shape inputs); no data tensor passes through
    // them. Any other op placed off the device fails (e.g. the LogSoftmax and int64 Reshape of before).
    const offDevice = placements.filter((p) => p.provider !== "WebGpuExecutionProvider");
    const notShape = offDevice.flatMap((p) => p.nodes).filter((n) => !SHAPE_OPS.has(n.split(" ")[0]));
    if (notShape.length) throw new Error(`nodes placed off the device: ${JSON.stringify(notShape)}`);
  },
});

Deno.test("the placement parser reads ORT's verbose log", () => {
  const log = [
    "2026-12-01 [V:onnxruntime:, session_state.cc:1377 VerifyEachNodeIsAssignedToAnEp] Node placements",
    "2026-12-01 [V:onnxruntime:, session_state.cc:1383 VerifyEachNodeIsAssignedToAnEp]  Node(s) placed on [CPUExecutionProvider]. Number of nodes: 1",
    "2026-12-01 [V:onnxruntime:, session_state.cc:1385 VerifyEachNodeIsAssignedToAnEp]   LogSoftmax (LogSoftmax_188)",
    "2026-12-01 [V:onnxruntime:, session_state.cc:1383 VerifyEachNodeIsAssignedToAnEp]  Node(s) placed on [WebGpuExecutionProvider]. Number of nodes: 2",
    "2026-12-01 [V:onnxruntime:, session_state.cc:1385 VerifyEachNodeIsAssignedToAnEp]   Gather (Gather_0)",
    "2026-12-01 [V:onnxruntime:, session_state.cc:1385 VerifyEachNodeIsAssignedToAnEp]   Mul (Mul_1)",
    "2026-12-01 [V:onnxruntime:, session_state.cc:186 CreateGraphInfo] SaveMLValueNameIndexMapping",
    "2026-12-01 [V:onnxruntime:, session_state.cc:1377 VerifyEachNodeIsAssignedToAnEp] Node placements",
    "2026-12-01 [V:onnxruntime:, session_state.cc:1380 VerifyEachNodeIsAssignedToAnEp]  All nodes placed on [WebGpuExecutionProvider]. Number of nodes: 184",
  ].join("\n");
  const { sessions, placements } = nodePlacements(log);
  const want = JSON.stringify([
    { provider: "CPUExecutionProvider", nodes: ["LogSoftmax (LogSoftmax_188)"] },
    { provider: "WebGpuExecutionProvider", nodes: ["Gather (Gather_0)", "Mul (Mul_1)"] },
    { provider: "WebGpuExecutionProvider", nodes: ["184 nodes"] },
  ]);
  if (sessions !== 2 || JSON.stringify(placements) !== want) throw new Error(`parsed ${sessions} sessions: ${JSON.stringify(placements)}`);
});
