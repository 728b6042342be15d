#!/usr/bin/env bash
# Paired measurement for issues 3 and 14: `gemma-tuner bench` and the PyTorch eager baseline
# (scripts/torch_baseline.py) on the same shape, alternated so both see the same machine state.
#   PYTHON=/path/to/python-with-torch scripts/bench_vs_torch.sh [steps] [--preset gemma-3-270m]
#       [--methods "lora full forward"] [--rounds N] [--optimizer adamw-8bit]
# --preset gemma-3-270m runs the real depth (18 layers) on both sides; without it both run the
# 270m shape cut to 2 layers. --rounds repeats the alternation (torch, ours, torch, ours, ...).
# --optimizer sets ours only (`bench --optimizer`); PyTorch always runs torch.optim.AdamW (float32 moments).
# Prints one JSON line per run with the 1-minute load average beside it. Nothing in the app or its
# tests uses this.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
STEPS=6
PRESET=""
METHODS="lora full forward"
ROUNDS=1
OPTIMIZER=adamw
while [ $# -gt 0 ]; do
  case "$1" in
    --preset) PRESET="$2"; shift 2 ;;
    --methods) METHODS="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --optimizer) OPTIMIZER="$2"; shift 2 ;;
    [0-9]*) STEPS="$1"; shift ;;
    *) echo "bench_vs_torch.sh: unknown argument $1 (steps, --preset NAME, --methods LIST, --rounds N, --optimizer NAME)" >&2; exit 2 ;;
  esac
done
TORCH_SHAPE=()
OURS_SHAPE=()
case "$PRESET" in
  "") ;;
  gemma-3-270m) TORCH_SHAPE=(--layers 18); OURS_SHAPE=(--preset gemma-3-270m) ;;
  *) echo "bench_vs_torch.sh: --preset $PRESET has no PyTorch shape here (gemma-3-270m does)" >&2; exit 2 ;;
esac
load() { cut -d' ' -f1 /proc/loadavg; }
for round in $(seq 1 "$ROUNDS"); do
  for method in $METHODS; do
    l=$(load)
    echo "{\"side\":\"torch\",\"round\":$round,\"load_before\":$l,\"result\":$("$PY" scripts/torch_baseline.py --method "$method" --steps "$STEPS" "${TORCH_SHAPE[@]}" 2>/dev/null),\"load_after\":$(load)}"
    l=$(load)
    echo "{\"side\":\"ours\",\"round\":$round,\"load_before\":$l,\"result\":$(deno run -A --v8-flags=--max-old-space-size=8192 main.ts bench --method "$method" --optimizer "$OPTIMIZER" --steps "$STEPS" "${OURS_SHAPE[@]}" 2>/dev/null | tail -1),\"load_after\":$(load)}"
  done
done
