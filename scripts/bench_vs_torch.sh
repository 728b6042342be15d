#!/usr/bin/env bash
# Paired measurement for issues 3 and 14: `gemma-tuner bench` and the PyTorch eager baseline
# (scripts/torch_baseline.py) on the same shape, alternated so both see the same machine state.
#   PYTHON=/path/to/python-with-torch scripts/bench_vs_torch.sh [steps] [--preset gemma-3-270m]
#       [--methods "lora full forward"] [--rounds N] [--optimizer adamw-8bit]
# --preset gemma-3-270m runs the real depth (18 layers) on both sides; without it both run the
# 270m shape cut to 2 layers. --rounds repeats the alternation (torch, ours, torch, ours, ...).
# --optimizer sets ours only (`bench --optimizer`); PyTorch always runs torch.optim.AdamW (float32 moments).
# Prints the host's processor first (speed ratios from different processors do not compare), then one
# JSON line per run with the 1-minute load average and the CPU steal over the second before it (a
# hypervisor taking the cores) beside it. Nothing in the app or its tests uses this.
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
# Percent of CPU time stolen by the hypervisor over one second (/proc/stat's 8th counter).
steal() {
  local a b
  read -r -a a < /proc/stat
  sleep 1
  read -r -a b < /proc/stat
  awk -v s="$(( b[8] - a[8] ))" -v t="$(( (b[1]+b[2]+b[3]+b[4]+b[5]+b[6]+b[7]+b[8]) - (a[1]+a[2]+a[3]+a[4]+a[5]+a[6]+a[7]+a[8]) ))" \
    'BEGIN { printf "%.1f", (t > 0 ? 100 * s / t : 0) }'
}
cpu=$(awk -F': *' '/^model name/ { n = $2 } /^cpu family/ { f = $2 } /^model[ \t]*:/ { m = $2 } END { printf "%s (family %s, model %s)", n, f, m }' /proc/cpuinfo)
echo "{\"host\":{\"cpu\":\"$cpu\",\"cores\":$(nproc)}}"
for round in $(seq 1 "$ROUNDS"); do
  for method in $METHODS; do
    st=$(steal); l=$(load)
    echo "{\"side\":\"torch\",\"round\":$round,\"load_before\":$l,\"steal_before\":$st,\"result\":$("$PY" scripts/torch_baseline.py --method "$method" --steps "$STEPS" "${TORCH_SHAPE[@]}" 2>/dev/null),\"load_after\":$(load)}"
    st=$(steal); l=$(load)
    echo "{\"side\":\"ours\",\"round\":$round,\"load_before\":$l,\"steal_before\":$st,\"result\":$(deno run -A --v8-flags=--max-old-space-size=8192 main.ts bench --method "$method" --optimizer "$OPTIMIZER" --steps "$STEPS" "${OURS_SHAPE[@]}" 2>/dev/null | tail -1),\"load_after\":$(load)}"
  done
done
