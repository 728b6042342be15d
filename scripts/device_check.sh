#!/usr/bin/env bash
# The device check to run whenever a GPU machine is lent: which devices work and why not, WebGPU/CUDA
# against the CPU (loss, every gradient, generation) and a LoRA + decode bench at the 270m shape on
# each device. One JSON line per figure on stdout. Short by design (a few minutes); set
# DEVICE_CHECK_LAYERS (default 2), DEVICE_CHECK_STEPS (default 3) and DEVICE_CHECK_VOCAB (default 262144;
# smaller for a quick run on a software adapter such as lavapipe).
# Needs Deno (npm i -g deno@2.9.6); on a machine with an NVIDIA GPU, `deno task cli setup-cuda` first
# (network) or --ort-providers / GEMMA_TUNER_ORT_PROVIDERS pointing at the provider libraries.
set -euo pipefail
cd "$(dirname "$0")/.."
export MESA_SHADER_CACHE_DIR="${MESA_SHADER_CACHE_DIR:-$(mktemp -d)}"
exec deno run -A --v8-flags=--max-old-space-size=8192 scripts/device_check.ts
