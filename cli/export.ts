/** `gemma-tuner export`: a run's adapter, merged checkpoint or ONNX decoder (engine/export.ts). */
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
    onnx: { kind: "boolean", help: "an ONNX KV-cache decoder with external weights" },
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
    else await exportOnnx(src, out);
    console.log(JSON.stringify({ out, kind, files: fs.readdirSync(out) }));
    return 0;
  },
});
