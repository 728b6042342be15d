/** `gemma-tuner bench`: one training step of a model shape (engine/bench.ts), printed as JSON. */
import { DEVICE_FLAGS, parseDevice, UsageError } from "./flags.ts";
import { defineVerb } from "./verb.ts";
import { bench, BENCH_METHODS, type BenchMethod, REAL_SIZE_PRESETS } from "../engine/bench.ts";
import { BASE_PRECISIONS, type BasePrecision } from "../engine/quant/blocks.ts";
import { PRESETS } from "../config/models.ts";

const ACTIVATIONS = ["save", "recompute", "layer"] as const;
const OPTIMIZERS = ["adamw", "adamw-8bit"] as const;

export const benchVerb = defineVerb({
  name: "bench",
  usage:
    "gemma-tuner bench [--preset gemma-3-1b | --generation 3 --hidden 640 …] [--base-precision fp32|bf16|int8|int4] [--method lora|full|forward|generate] [--optimizer adamw|adamw-8bit] [--batch 4] [--seq 128] [--steps 5] [--device cpu|webgpu|cuda]",
  flags: {
    preset: {
      kind: "string",
      help: `a real architecture instead of the shape flags (${REAL_SIZE_PRESETS.map(([p, l]) => (l ? `${p} --layers ${l}` : p)).join(", ")}, …); --layers cuts it`,
    },
    "base-precision": { kind: "string", help: "frozen base weights: fp32 | bf16 | int8 | int4 (LoRA and forward)", default: "fp32" },
    activations: { kind: "string", help: "the body's backward: layer (per-layer recompute) | save | recompute; default the engine's" },
    optimizer: { kind: "string", help: "adamw (float32 moments) | adamw-8bit (blockwise 8-bit moments)", default: "adamw" },
    generation: { kind: "number", help: "Gemma generation", default: 3 },
    hidden: { kind: "number", help: "hidden size", default: 640 },
    heads: { kind: "number", help: "attention heads", default: 4 },
    "kv-heads": { kind: "number", help: "key/value heads", default: 1 },
    "head-dim": { kind: "number", help: "head dim", default: 256 },
    intermediate: { kind: "number", help: "MLP size", default: 2048 },
    vocab: { kind: "number", help: "vocabulary size", default: 262144 },
    layers: { kind: "number", help: "layers", default: 2 },
    method: { kind: "string", help: "lora | full | forward | generate", default: "lora" },
    batch: { kind: "number", help: "batch size", default: 4 },
    seq: { kind: "number", help: "sequence length", default: 128 },
    steps: { kind: "number", help: "timed steps (after one warm-up)", default: 5 },
    rank: { kind: "number", help: "LoRA rank", default: 8 },
    labelled: { kind: "number", help: "fraction of each row that is labelled (the rest is a masked prompt)", default: 1 },
    threads: { kind: "number", help: "intra-op threads" },
    ...DEVICE_FLAGS,
  },
  async run(f, argv) {
    const method = f.method as BenchMethod;
    if (!BENCH_METHODS.includes(method)) throw new UsageError(`bench: --method must be lora, full, forward or generate, got "${method}"`);
    const precision = f["base-precision"] as BasePrecision;
    if (!BASE_PRECISIONS.includes(precision)) throw new UsageError(`bench: --base-precision must be ${BASE_PRECISIONS.join(", ")}, got "${precision}"`);
    const activations = f.activations as typeof ACTIVATIONS[number] | undefined;
    if (activations !== undefined && !ACTIVATIONS.includes(activations)) throw new UsageError(`bench: --activations must be ${ACTIVATIONS.join(", ")}, got "${activations}"`);
    const optimizer = f.optimizer as typeof OPTIMIZERS[number];
    if (!OPTIMIZERS.includes(optimizer)) throw new UsageError(`bench: --optimizer must be ${OPTIMIZERS.join(" or ")}, got "${f.optimizer}"`);
    if (f.preset !== undefined && !PRESETS[f.preset]) {
      throw new UsageError(`bench: unknown --preset "${f.preset}"; choose one of ${Object.keys(PRESETS).filter((k) => !k.startsWith("tiny")).join(", ")}`);
    }
    const generation = f.generation as 1 | 2 | 3;
    if (![1, 2, 3].includes(generation)) throw new UsageError(`bench: --generation must be 1, 2 or 3`);
    const shape = {
      preset: f.preset,
      generation,
      hidden: f.hidden,
      heads: f.heads,
      kvHeads: f["kv-heads"],
      headDim: f["head-dim"],
      intermediate: f.intermediate,
      vocab: f.vocab,
      // With a preset, --layers cuts the real depth only when given.
      layers: f.preset !== undefined && !argv.some((a) => a.startsWith("--layers")) ? 0 : f.layers,
    };
    const r = await bench(shape, {
      method,
      basePrecision: precision,
      activations,
      optimizer,
      batch: f.batch,
      seq: f.seq,
      steps: f.steps,
      rank: f.rank,
      labelled: f.labelled,
      threads: f.threads,
      device: parseDevice("bench", f.device, f["ort-providers"]),
    });
    console.log(JSON.stringify(r));
    return 0;
  },
});
