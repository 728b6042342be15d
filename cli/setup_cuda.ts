/** `gemma-tuner setup-cuda`: ORT's CUDA provider libraries into the providers folder (engine/cuda_setup.ts). */
import { defineVerb } from "./verb.ts";
import { setupCuda } from "../engine/cuda_setup.ts";
import { providersDir } from "../engine/devices.ts";

export const setupCudaVerb = defineVerb({
  name: "setup-cuda",
  usage: "gemma-tuner setup-cuda [--ort-providers DIR] [--index URL]",
  flags: {
    "ort-providers": { kind: "string", help: "folder for the provider libraries (default: $GEMMA_TUNER_ORT_PROVIDERS, else <data>/ort-providers/<ORT version>)", metavar: "DIR" },
    index: { kind: "string", help: "NuGet V3 service index (default: $GEMMA_TUNER_NUGET_INDEX, else the feed onnxruntime-node installs from)", metavar: "URL" },
  },
  async run(f) {
    const dir = providersDir(f["ort-providers"]);
    let last = 0;
    const r = await setupCuda(dir, {
      index: f.index,
      onProgress(done, total) {
        if (done - last < 16 * 2 ** 20 && done !== total) return;
        last = done;
        console.error(`setup-cuda: ${(done / 2 ** 20).toFixed(0)}${total ? ` / ${(total / 2 ** 20).toFixed(0)}` : ""} MB`);
      },
    });
    console.log(JSON.stringify(r));
    return 0;
  },
});
