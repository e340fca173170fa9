#!/usr/bin/env bash
# GPU check for docs/benchmarks.md: CUDA tensors through the transport, 4 blocks on one GPU.
#   bash tools/gpu_check.sh runs/gpu        # a few minutes; writes runs/gpu/gpu_check.json
# Needs a CUDA build of torch and one visible GPU (nvidia-smi). Set PYTHON to choose the interpreter.
set -euo pipefail
out="${1:?usage: tools/gpu_check.sh OUT_DIR}"
py="${PYTHON:-python}"
here="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/nvidia-smi.csv"
"$py" -c "import dni_dist" 2>/dev/null || "$py" -m pip install -q -e "$here"
"$py" "$here/tools/gpu_check.py" --out "$out" "${@:2}" 2>&1 | tee "$out/gpu_check.log"
