/** `gemma-tuner score`: per-token NLLs of a sequence (engine/score.ts), printed as one JSON line. */
import { BASE_PRECISION_FLAG, DEVICE_FLAGS, parseBasePrecision, parseDevice, parseIds, UsageError } from "./flags.ts";
import { defineVerb } from "./verb.ts";
import { score } from "../engine/score.ts";
import { loadTokenizer } from "../engine/tokenizer.ts";

export const scoreVerb = defineVerb({
  name: "score",
  usage: "gemma-tuner score --model DIR [--adapter DIR] (--ids 2,105,… | --text STR) [--grad] [--base-precision fp32|bf16|int8|int4] [--device cpu|webgpu|cuda]",
  flags: {
    model: { kind: "string", help: "model directory (Hugging Face layout)", metavar: "DIR" },
    adapter: { kind: "string", help: "PEFT LoRA adapter directory", metavar: "DIR" },
    ids: { kind: "string", help: "comma-separated token ids, used exactly as given" },
    text: { kind: "string", help: "text to tokenize (BOS added)" },
    grad: { kind: "boolean", help: "add grad_l2: L2 norm of d(mean_nll)/dW per weight tensor" },
    "base-precision": BASE_PRECISION_FLAG,
    ...DEVICE_FLAGS,
    threads: { kind: "number", help: "intra-op threads" },
  },
  required: ["model"],
  exactlyOne: [["ids", "text"]],
  async run(f) {
    const device = parseDevice("score", f.device, f["ort-providers"]);
    const basePrecision = parseBasePrecision("score", f["base-precision"]);
    if (basePrecision !== "fp32" && f.grad && !f.adapter) {
      throw new UsageError(`score: --grad reports the gradient of every weight, which needs --base-precision fp32 (or give --adapter for its LoRA gradients)`);
    }
    const ids = f.ids ? parseIds("score", f.ids) : (await loadTokenizer(f.model)).encode(f.text!, { addSpecialTokens: true });
    const r = await score({ model: f.model, adapter: f.adapter, ids, grad: !!f.grad, device, threads: f.threads, basePrecision });
    console.log(JSON.stringify(r));
    return 0;
  },
});
