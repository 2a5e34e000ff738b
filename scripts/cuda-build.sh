#!/usr/bin/env bash
# Cross-build daa for an NVIDIA GPU (CUDA 13.0, driver >= 580, compute capability 9.0 by
# default: H100/H200) on a machine without a GPU or a system CUDA toolkit, and pack what the GPU
# machine needs into gpu/:
#   gpu/daa.xz         --features cudnn (cuDNN conv forward and backward: the fast path)
#   gpu/daa-cuda.xz    --features cuda  (no cuDNN: candle's own conv kernels)
#   gpu/tests/*.xz     the CUDA-vs-CPU test binary of daa-kernels (tests/cuda.rs), once
#   gpu/*.sh           scripts/gpu-run.sh and scripts/gpu-check.sh
# Everything stripped and xz-compressed; the whole of gpu/ must stay under the 64 MiB that
# can be carried to the GPU machine (the script fails if it does not).
#
#   bash scripts/cuda-build.sh                       # toolkit into ~/.cache/daa-cuda13, build, pack
#   bash scripts/cuda-build.sh --setup-only          # only install the toolkit wheels
#   CUDA_COMPUTE_CAP=80 bash scripts/cuda-build.sh   # another GPU generation (A100: 80)
#   VARIANTS=cudnn bash scripts/cuda-build.sh        # only the cudnn build of daa
#
# The toolkit comes from NVIDIA's PyPI wheels pinned to 13.0 (newer nvcc emits PTX that driver
# 580 cannot load), cuDNN from the nvidia-cudnn-cu13 wheel (headers and the library to link
# against; the GPU machine's own copy, e.g. PyTorch's, is loaded at run time). libcuda.so,
# which only a driver provides, is replaced at link time by a stub whose entry points all
# return CUDA_ERROR_NO_DEVICE. First run: about 2 GB of wheels, and candle's CUDA kernels are
# compiled twice (the test binary's dev-dependencies change the feature set; one clean build
# took about 9 minutes on 2 idle cores, 5 of them these kernels), much longer on a shared
# machine; later builds are incremental.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${DAA_CUDA_PREFIX:-$HOME/.cache/daa-cuda13}
CUDNN_WHEEL=nvidia-cudnn-cu13==9.21.1.3
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}

if [ ! -f "$PREFIX/env.sh" ]; then
  echo "== installing the CUDA 13.0 toolkit and cuDNN wheels into $PREFIX"
  mkdir -p "$PREFIX"
  python3 -m venv "$PREFIX/venv"
  "$PREFIX/venv/bin/pip" install -q \
    nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88 \
    'nvidia-cublas<13.2' 'nvidia-curand<10.5'
  "$PREFIX/venv/bin/pip" install -q --no-deps "$CUDNN_WHEEL"
  CU=$(echo "$PREFIX"/venv/lib/python3*/site-packages/nvidia/cu13)
  CUDNN=$(echo "$PREFIX"/venv/lib/python3*/site-packages/nvidia/cudnn)
  cp "$CUDNN"/include/*.h "$CU/include/"
  # Link-time only: cudarc links -lcudnn; the sub-libraries are found at run time.
  cp "$CUDNN"/lib/libcudnn.so.9 "$CU/lib/" && ln -sf libcudnn.so.9 "$CU/lib/libcudnn.so"
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
nvcc --version | tail -1
if [ "${1:-}" = --setup-only ]; then exit 0; fi
export CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-$(nproc)}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target-cuda}

rm -rf gpu && mkdir -p gpu/tests
# The CUDA-vs-CPU tests (the GPU machine has no Rust toolchain). Only the cuda test binary:
# every other test is a CPU test that `cargo test` runs here.
echo "== building the CUDA test binary of daa-kernels (--features cudnn)"
TESTS=$(cargo test --release --no-run -p daa-kernels --features cudnn --test cuda \
  --message-format=json \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])')
for t in $TESTS; do strip -o "gpu/tests/$(basename "$t" | sed 's/-[0-9a-f]*$//')" "$t"; done
# VARIANTS="cudnn" skips the cuda-only binary (it only serves comparisons with candle's conv).
for features in ${VARIANTS:-cudnn cuda}; do
  echo "== building daa with --features $features for sm_$CUDA_COMPUTE_CAP"
  cargo build --release -p daa-cli --features "$features"
  name=daa; [ "$features" = cuda ] && name=daa-cuda
  strip -o "gpu/$name" "$CARGO_TARGET_DIR/release/daa"
done
xz -T0 -6 gpu/daa* gpu/tests/*
cp scripts/gpu-run.sh scripts/gpu-check.sh scripts/bench_torch.py scripts/reference_nets.py gpu/
ls -l gpu gpu/tests
size=$(du -sb gpu | cut -f1)
echo "== gpu/ is $size bytes ($((size / 1048576)) MiB; the limit is 64 MiB)"
if [ "$size" -ge $((64 * 1048576)) ]; then
  echo "cuda-build: gpu/ is over 64 MiB" >&2
  exit 1
fi
echo "== carry gpu/ (and datasets/) to the GPU machine, then: bash gpu/gpu-check.sh"
