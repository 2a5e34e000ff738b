#!/usr/bin/env bash
# The one prepared script for the GPU machine (after scripts/cuda-build.sh here). It needs no
# Rust and no network: it runs the binaries packed in gpu/ and the PyTorch installed there.
#
#   bash gpu/gpu-check.sh                 # on the GPU machine, from the repository root (< 8 min on an H200)
#   bash scripts/gpu-check.sh --dry-run   # here, on the CPU, at tiny sizes: checks the script itself
#
# Parts (each reports PASS/FAIL; the exit status is non-zero if any part failed):
#   1. versions: GPU, driver, CUDA, cuDNN, PyTorch
#   2. CUDA vs CPU values and gradients of every custom op (gpu/tests/cuda: conv2d through cuDNN in
#      f32 strict / TF32 / f64 / bf16, GroupNorm, swap_condition)
#   3. a whole DA training step: the smoke preset trained 4 steps on the CPU and on the GPU
#      (strict f32) from the same seed; every logged loss must agree to 1e-3 relative
#   4. the paper configuration (R 8.56 M + D 62.6 M, batch 24, 128x128): median DA and vanilla
#      steps in f32 (TF32 convs, PyTorch's default), strict f32 and bf16, peak GPU memory, and
#      R on one 1024x1024 image; the same for scripts/bench_torch.py; one table with ratios
#   5. 300 steps of `denoise-paper` training: the loss must fall, no step may be non-finite
#
# Environment: PARTS (which of parts 2-5 to run, default 2345), DAA (the daa binary; default gpu/daa, the cudnn build), STEPS (training steps,
# default 300), BENCH_STEPS (timed steps per benchmark, default 10), OUT (results folder, default
# gpu-check-<time>; checkpoints and images are deleted at the end unless KEEP_CHECKPOINTS=1).
# bf16 rows use `daa bench --precision bf16` (skipped by older binaries); the inference row uses
# `daa bench --infer` when it exists, else times `daa restore` (which includes PNG I/O).
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
[ "${1:-}" = --dry-run ] && DRY=1
OUT=${OUT:-gpu-check-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
status=0
fail() { echo "FAIL: $*"; status=1; }
t_start=$(date +%s)
PARTS=${PARTS:-2345}
want() { [[ $PARTS == *$1* ]]; }

if [ $DRY = 1 ]; then
  DAA=${DAA:-target/release/daa}
  DEV=cpu PRESET=cpu PYDEV=cpu INFER=64 STEPS=${STEPS:-3} BENCH_STEPS=${BENCH_STEPS:-1} WARMUP=0
  TRAIN_PRESET=smoke TRAIN_PATCH=32 TRAIN_BATCH=2
  export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-2}
else
  # shellcheck disable=SC1091
  source gpu/gpu-run.sh
  set +e  # gpu-run.sh sets -e; here every part reports and the next one runs
  DAA=${DAA:-gpu/daa}
  DEV=cuda:0 PRESET=paper PYDEV=cuda INFER=1024 STEPS=${STEPS:-300} BENCH_STEPS=${BENCH_STEPS:-10} WARMUP=3
  TRAIN_PRESET=denoise-paper TRAIN_PATCH=128 TRAIN_BATCH=24
fi
if [ ! -x "$DAA" ]; then
  echo "gpu-check: no daa binary at $DAA (build it: bash scripts/cuda-build.sh)" >&2
  exit 2
fi
HAVE_TORCH=0
python3 -c 'import torch' 2>/dev/null && HAVE_TORCH=1
TORCH_BENCH=scripts/bench_torch.py
[ -f gpu/bench_torch.py ] && TORCH_BENCH=gpu/bench_torch.py

echo "== 1. versions"
echo "daa binary: $DAA ($(git rev-parse --short HEAD 2>/dev/null || echo 'no git'))"
if [ $DRY = 0 ]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader || fail "nvidia-smi"
  nvidia-smi | grep -o "CUDA Version: [0-9.]*" || true
  echo "libcudnn: $(ls "$(echo "$LD_LIBRARY_PATH" | tr ':' '\n' | while read -r d; do [ -f "$d/libcudnn.so.9" ] && echo "$d" && break; done)"/libcudnn.so.9* 2>/dev/null | head -3 | tr '\n' ' ')"
fi
if [ $HAVE_TORCH = 1 ]; then
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"
else
  echo "torch: not installed (the PyTorch columns stay empty)"
fi

