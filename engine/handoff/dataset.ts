/**
 * The dataset of a job bundle: the rows exactly as our trainer trains on them (trainer/worker.ts
 * calls the same `prepareDataset` with the same tokenizer, chat style, maxLength and seed), written
 * pre-tokenised so the target cannot re-render them differently:
 *
 *   {"input_ids": [...], "attention_mask": [1, ...], "labels": [...], "completion_mask": [0|1, ...]}
 *
 * `labels` follow the HF convention (the token id where it is trained, −100 elsewhere; the model shifts),
 * which is what our engine does too. Axolotl reads input_ids/attention_mask/labels when no `type:` is
 * given; the bundle's train_trl.py hands the same three columns to the HF Trainer. `completion_mask`
 * says the same as `labels` for TRL's own collator (completion_only_loss).
 */
import { prepareDataset, type PreparedDataset, type TokenizedExample } from "../data/mod.ts";
import { IGNORE } from "../data/tokenize.ts";
import { resolveModelPath } from "../model_dir.ts";
import { loadTokenizer } from "../tokenizer.ts";
import type { RunConfig } from "../../config/training.ts";

export interface BundleRow {
  input_ids: number[];
  attention_mask: number[];
  labels: number[];
  completion_mask: number[];
}

export interface RenderedDataset {
  train: BundleRow[];
  validation: BundleRow[];
  prepared: Omit<PreparedDataset, "train" | "validation">;
}

export function toRow(e: TokenizedExample): BundleRow {
  return {
    input_ids: e.ids,
    attention_mask: e.ids.map(() => 1),
    labels: e.labels,
    completion_mask: e.labels.map((l) => (l === IGNORE ? 0 : 1)),
  };
}

/** JSON Lines, one row a line. */
export function jsonl(rows: BundleRow[]): string {
  return rows.map((r) => JSON.stringify(r)).join("\n") + (rows.length ? "\n" : "");
}

/** The run's dataset tokenised by the run's model's tokenizer, split and packed as the trainer does. */
export async function renderDataset(cfg: RunConfig, dataDir: string): Promise<RenderedDataset> {
  const modelDir = await resolveModelPath(cfg.model, dataDir);
  const tok = await loadTokenizer(modelDir);
  const data = await prepareDataset(cfg.dataset, tok, { maxLength: cfg.maxLength, seed: cfg.seed, chat: tok.chat });
  const { train, validation, ...prepared } = data;
  return { train: train.map(toRow), validation: validation.map(toRow), prepared };
}
