#!/usr/bin/env bash
# Seconds from `train` start to each line it prints: the issue-14 "first step within 10 s of train
# start" measurement (notes/PERF.md). Usage: scripts/train_start_timer.sh MODEL_DIR [DATA_DIR]
# Trains 2 LoRA steps of batch 4 × 64 on the sample dataset; DATA_DIR (default a fresh temporary one)
# is emptied first.
set -euo pipefail
model=${1:?usage: scripts/train_start_timer.sh MODEL_DIR [DATA_DIR]}
data=${2:-$(mktemp -d)}
cd "$(dirname "$0")/.."
rm -rf "$data" && mkdir -p "$data"
cfg="$data/first-step.json"
printf '{"name":"first-step","model":"%s","dataset":{"path":"sample","validation":0},"method":"lora","maxSteps":2,"batchSize":4,"maxLength":64,"evalEvery":0,"saveEvery":0,"seed":1}\n' "$model" > "$cfg"
t0=$(date +%s%N)
deno run -A main.ts train --config "$cfg" --data "$data" 2>&1 | while IFS= read -r line; do
  now=$(date +%s%N)
  printf '%7.2f %s\n' "$(awk -v a="$now" -v b="$t0" 'BEGIN { print (a - b) / 1e9 }')" "${line:0:160}"
done
