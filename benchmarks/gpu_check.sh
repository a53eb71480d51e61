#!/usr/bin/env bash
# One check of every CUDA branch on one GPU (a few minutes), printing one table; see
# benchmarks/gpu_check.py. Every row compares a measured number with the CPU's result or a stated
# bound and says FAIL (exit status 1) when it is off. Without CUDA it runs the same rows at tiny sizes.
# Usage: benchmarks/gpu_check.sh [--device cuda:0] [--out DIR] [--checks videos,extract,...] [--dry-run]
set -euo pipefail
cd "$(dirname "$0")/.."
exec env PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" python3 -m benchmarks.gpu_check "$@"
