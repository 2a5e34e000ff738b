#!/usr/bin/env bash
# The one prepared script for the GPU machine (after scripts/cuda-build.sh here): checks the
# CUDA paths, then times the benchmarks, and prints a short table last. Needs no Rust, no
# network. Run from the repository root: bash gpu/gpu-check.sh [seconds budget for benches]
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
source gpu/gpu-run.sh
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
status=0
echo "== tests (CUDA paths against the CPU references)"
for t in gpu/tests/*; do
  case "$t" in *.xz) continue ;; esac
  echo "-- $(basename "$t")"
  DAA_TEST_CUDA=1 "$t" --test-threads 1 2>&1 | tail -3 || status=1
done
echo "== train steps (daa bench; PyTorch side: scripts/bench_torch.py)"
for preset in cpu paper; do
  daa bench --device cuda:0 --preset "$preset" --steps 10 --warmup 3 || status=1
  if python3 -c 'import torch' 2>/dev/null; then
    python3 scripts/bench_torch.py --device cuda --preset "$preset" --steps 10 --warmup 3 || status=1
  fi
done
exit $status
