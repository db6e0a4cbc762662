#!/usr/bin/env bash
# GPU smoke test (issue #17): data stage, yolo11n at imgsz 640 for a few epochs on GPU 0, kretrain's evaluation.
# Run it on a machine with an NVIDIA GPU: `bash bench/gpu_smoke.sh [--epochs 3] [--images 400]`. Never in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_smoke: no NVIDIA GPU here (nvidia-smi finds none); nothing to do" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
make venv >/dev/null
exec .venv/bin/python bench/gpu_smoke.py "$@"
