/**
 * README.md model card for `final/`: Hugging Face front matter (so the Hub and PEFT recognise it) and
 * what a person needs to reproduce or judge the run — base model, data, settings, final losses.
 */
import type { RunConfig } from "../config/training.ts";

export interface CardInput {
  runId: string;
  config: RunConfig;
  baseModel: string;
  dataset: { format: string; train: number; validation: number; invalid: number; truncated: number };
  step: number;
  totalSteps: number;
  epoch: number;
  trainLoss: number | null;
  evalLoss: number | null;
  parameters: { total: number; trainable: number };
  finishedAt: string;
  state: "completed" | "aborted";
}

const fmt = (x: number | null) => (x === null || !Number.isFinite(x) ? "n/a" : x.toFixed(4));

export function modelCard(c: CardInput): string {
  const cfg = c.config;
  const lora = cfg.method === "lora";
  const front = [
    "---",
    `base_model: ${JSON.stringify(c.baseModel)}`,
    lora ? "library_name: peft" : "library_name: transformers",
    "pipeline_tag: text-generation",
    "tags:",
    "- gemma-tuner",
    lora ? "- lora" : "- full-fine-tune",
    "---",
  ];
  const settings: [string, string][] = [
    ["method", cfg.method],
    ...(lora
      ? [
        ["LoRA", `r ${cfg.lora.r}, alpha ${cfg.lora.alpha}, dropout ${cfg.lora.dropout}${cfg.lora.rslora ? ", rsLoRA" : ""}, targets ${cfg.lora.targets.join(", ")}`] as [
          string,
          string,
        ],
      ]
      : []),
    ["steps", `${c.step} of ${c.totalSteps} (${c.epoch.toFixed(2)} epochs)`],
    ["batch", `${cfg.batchSize} × ${cfg.gradAccum} accumulation`],
    ["learning rate", `${cfg.learningRate} (${cfg.schedule}, ${cfg.warmupSteps} warmup steps)`],
    [cfg.optimizer === "adamw-8bit" ? "AdamW (8-bit moments)" : "AdamW", `betas (${cfg.adamBeta1}, ${cfg.adamBeta2}), eps ${cfg.adamEps}, weight decay ${cfg.weightDecay}`],
    ["max grad norm", String(cfg.maxGradNorm)],
    ["max length", String(cfg.maxLength)],
    ["seed", String(cfg.seed)],
    ["device", cfg.device],
  ];
  const lines = [
    ...front,
    "",
    `# ${cfg.name}`,
    "",
    `${lora ? "A LoRA adapter" : "A fully fine-tuned model"} trained with gemma-tuner from \`${c.baseModel}\` (run \`${c.runId}\`, ${c.state} ${c.finishedAt}).`,
    "",
    "## Results",
    "",
    "| | loss |",
    "|---|---|",
    `| train (last step) | ${fmt(c.trainLoss)} |`,
    `| eval | ${fmt(c.evalLoss)} |`,
    "",
    "## Data",
    "",
    `\`${cfg.dataset.path}\`, format ${c.dataset.format}: ${c.dataset.train} training and ${c.dataset.validation} validation examples` +
    `${c.dataset.invalid ? `, ${c.dataset.invalid} rows skipped as invalid` : ""}${c.dataset.truncated ? `, ${c.dataset.truncated} cut at ${cfg.maxLength} tokens` : ""}.`,
    "",
    "## Settings",
    "",
    "| setting | value |",
    "|---|---|",
    ...settings.map(([k, v]) => `| ${k} | ${v} |`),
    "",
    `Parameters: ${c.parameters.total.toLocaleString("en-US")} total, ${c.parameters.trainable.toLocaleString("en-US")} trained.`,
    "",
    "## Use",
    "",
    lora
      ? "```python\nfrom peft import PeftModel\nfrom transformers import AutoModelForCausalLM\nbase = AutoModelForCausalLM.from_pretrained(" + JSON.stringify(c.baseModel) +
        ')\nmodel = PeftModel.from_pretrained(base, "path/to/final")\n```'
      : '```python\nfrom transformers import AutoModelForCausalLM\nmodel = AutoModelForCausalLM.from_pretrained("path/to/final")\n```',
    "",
  ];
  return lines.join("\n");
}
