#!/usr/bin/env bash
# Cross-build daa for an NVIDIA GPU (CUDA 13.0, driver >= 580, compute capability 9.0 by
# default) on a machine without a GPU or a system CUDA toolkit, and pack what the GPU machine
# needs into gpu/: the `daa` binary and the CUDA test binaries of daa-kernels and daa-train,
# xz-compressed, plus scripts/gpu-run.sh and scripts/gpu-check.sh.
#
#   bash scripts/cuda-build.sh            # toolkit into ~/.cache/daa-cuda13, build, pack
#   CUDA_COMPUTE_CAP=80 bash scripts/cuda-build.sh   # another GPU generation (A100: 80)
#   FEATURES=cudnn bash scripts/cuda-build.sh         # with cuDNN
#
# The toolkit comes from NVIDIA's PyPI wheels pinned to 13.0 (newer nvcc emits PTX that driver
# 580 cannot load); libcuda.so, which only a driver provides, is replaced at link time by a stub
# whose entry points all return CUDA_ERROR_NO_DEVICE: the real one is loaded on the GPU machine.
# First run: about 1.4 GB of wheels and a 9-minute build on 2 cores; later builds are incremental.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${DAA_CUDA_PREFIX:-$HOME/.cache/daa-cuda13}
FEATURES=${FEATURES:-cuda}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}

if [ ! -f "$PREFIX/env.sh" ]; then
  echo "== installing the CUDA 13.0 toolkit wheels into $PREFIX"
  mkdir -p "$PREFIX"
  python3 -m venv "$PREFIX/venv"
  "$PREFIX/venv/bin/pip" install -q \
    nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88 \
    'nvidia-cublas<13.2' 'nvidia-curand<10.5'
  CU=$(echo "$PREFIX"/venv/lib/python3*/site-packages/nvidia/cu13)
  if [ "$FEATURES" != cuda ]; then
    # cuDNN for --features cudnn: headers and the library to link against.
    "$PREFIX/venv/bin/pip" install -q --no-deps nvidia-cudnn-cu13==9.21.1.3
    CUDNN=$(echo "$PREFIX"/venv/lib/python3*/site-packages/nvidia/cudnn)
    cp "$CUDNN"/include/*.h "$CU/include/"
    cp "$CUDNN"/lib/libcudnn.so.9 "$CU/lib/" && ln -sf libcudnn.so.9 "$CU/lib/libcudnn.so"
  fi
  for l in nvrtc cublas cublasLt cudart; do ln -sf "lib$l.so.13" "$CU/lib/lib$l.so"; done
  ln -sf libcurand.so.10 "$CU/lib/libcurand.so"
  # The libcuda stub: one function per cu* symbol cudarc binds, each returning 100 (no device).
  cargo fetch -q
  SYS=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.*/src/driver/sys/mod.rs | tail -1)
  mkdir -p "$CU/lib/stubs"
  grep -oE "pub unsafe fn cu[A-Za-z0-9_]+" "$SYS" | awk '{print $4}' | sort -u \
    | awk '{print "int " $1 "(void) { return 100; }"}' > "$PREFIX/libcuda_stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$CU/lib/stubs/libcuda.so" "$PREFIX/libcuda_stub.c"
  ln -sf libcuda.so "$CU/lib/stubs/libcuda.so.1"
  cat > "$PREFIX/env.sh" <<EOT
export CUDA_HOME=$CU
export PATH=$CU/bin:\$PATH
export CUDARC_CUDA_VERSION=13000
EOT
fi
# shellcheck disable=SC1091
source "$PREFIX/env.sh"
export CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-$(nproc)}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target-cuda}

echo "== building daa with --features $FEATURES for sm_$CUDA_COMPUTE_CAP"
cargo build --release -p daa-cli --features "$FEATURES"
# Test binaries run on the GPU machine, which has no Rust toolchain.
TESTS=$(cargo test --release --no-run -p daa-kernels -p daa-train --features "$FEATURES" \
  --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])')

rm -rf gpu && mkdir -p gpu/tests
strip -o gpu/daa "$CARGO_TARGET_DIR/release/daa"
for t in $TESTS; do strip -o "gpu/tests/$(basename "$t")" "$t"; done
xz -T0 -6 gpu/daa gpu/tests/*
cp scripts/gpu-run.sh scripts/gpu-check.sh gpu/
du -sh gpu
echo "== carry gpu/ (and datasets/) to the GPU machine, then: bash gpu/gpu-check.sh"
