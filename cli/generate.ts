/** `gemma-tuner generate`: text from a model (and adapter), streamed to stdout or as one JSON line. */
import { BASE_PRECISION_FLAG, DEVICE_FLAGS, parseBasePrecision, parseDevice, parseIds } from "./flags.ts";
import { defineVerb } from "./verb.ts";
import { chatPromptIds } from "../engine/chat_format.ts";
import { generateIds, Generator, loadForGeneration } from "../engine/generate.ts";
import { loadTokenizer } from "../engine/tokenizer.ts";
import { checkBasePrecision } from "../engine/quant/policy.ts";
import * as fs from "node:fs";
import * as path from "node:path";

export const generateVerb = defineVerb({
  name: "generate",
  usage:
    "gemma-tuner generate --model DIR [--adapter DIR] (--prompt STR | --ids 2,17,…) [--chat] [--max-new-tokens N] [--temperature T] [--base-precision fp32|bf16|int8|int4] [--json]",
  flags: {
    model: { kind: "string", help: "model directory", metavar: "DIR" },
    adapter: { kind: "string", help: "PEFT LoRA adapter directory", metavar: "DIR" },
    prompt: { kind: "string", help: "prompt text" },
    ids: { kind: "string", help: "comma-separated prompt token ids, used exactly" },
    chat: { kind: "boolean", help: "wrap --prompt as a user turn in the Gemma chat format" },
    "max-new-tokens": { kind: "number", help: "tokens to generate", default: 64 },
    temperature: { kind: "number", help: "0 = greedy", default: 0.7 },
    "top-p": { kind: "number", help: "nucleus sampling", default: 0.95 },
    "top-k": { kind: "number", help: "top-k sampling (0 = off)", default: 64 },
    "min-p": { kind: "number", help: "min-p sampling (0 = off)", default: 0 },
    "repetition-penalty": { kind: "number", help: "HF-style repetition penalty", default: 1 },
    seed: { kind: "number", help: "sampling seed", default: 0 },
    "base-precision": BASE_PRECISION_FLAG,
    ...DEVICE_FLAGS,
    json: { kind: "boolean", help: "print {ids, text, tokens_per_second}" },
  },
  required: ["model"],
  exactlyOne: [["prompt", "ids"]],
  async run(f) {
    const device = parseDevice("generate", f.device, f["ort-providers"]);
    const basePrecision = parseBasePrecision("generate", f["base-precision"]);
    // A precision the device cannot run is refused before anything loads.
    if (device !== "cpu") await checkBasePrecision(device, basePrecision);
    const model = await loadForGeneration(f.model, f.adapter, basePrecision);
    // With --ids a model directory needs no tokenizer: ids in, ids out (text only when one is there).
    const tok = f.ids && !fs.existsSync(path.join(f.model, "tokenizer.json")) ? null : await loadTokenizer(f.model);
    let prompt: number[];
    if (f.ids) prompt = parseIds("generate", f.ids);
    else if (f.chat) prompt = chatPromptIds(tok!, [{ role: "user", content: f.prompt! }]);
    else prompt = tok!.encode(f.prompt!, { addSpecialTokens: true });
    const gen = new Generator(model, { device });
    const stream = !f.json;
    const r = await generateIds(gen, prompt, {
      maxNewTokens: f["max-new-tokens"],
      temperature: f.temperature,
      topP: f["top-p"],
      topK: f["top-k"],
      minP: f["min-p"],
      repetitionPenalty: f["repetition-penalty"],
      seed: f.seed,
      stopIds: [...new Set([...(tok?.stopIds ?? []), ...model.config.eosTokenIds])],
      onToken: stream ? (id) => void Deno.stdout.writeSync(new TextEncoder().encode(tok ? tok.decode([id]) : `${id} `)) : undefined,
    });
    gen.release();
    const text = tok ? tok.decode(r.ids) : null;
    if (f.json) console.log(JSON.stringify({ ids: r.ids, text, tokens_per_second: r.tokensPerSecond, stop_reason: r.stopReason, base_precision: basePrecision }));
    else console.log(`\n[${r.ids.length} tokens, ${r.tokensPerSecond.toFixed(1)} tokens/s, ${r.stopReason}]`);
    return 0;
  },
});
