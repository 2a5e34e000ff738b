#!/usr/bin/env bash
# On the GPU machine: put its CUDA 13 runtime libraries on the library path, unpack the
# binaries built by scripts/cuda-build.sh, and run a command with them.
#
#   bash gpu/gpu-run.sh daa --device cuda:0 train --preset denoise-paper ...
#   source gpu/gpu-run.sh            # only set up the environment in this shell
set -eo pipefail
GPU_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# PyTorch's own CUDA and cuDNN wheels first (site-packages/nvidia/*/lib), then system paths.
PY_ROOTS=$(python3 -c 'import sys, os
for p in sys.path:
    for d in ("nvidia", "torch/lib"):
        if os.path.isdir(os.path.join(p, d)): print(os.path.join(p, d))' 2>/dev/null)
findlib() {
  for r in $PY_ROOTS /usr/local/cuda /opt /usr/local /usr/lib; do
    f=$(find "$r" -name "$1" 2>/dev/null | head -1)
    if [ -n "$f" ]; then dirname "$f"; return; fi
  done
}
libs=""
for l in libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13 libcudart.so.13 libcudnn.so.9; do
  d=$(findlib "$l")
  if [ -z "$d" ]; then echo "gpu-run: $l not found (needed only by some features)" >&2; continue; fi
  case ":$libs:" in *":$d:"*) ;; *) libs="$libs:$d" ;; esac
done
export LD_LIBRARY_PATH="${libs#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
inc=$(findlib cuda_bf16.h)
export NVRTC_INCLUDE=${inc:-/usr/local/cuda/include}
for f in "$GPU_DIR"/*.xz "$GPU_DIR"/tests/*.xz; do
  [ -f "$f" ] && [ ! -f "${f%.xz}" ] && xz -dk "$f" && chmod +x "${f%.xz}"
done
export PATH="$GPU_DIR:$PATH"
if [ "${BASH_SOURCE[0]}" = "$0" ] && [ $# -gt 0 ]; then exec "$@"; fi
