#!/usr/bin/env bash
# Paired measurement for issue 3's targets: `gemma-tuner bench` and the PyTorch eager baseline
# (scripts/torch_baseline.py) on the same shape, alternated so both see the same machine state.
#   PYTHON=/path/to/python-with-torch scripts/bench_vs_torch.sh [steps]
# Prints one JSON line per run. Nothing in the app or its tests uses this.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
STEPS="${1:-6}"
for method in lora full forward; do
  "$PY" scripts/torch_baseline.py --method "$method" --steps "$STEPS" 2>/dev/null
  deno run -A --v8-flags=--max-old-space-size=8192 main.ts bench --method "$method" --steps "$STEPS" 2>/dev/null | tail -1
done
