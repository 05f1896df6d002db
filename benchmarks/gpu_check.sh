#!/usr/bin/env bash
# The one prepared run for a lent GPU machine (its time is short and counts
# from its start): builds bagua_ravnest from source against that machine's
# torch, runs the GPU tests, then the GPU benchmark, and prints one summary.
# Meant to fit 8 minutes on an H100/H200 with 16 cores (each step has a
# timeout; not yet timed on a GPU). Results go to $OUT (the device tool's
# folder that comes back) or out/gpu.
#
#   bash benchmarks/gpu_check.sh            # everything
#   GPU_CHECK_PARTS=tests bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu}
PARTS=${GPU_CHECK_PARTS:-build tests bench}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
summary=()
note() { summary+=("$1"); echo "== $1"; }
has() { [[ " $PARTS " == *" $1 "* ]]; }

python3 - <<'PY' | tee "$OUT/machine.txt"
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "devices", torch.cuda.device_count())
for i in range(torch.cuda.device_count()):
    print(" ", i, torch.cuda.get_device_name(i))
PY

if has build; then
  start=$SECONDS
  gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
  tests=OFF; [ -f /usr/include/gtest/gtest.h ] && tests=ON
  # CMake directly: the machine has no registry for pip to reach.
  if cmake -S . -B build/gpu "${gen[@]}" -DBAGUA_CUDA=ON -DBAGUA_BUILD_TESTS=$tests \
       -DBAGUA_EXT_OUTPUT_DIR="$PWD/bagua_ravnest" -DPython3_EXECUTABLE="$(command -v python3)" \
       > "$OUT/configure.log" 2>&1 && cmake --build build/gpu -j "$(nproc)" > "$OUT/build.log" 2>&1; then
    note "build: ok in $((SECONDS - start)) s (GoogleTest $tests)"
  else
    note "build: FAILED (see configure.log, build.log)"; tail -30 "$OUT/configure.log" "$OUT/build.log"
    printf '%s\n' "${summary[@]}" > "$OUT/summary.txt"; exit 1
  fi
  if [ "$tests" = ON ]; then
    build/gpu/bagua_cpp_tests --gtest_brief=1 --gtest_filter='Cuda*:EngineStaging*:ThreadedStage*:CudaStage*' \
      > "$OUT/gtest.log" 2>&1 && note "gtest (CUDA, staging): $(grep -E 'PASSED|FAILED' "$OUT/gtest.log" | tr '\n' ' ')" \
      || note "gtest: FAILED $(grep -E 'FAILED' "$OUT/gtest.log" | head -5 | tr '\n' ' ')"
  fi
fi

if has tests; then
  start=$SECONDS
  timeout 300 python3 -m pytest tests/python/test_cuda_models.py tests/python/test_cuda_backend.py \
    tests/python/test_staging.py -q -ra > "$OUT/pytest.log" 2>&1
  note "pytest (GPU): $(tail -1 "$OUT/pytest.log") in $((SECONDS - start)) s"
fi

if has bench; then
  # charlm with a batch that makes a step GPU work; every row on cuda:0.
  common=(--model charlm --device cuda --batch-size 128 --steps 40 --warmup-steps 5 --eval-every 20 --rounds 2
          --threads 2 --quiet)
  start=$SECONDS
  timeout 150 python3 benchmarks/train.py --world-size 1 --algorithms ddp_nccl,ddp,gradient_allreduce,bytegrad \
    "${common[@]}" --json "$OUT/world1.json" > "$OUT/world1.log" 2>&1
  note "bench world 1 (rc $?, $((SECONDS - start)) s): $(grep -E '^(ddp|gradient|bytegrad)' "$OUT/world1.log" | tr -s ' ' | tr '\n' ';')"
  start=$SECONDS
  timeout 200 python3 benchmarks/train.py --world-size 2 \
    --algorithms ddp,gradient_allreduce,bytegrad,fp16_allreduce,ddp_fp16 "${common[@]}" \
    --json "$OUT/world2.json" > "$OUT/world2.log" 2>&1
  note "bench world 2, one GPU (rc $?, $((SECONDS - start)) s): $(grep -E '^(ddp|gradient|bytegrad|fp16)' "$OUT/world2.log" | tr -s ' ' | tr '\n' ';')"
  if [ "$(id -u)" = 0 ] && command -v tc >/dev/null; then
    start=$SECONDS
    timeout 200 python3 benchmarks/train.py --world-size 2 --bandwidth-mbit 100 \
      --algorithms ddp,gradient_allreduce,bytegrad "${common[@]}" --json "$OUT/world2_100mbit.json" \
      > "$OUT/world2_100mbit.log" 2>&1
    note "bench world 2 at 100 Mbit/s (rc $?, $((SECONDS - start)) s): $(grep -E '^(ddp|gradient|bytegrad)' "$OUT/world2_100mbit.log" | tr -s ' ' | tr '\n' ';')"
  else
    note "bench at 100 Mbit/s: skipped (needs root and tc)"
  fi
fi

echo; echo "== summary"; printf '%s\n' "${summary[@]}" | tee "$OUT/summary.txt"
