/**
 * PEFT LoRA adapter files (spec/GEMMA.md §4): adapter_model.safetensors with PEFT tensor names and
 * adapter_config.json, so `PeftModel.from_pretrained` loads them unchanged.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { LoraConfig } from "../config/training.ts";
import { readHeader, readTensorF32, writeSafetensors } from "./safetensors.ts";
import type { NamedTensor } from "./lora.ts";

export function adapterConfig(lora: LoraConfig, baseModel: string): Record<string, unknown> {
  const cfg: Record<string, unknown> = {
    alpha_pattern: {},
    auto_mapping: null,
    base_model_name_or_path: baseModel,
    bias: "none",
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layers_pattern: null,
    layers_to_transform: null,
    lora_alpha: lora.alpha,
    lora_dropout: lora.dropout,
    modules_to_save: null,
    peft_type: "LORA",
    r: lora.r,
    rank_pattern: {},
    revision: null,
    target_modules: [...lora.targets],
    task_type: "CAUSAL_LM",
    use_dora: false,
    use_rslora: lora.rslora,
  };
  return Object.fromEntries(Object.keys(cfg).sort().map((k) => [k, cfg[k]]));
}

export function writeAdapter(dir: string, tensors: Map<string, NamedTensor>, lora: LoraConfig, baseModel: string): void {
  fs.mkdirSync(dir, { recursive: true });
  const list = [...tensors].sort(([a], [b]) => (a < b ? -1 : 1)).map(([name, t]) => ({ name, dtype: "F32" as const, shape: t.shape, data: t.data }));
  writeSafetensors(path.join(dir, "adapter_model.safetensors"), list, { format: "pt" });
  fs.writeFileSync(path.join(dir, "adapter_config.json"), JSON.stringify(adapterConfig(lora, baseModel), null, 2) + "\n");
}

export function readAdapter(dir: string): { lora: LoraConfig; tensors: Map<string, NamedTensor>; baseModel: string } {
  const cfgFile = path.join(dir, "adapter_config.json");
  if (!fs.existsSync(cfgFile)) throw new RangeError(`"${dir}" is not a PEFT adapter: adapter_config.json is missing`);
  let cfg: Record<string, unknown>;
  try {
    cfg = JSON.parse(fs.readFileSync(cfgFile, "utf8"));
  } catch (e) {
    throw new SyntaxError(`Cannot read "${cfgFile}": ${(e as Error).message}`);
  }
  if (cfg.peft_type !== "LORA") throw new RangeError(`Cannot use "${cfgFile}": peft_type is ${JSON.stringify(cfg.peft_type)}; only LORA adapters are supported`);
  const targets = cfg.target_modules;
  if (!Array.isArray(targets)) throw new RangeError(`Cannot use "${cfgFile}": target_modules must be a list of module names`);
  const lora = {
    r: Number(cfg.r ?? 8),
    alpha: Number(cfg.lora_alpha ?? 8),
    dropout: Number(cfg.lora_dropout ?? 0),
    rslora: cfg.use_rslora === true,
    targets: targets as LoraConfig["targets"],
  };
  const file = path.join(dir, "adapter_model.safetensors");
  if (!fs.existsSync(file)) throw new RangeError(`"${dir}" has no adapter_model.safetensors`);
  const tensors = new Map<string, NamedTensor>();
  for (const e of readHeader(file).entries) {
    const name = e.name;
    if (!/^base_model\.model\.model\.layers\.\d+\.(self_attn|mlp)\.\w+\.lora_[AB]\.weight$/.test(name)) {
      throw new RangeError(`Cannot use "${file}": tensor "${name}" is not a LoRA weight of a Gemma linear`);
    }
    const data = readTensorF32(e);
    if (name.includes("lora_A") && e.shape[0] !== lora.r) throw new RangeError(`Cannot use "${file}": ${name} has rank ${e.shape[0]} but r is ${lora.r}`);
    tensors.set(name, { shape: e.shape, data: data.slice() });
  }
  return { lora, tensors, baseModel: String(cfg.base_model_name_or_path ?? "") };
}
