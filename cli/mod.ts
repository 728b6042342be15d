/**
 * The table of verbs. A verb module is imported only when its verb runs, so `serve` and `--help` do
 * not load the engine (or ONNX Runtime). To add a verb: write cli/<verb>.ts with `defineVerb` (verb.ts)
 * and add one line here.
 */
import type { Verb } from "./verb.ts";

export interface VerbEntry {
  /** One line for `gemma-tuner --help`. */
  summary: string;
  load(): Promise<Verb>;
}

export const VERBS: Record<string, VerbEntry> = {
  serve: { summary: "start the web app (default)", load: async () => (await import("./serve.ts")).serveVerb },
  train: { summary: "train a run: --config FILE.json [--data DIR] or --run RUN_DIR", load: async () => (await import("./train.ts")).trainVerb },
  score: { summary: "token NLLs (and --grad norms) of a sequence under a model", load: async () => (await import("./score.ts")).scoreVerb },
  generate: { summary: "generate text with a model (and adapter)", load: async () => (await import("./generate.ts")).generateVerb },
  "init-model": { summary: "write a random-init Gemma checkpoint (tiny or real-size shapes)", load: async () => (await import("./init_model.ts")).initModelVerb },
  export: { summary: "export a run's adapter, merged model or ONNX decoder", load: async () => (await import("./export.ts")).exportVerb },
  "setup-cuda": { summary: "download ORT's CUDA provider libraries (NuGet, SHA-512 verified)", load: async () => (await import("./setup_cuda.ts")).setupCudaVerb },
  download: { summary: "download a Gemma model from the Hugging Face Hub into the HF cache", load: async () => (await import("./download.ts")).downloadVerb },
  "export-job": { summary: "a job bundle (data, config, launcher) for Axolotl or TRL on a GPU cluster", load: async () => (await import("./export_job.ts")).exportJobVerb },
  import: { summary: "import an adapter or merged model trained elsewhere (folder, zip or Hub repo) as a run", load: async () => (await import("./import.ts")).importVerb },
  bench: { summary: "time one training step of a model shape; prints JSON", load: async () => (await import("./bench.ts")).benchVerb },
};
