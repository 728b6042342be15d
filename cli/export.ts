/** `gemma-tuner export`: a run's adapter, merged checkpoint or browser-ready ONNX folder (engine/export.ts). */
import * as fs from "node:fs";
import * as path from "node:path";
import { defineVerb } from "./verb.ts";
import { resolveDataDir } from "../config/app.ts";
import { exportAdapter, exportMerged, exportOnnx } from "../engine/export.ts";

export const exportVerb = defineVerb({
  name: "export",
  usage: "gemma-tuner export --run DIR [--checkpoint NAME] (--merged | --adapter | --onnx) --out DIR",
  flags: {
    run: { kind: "string", help: "run directory", metavar: "DIR" },
    checkpoint: { kind: "string", help: "final (default) or checkpoint-<step>", metavar: "NAME" },
    merged: { kind: "boolean", help: "a full Hugging Face checkpoint with the adapter merged in" },
    adapter: { kind: "boolean", help: "the PEFT adapter files" },
    onnx: { kind: "boolean", help: "the browser-ready ONNX folder (transformers.js layout), verified in transformers.js" },
    "skip-verify": { kind: "boolean", help: "with --onnx: do not load the export in transformers.js to compare a probe" },
    out: { kind: "string", help: "output directory (new or empty)", metavar: "DIR" },
    data: { kind: "string", help: "data directory (for the demo base model)", metavar: "DIR" },
  },
  required: ["run", "out"],
  exactlyOne: [["merged", "adapter", "onnx"]],
  async run(f) {
    const runDir = path.resolve(f.run);
    // A run lives in <data>/runs/<id>, so its data dir (where the demo model is) is two levels up.
    const src = { runDir, checkpoint: f.checkpoint, dataDir: f.data ? resolveDataDir(f.data) : path.dirname(path.dirname(runDir)) };
    const out = path.resolve(f.out);
    const kind = f.adapter ? "adapter" : f.merged ? "merged" : "onnx";
    if (kind === "adapter") exportAdapter(src, out);
    else if (kind === "merged") await exportMerged(src, out);
    const verification = kind === "onnx" ? await exportOnnx(src, out, { verify: !f["skip-verify"] }) : undefined;
    console.log(JSON.stringify({ out, kind, files: fs.readdirSync(out), ...(verification !== undefined ? { verification } : {}) }));
    if (verification && !verification.pass) {
      console.error(`export: the ONNX export does not match our engine in transformers.js (max |ΔNLL| ${verification.maxAbsNllDiff}, greedy ${verification.greedyEqual ? "equal" : "different"})`);
      return 1;
    }
    return 0;
  },
});
