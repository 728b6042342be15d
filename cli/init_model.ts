/** `gemma-tuner init-model`: a random-init checkpoint (engine/init_model.ts) in Hugging Face layout. */
import { UsageError } from "./flags.ts";
import { defineVerb } from "./verb.ts";
import { PRESETS } from "../config/models.ts";
import { initModel } from "../engine/init_model.ts";

export const initModelVerb = defineVerb({
  name: "init-model",
  usage: "gemma-tuner init-model --generation 1|2|3|4 --preset tiny|gemma-3-270m|… --out DIR [--seed N] [--layers N]",
  flags: {
    generation: { kind: "number", help: "Gemma generation for --preset tiny (1, 2, 3 or 4)", default: 3 },
    preset: { kind: "string", help: `tiny, or one of ${Object.keys(PRESETS).filter((k) => !k.startsWith("tiny")).join(", ")}`, default: "tiny" },
    out: { kind: "string", help: "output directory (must not exist or be empty)", metavar: "DIR" },
    seed: { kind: "number", help: "random seed", default: 0 },
    layers: { kind: "number", help: "override the number of layers" },
    std: { kind: "number", help: "std of the weight matrices (default initializer_range)" },
    "embed-std": { kind: "number", help: "std of the embedding matrix (default --std)" },
  },
  required: ["out"],
  async run(f, argv) {
    const gen = f.generation;
    if (![1, 2, 3, 4].includes(gen)) throw new UsageError(`init-model: --generation must be 1, 2, 3 or 4, got ${gen}`);
    let preset = f.preset;
    if (preset === "tiny") preset = `tiny-${gen}`;
    else if (!PRESETS[preset]) throw new UsageError(`init-model: unknown preset "${preset}"; choose one of ${Object.keys(PRESETS).join(", ")}`);
    else if (PRESETS[preset].generation !== gen && argv.some((a) => a.startsWith("--generation"))) {
      throw new UsageError(`init-model: preset ${preset} is a Gemma ${PRESETS[preset].generation} model, but --generation is ${gen}`);
    }
    const dir = await initModel({ preset, out: f.out, seed: f.seed, layers: f.layers, std: f.std, embedStd: f["embed-std"] });
    console.log(JSON.stringify({ out: dir, preset }));
    return 0;
  },
});