if want 2; then
echo "== 2. CUDA vs CPU: every custom op, values and gradients"
if [ $DRY = 1 ]; then
  echo "(dry run: the CUDA test binary needs a GPU; skipped)"
else
  for t in gpu/tests/*; do
    case "$t" in *.xz) continue ;; esac
    echo "-- $(basename "$t")"
    if "$t" --test-threads 1 > "$OUT/test-$(basename "$t").log" 2>&1; then
      grep -E "^test result" "$OUT/test-$(basename "$t").log"
    else
      grep -E "^test .*FAILED|panicked|relative difference|^test result" "$OUT/test-$(basename "$t").log" | head -20
      fail "CUDA op tests ($(basename "$t")); log: $OUT/test-$(basename "$t").log"
    fi
  done
fi
fi

if want 3; then
echo "== 3. one whole DA step, CPU vs $DEV (smoke preset, seed 0, strict f32)"
# The cudnn build (DAA) and, when packed, the cuda-only build (candle's conv kernels).
STEP_BINS=("$DAA")
[ $DRY = 0 ] && [ -x gpu/daa-cuda ] && STEP_BINS+=(gpu/daa-cuda)
DAA_CUDNN_TF32=0 "$DAA" --device cpu train --preset smoke --steps 4 --seed 0 \
  --run-dir "$OUT/step-cpu" > "$OUT/step-cpu.log" 2>&1 || fail "smoke training on the CPU; log: $OUT/step-cpu.log"
for bin in "${STEP_BINS[@]}"; do
  name=dev-$(basename "$bin")
  DAA_CUDNN_TF32=0 "$bin" --device "$DEV" train --preset smoke --steps 4 --seed 0 \
    --run-dir "$OUT/step-$name" > "$OUT/step-$name.log" 2>&1 || fail "smoke training with $bin on $DEV; log: $OUT/step-$name.log"
  echo "-- $bin"
  python3 - "$OUT/step-cpu/metrics.jsonl" "$OUT/step-$name/metrics.jsonl" <<'EOF' || fail "DA step ($bin): CPU and GPU losses differ"
import json, math, sys
rows = [[json.loads(l) for l in open(p) if '"loss_total"' in l] for p in sys.argv[1:]]
assert rows[0] and len(rows[0]) == len(rows[1]), f"logged steps differ: {len(rows[0])} vs {len(rows[1])}"
worst = 0.0
for a, b in zip(*rows):
    for k, v in a.items():
        if k.startswith("loss_"):
            w = b[k]
            assert math.isfinite(v) and math.isfinite(w), f"step {a['step']} {k}: {v} vs {w}"
            worst = max(worst, abs(v - w) / max(abs(v), 1e-3))
print(f"{len(rows[0])} steps, every loss part: worst relative difference {worst:.2e} (limit 1e-3)")
assert worst <= 1e-3
EOF
done
fi

if want 4; then
echo "== 4. speed and memory ($PRESET networks on $DEV)"
# Peak device memory of one command: nvidia-smi sampled every 100 ms (the whole process,
# allocator pools included, the same way for daa and PyTorch).
peak_run() {
  local log=$1
  shift
  if [ $DRY = 1 ]; then
    "$@" > "$log" 2>&1
    return
  fi
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 -lms 100 > "$log.mem" 2>/dev/null &
  local smi=$!
  "$@" > "$log" 2>&1
  local rc=$?
  kill "$smi" 2>/dev/null
  wait "$smi" 2>/dev/null
  echo "{\"peak_smi_gib\": $(sort -n "$log.mem" | tail -1 | awk '{printf "%.2f", $1 / 1024}')}" >> "$log"
  return $rc
}
BENCH_HELP=$("$DAA" bench --help 2>&1)
has_flag() { grep -q -- "$1" <<< "$BENCH_HELP"; }
for prec in tf32 f32 bf16; do
  extra=()
  tf32=1
  [ $prec = f32 ] && tf32=0
  if [ $prec = bf16 ]; then
    if ! has_flag --precision; then
      echo "daa bf16: n/a (daa bench has no --precision yet)"
      continue
    fi
    extra=(--precision bf16)
  elif has_flag --precision; then
    extra=(--precision f32)
  fi
  for method in vanilla da; do
    DAA_CUDNN_TF32=$tf32 peak_run "$OUT/bench-daa-$prec-$method.log" "$DAA" --device "$DEV" bench --preset "$PRESET" \
      --methods "$method" --steps "$BENCH_STEPS" --warmup "$WARMUP" "${extra[@]}" \
      || fail "daa bench $prec $method; log: $OUT/bench-daa-$prec-$method.log"
    # daa prints its --precision (f32 or bf16); the row's label says tf32 vs strict f32 too.
    if grep -q '"precision"' "$OUT/bench-daa-$prec-$method.log"; then
      sed -i -E "s/\"precision\": ?\"[a-z0-9]+\"/\"precision\":\"$prec\"/" "$OUT/bench-daa-$prec-$method.log"
    else
      sed -i "s/\"method\"/\"precision\": \"$prec\", \"method\"/" "$OUT/bench-daa-$prec-$method.log"
    fi
    grep -h '"median_ms"' "$OUT/bench-daa-$prec-$method.log" || true
  done
done
# R alone on one INFER x INFER image.
if has_flag --infer; then
  DAA_CUDNN_TF32=1 peak_run "$OUT/bench-daa-tf32-infer.log" "$DAA" --device "$DEV" bench --preset "$PRESET" \
    --methods vanilla --infer "$INFER" --steps "$BENCH_STEPS" --warmup "$WARMUP" || fail "daa bench --infer"
else
  # Without a timing mode: restore 1 and then 6 copies of one image from a trained-from-scratch
  # checkpoint; (t6 - t1) / 5 per image, PNG decode/encode included.
  python3 - "$OUT/infer" "$INFER" <<'EOF'
import sys, zlib, struct, random, pathlib
out, n = pathlib.Path(sys.argv[1]), int(sys.argv[2])
(out / "one").mkdir(parents=True, exist_ok=True); (out / "six").mkdir(exist_ok=True)
rnd = random.Random(0)
raw = b"".join(b"\x00" + bytes(rnd.randrange(256) for _ in range(3 * n)) for _ in range(n))
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", n, n, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw, 1)) + chunk(b"IEND", b"")
(out / "one" / "img0.png").write_bytes(png)
for i in range(6): (out / "six" / f"img{i}.png").write_bytes(png)
EOF
  infer_ckpt=""
  # A checkpoint of the preset's restorer: one training step writes one.
  "$DAA" --device "$DEV" train --preset "$([ $DRY = 1 ] && echo denoise || echo denoise-paper)" --steps 1 --seed 0 \
    --run-dir "$OUT/infer-ckpt" > "$OUT/infer-ckpt.log" 2>&1 && infer_ckpt=$(ls "$OUT"/infer-ckpt/restorer-*.safetensors 2>/dev/null | head -1)
  if [ -n "$infer_ckpt" ]; then
    t0=$(date +%s.%N)
    "$DAA" --device "$DEV" restore -i "$OUT/infer/one" -o "$OUT/infer/out1" --checkpoint "$infer_ckpt" > "$OUT/infer-1.log" 2>&1 || fail "daa restore"
    t1=$(date +%s.%N)
    peak_run "$OUT/infer-6.log" "$DAA" --device "$DEV" restore -i "$OUT/infer/six" -o "$OUT/infer/out6" --checkpoint "$infer_ckpt" || fail "daa restore"
    t2=$(date +%s.%N)
    python3 -c "import json; a, b, c = $t0, $t1, $t2; print(json.dumps({'impl': 'daa', 'method': 'infer', 'precision': 'tf32', 'note': 'daa restore, PNG I/O included', 'median_ms': round(((c - b) - (b - a)) / 5 * 1e3, 1)}))" >> "$OUT/bench-daa-tf32-infer.log"
    grep -h '"peak_smi_gib"' "$OUT/infer-6.log" >> "$OUT/bench-daa-tf32-infer.log" || true
  else
    fail "no restorer checkpoint for the inference timing; log: $OUT/infer-ckpt.log"
  fi
fi
if [ $HAVE_TORCH = 1 ]; then
  for prec in tf32 f32 bf16; do
    for method in vanilla da; do
      peak_run "$OUT/bench-torch-$prec-$method.log" python3 "$TORCH_BENCH" --device "$PYDEV" --preset "$PRESET" \
        --methods "$method" --precision "$prec" --steps "$BENCH_STEPS" --warmup "$WARMUP" \
        || fail "bench_torch $prec $method; log: $OUT/bench-torch-$prec-$method.log"
    done
  done
  peak_run "$OUT/bench-torch-tf32-infer.log" python3 "$TORCH_BENCH" --device "$PYDEV" --preset "$PRESET" \
    --methods "" --infer "$INFER" --precision tf32 --steps "$BENCH_STEPS" --warmup "$WARMUP" || fail "bench_torch infer"
fi
fi

if want 5; then
echo "== 5. $STEPS steps of $TRAIN_PRESET training on $DEV (loss must fall, no non-finite step)"
"$DAA" train --preset "$TRAIN_PRESET" --print-config > "$OUT/train-config.json" 2> "$OUT/train-config.log" || fail "print-config"
python3 - "$OUT/train-config.json" "$STEPS" "$TRAIN_PATCH" "$TRAIN_BATCH" <<'EOF' || fail "editing the training config"
import json, sys
p, steps, patch, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
c = json.load(open(p))
c.update(steps=steps, log_every=1, checkpoint_every=steps, patch_size=patch, batch_size=batch)
for k in ("eval_every",):
    if k in c: c[k] = steps
json.dump(c, open(p, "w"), indent=1)
EOF
t0=$(date +%s)
peak_run "$OUT/train.log" "$DAA" --device "$DEV" train --config "$OUT/train-config.json" --run-dir "$OUT/train" \
  || fail "training; log: $OUT/train.log"
echo "training took $(( $(date +%s) - t0 )) s"
python3 - "$OUT/train/metrics.jsonl" "$OUT/train.log" "$STEPS" <<'EOF' || fail "training: the loss did not fall, or a step was not finite"
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss_total"' in l]
skipped = open(sys.argv[2], errors="replace").read().count("step skipped")
steps = int(sys.argv[3])
assert len(rows) == steps, f"{len(rows)} logged steps of {steps}"
bad = [r["step"] for r in rows if not all(math.isfinite(v) for k, v in r.items() if k.startswith("loss_"))]
k = max(1, steps // 5)
first = sum(r["loss_rec"] for r in rows[:k]) / k
last = sum(r["loss_rec"] for r in rows[-k:]) / k
sps = [r["sec_per_step"] for r in rows[k:]]
print(f"loss_rec: mean of the first {k} steps {first:.4f}, of the last {k} {last:.4f}; "
      f"non-finite steps {len(bad)}, skipped {skipped}; median {sorted(sps)[len(sps) // 2] * 1e3:.0f} ms/step")
assert not bad and skipped == 0, f"non-finite steps {bad[:5]}, skipped {skipped}"
assert last < first, "the loss did not fall"
EOF
fi

echo "== table"
python3 - "$OUT" <<'EOF'
import glob, json, os, sys
out = sys.argv[1]
res = {}
for f in sorted(glob.glob(os.path.join(out, "bench-*.log"))):
    impl = "daa" if "bench-daa" in f else "pytorch"
    rec, peak = None, None
    for l in open(f, errors="replace"):
        if l.startswith("{"):
            try: j = json.loads(l)
            except ValueError: continue
            if "median_ms" in j: rec = j
            if "peak_smi_gib" in j: peak = j["peak_smi_gib"]
    if rec:
        key = (rec.get("method"), rec.get("precision", "tf32"))
        res.setdefault(key, {})[impl] = (rec["median_ms"], peak, rec.get("peak_gib"))
names = {"tf32": "f32, TF32 convs", "f32": "f32 strict", "bf16": "bf16"}
print("| step | daa ms | PyTorch ms | daa / PyTorch | daa peak GiB | PyTorch peak GiB (smi / allocated) |")
print("|---|---|---|---|---|---|")
for method in ("da", "vanilla", "infer"):
    for prec in ("tf32", "f32", "bf16"):
        r = res.get((method, prec))
        if not r: continue
        d, t = r.get("daa"), r.get("pytorch")
        ratio = f"{d[0] / t[0]:.2f}" if d and t and t[0] else "-"
        fmt = lambda v: "-" if v is None else f"{v}"
        print(f"| {method} {names[prec]} | {fmt(d and d[0])} | {fmt(t and t[0])} | {ratio} | {fmt(d and d[1])} | {fmt(t and t[1])} / {fmt(t and t[2])} |")
EOF
# Keep the logs, metrics and configs; drop checkpoints and images (hundreds of MB at paper size).
if [ "${KEEP_CHECKPOINTS:-0}" != 1 ]; then
  find "$OUT" \( -name '*.safetensors' -o -name '*.png' \) -delete 2>/dev/null
fi
echo "== done in $(( $(date +%s) - t_start )) s; results in $OUT"
[ $status = 0 ] && echo "ALL PASSED" || echo "SOME PARTS FAILED"
exit $status
