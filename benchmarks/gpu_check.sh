#!/usr/bin/env bash
# One check of every CUDA branch on one GPU (a few minutes), printing one table; see
# benchmarks/gpu_check.py. Without CUDA it runs the CPU-possible parts at tiny sizes.
# Usage: benchmarks/gpu_check.sh [--device cuda:0] [--out DIR] [--dry-run]
set -euo pipefail
cd "$(dirname "$0")/.."
exec env PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" python3 -m benchmarks.gpu_check "$@"
