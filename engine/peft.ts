/**
 * PEFT LoRA adapter files (docs/GEMMA.md §PEFT): adapter_model.safetensors with PEFT tensor names and
 * adapter_config.json, so `PeftModel.from_pretrained` loads them unchanged. In memory the tensors use
 * the internal names (`base_model.model.model.layers.…`); on disk they follow the base checkpoint's own
 * module paths, so a multimodal base gets `base_model.model.language_model.model.layers.…` (4.5x
 * layout) or `base_model.model.model.language_model.layers.…` (5.x), and a target_modules regex that
 * reaches only the text decoder (docs/GEMMA4.md §Multimodal).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { LoraConfig } from "../config/training.ts";
import { readHeader, readTensorF32, writeSafetensors } from "./safetensors.ts";
import type { NamedTensor } from "./lora.ts";

/** Where the base checkpoint keeps its text decoder (GemmaConfig.textPrefix / multimodal). */
export interface AdapterLayout {
  textPrefix: string;
  multimodal: boolean;
}

export const CAUSAL_LM: AdapterLayout = { textPrefix: "model.", multimodal: false };

const INTERNAL = /^base_model\.model\.model\./;
const ANY_PREFIX = /^base_model\.model\.(model\.language_model\.|language_model\.model\.|model\.)(?=layers\.)/;

export function externalPeftName(name: string, layout: AdapterLayout): string {
  return name.replace(INTERNAL, `base_model.model.${layout.textPrefix}`);
}

export function internalPeftName(name: string): string {
  return name.replace(ANY_PREFIX, "base_model.model.model.");
}

/**
 * PEFT's target_modules: the plain list for a CausalLM; for a multimodal model a regex (PEFT
 * full-matches a string against module names) so the vision tower's own q_proj/… are not wrapped.
 * It matches both the checkpoint's layout and transformers ≥ 4.52's `model.language_model.…`.
 */
export function targetModules(targets: readonly string[], layout: AdapterLayout): string[] | string {
  if (!layout.multimodal) return [...targets];
  const attn = targets.filter((t) => ["q_proj", "k_proj", "v_proj", "o_proj"].includes(t));
  const mlp = targets.filter((t) => ["gate_proj", "up_proj", "down_proj"].includes(t));
  const parts = [attn.length ? `self_attn\\.(?:${attn.join("|")})` : "", mlp.length ? `mlp\\.(?:${mlp.join("|")})` : ""].filter(Boolean);
  return `.*language_model(?:\\.model)?\\.layers\\.\\d+\\.(?:${parts.join("|")})`;
}

export function adapterConfig(lora: LoraConfig, baseModel: string, layout: AdapterLayout = CAUSAL_LM): Record<string, unknown> {
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
    target_modules: targetModules(lora.targets, layout),
    task_type: "CAUSAL_LM",
    use_dora: false,
    use_rslora: lora.rslora,
  };
  return Object.fromEntries(Object.keys(cfg).sort().map((k) => [k, cfg[k]]));
}

export function writeAdapter(dir: string, tensors: Map<string, NamedTensor>, lora: LoraConfig, baseModel: string, layout: AdapterLayout = CAUSAL_LM): void {
  fs.mkdirSync(dir, { recursive: true });
  const list = [...tensors].map(([name, t]) => ({ name: externalPeftName(name, layout), dtype: "F32" as const, shape: t.shape, data: t.data }))
    .sort((a, b) => (a.name < b.name ? -1 : 1));
  writeSafetensors(path.join(dir, "adapter_model.safetensors"), list, { format: "pt" });
  fs.writeFileSync(path.join(dir, "adapter_config.json"), JSON.stringify(adapterConfig(lora, baseModel, layout), null, 2) + "\n");
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
  const tm = cfg.target_modules;
  if (!Array.isArray(tm) && typeof tm !== "string") throw new RangeError(`Cannot use "${cfgFile}": target_modules must be a list of module names or a regex`);
  const lora = {
    r: Number(cfg.r ?? 8),
    alpha: Number(cfg.lora_alpha ?? 8),
    dropout: Number(cfg.lora_dropout ?? 0),
    rslora: cfg.use_rslora === true,
    targets: (Array.isArray(tm) ? tm : []) as LoraConfig["targets"],
  };
  const file = path.join(dir, "adapter_model.safetensors");
  if (!fs.existsSync(file)) throw new RangeError(`"${dir}" has no adapter_model.safetensors`);
  const tensors = new Map<string, NamedTensor>();
  for (const e of readHeader(file).entries) {
    const name = internalPeftName(e.name);
    if (!/^base_model\.model\.model\.layers\.\d+\.(self_attn|mlp)\.\w+\.lora_[AB]\.weight$/.test(name)) {
      throw new RangeError(`Cannot use "${file}": tensor "${e.name}" is not a LoRA weight of a Gemma text-decoder linear`);
    }
    const data = readTensorF32(e);
    if (name.includes("lora_A") && e.shape[0] !== lora.r) throw new RangeError(`Cannot use "${file}": ${name} has rank ${e.shape[0]} but r is ${lora.r}`);
    tensors.set(name, { shape: e.shape, data: data.slice() });
  }
  if (typeof tm === "string") {
    // A regex (multimodal bases): the targets are the linears the file holds.
    lora.targets = [...new Set([...tensors.keys()].map((n) => /\.(\w+)\.lora_A\./.exec(n)?.[1]).filter((x): x is string => !!x))] as LoraConfig["targets"];
  }
  return { lora, tensors, baseModel: String(cfg.base_model_name_or_path ?? "") };
}
