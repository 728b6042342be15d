/**
 * The TRL bundle's training script (Python, for the cluster; nothing here runs it). It hands the
 * pre-tokenised rows to SFTTrainer with a collator that keeps our labels exactly (TRL's own collator
 * would rebuild labels from input_ids), so the loss mask on the cluster is the one our trainer uses.
 */
export const TRAIN_TRL_PY = `"""Fine-tune with TRL's SFTTrainer on this bundle's pre-tokenised rows (written by gemma-tuner export-job).

Usage:  torchrun --nproc_per_node N train_trl.py trl.yaml
trl.yaml sections: model (from_pretrained arguments), peft (peft.LoraConfig, null for full
fine-tuning), sft (trl.SFTConfig), data (the JSONL files).
"""
import sys

import torch
import yaml
from datasets import load_dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
from trl import SFTConfig, SFTTrainer

COLUMNS = ("input_ids", "attention_mask", "labels")


def main(path):
    with open(path) as f:
        cfg = yaml.safe_load(f)
    m = dict(cfg["model"])
    name = m.pop("name_or_path")
    kwargs = {"torch_dtype": getattr(torch, m.pop("torch_dtype", "bfloat16")), "attn_implementation": "eager"}
    if m.pop("load_in_4bit", False):
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=m.pop("bnb_4bit_quant_type", "nf4"),
            bnb_4bit_compute_dtype=getattr(torch, m.pop("bnb_4bit_compute_dtype", "bfloat16")),
        )
    elif m.pop("load_in_8bit", False):
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
    model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(name)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    files = {"train": cfg["data"]["train"]}
    if cfg["data"].get("validation"):
        files["validation"] = cfg["data"]["validation"]
    ds = load_dataset("json", data_files=files)
    ds = ds.remove_columns([c for c in ds["train"].column_names if c not in COLUMNS])

    def collate(rows):
        # Right padding: pad id, attention 0, label -100 (what our trainer pads with).
        width = max(len(r["input_ids"]) for r in rows)
        def pad(key, value):
            return torch.tensor([r[key] + [value] * (width - len(r[key])) for r in rows], dtype=torch.long)
        return {"input_ids": pad("input_ids", pad_id), "attention_mask": pad("attention_mask", 0), "labels": pad("labels", -100)}

    peft_config = LoraConfig(**cfg["peft"]) if cfg.get("peft") else None
    args = SFTConfig(**cfg["sft"])
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=ds["train"],
        eval_dataset=ds.get("validation"),
        processing_class=tokenizer,
        data_collator=collate,
        peft_config=peft_config,
    )
    trainer.train()
    trainer.save_model(args.output_dir)
    tokenizer.save_pretrained(args.output_dir)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "trl.yaml")
`;
